"""``Redialer``: a client connection's reconnect policy, kept outside the connection.

When an attachment of a client with ``reconnect=links.Backoff(...)`` is lost, the connection
hands the matter to its redialer: it waits the backoff's delay on the timer, then makes one
``Attempt``, which runs wholly on the poll thread and never waits: a nonblocking connect,
watched for writability; the handshakes started (a session's HELLO, the protocol's
``on_connect``) and advanced by what the peer answers; then the new attachment is published
on the connection, or the next attempt is scheduled. No thread is made for an attempt, and a
slow or silent server costs nobody else anything. The schedule starts over once a connection
stayed up for the backoff's ``reset_after`` (on the timer's clock, so a ``FakeClock`` drives
it); the whole of one attempt is bounded by the connection's ``handshake_timeout``.

It gives up (closing the connection with ``BrokenError("reconnect_gave_up")``) when the
backoff says so, and at once when the peer says the session is gone (``SessionLost``) or a
protocol hook failed in the handshake (retrying would repeat it).
"""

from __future__ import annotations

import random
import socket
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ._core._backoff import Backoff
from ._core._status import NEED_DATA, TaskStatus
from ._errors import BrokenError, LinksError, SessionLost
from ._sockets import connect_error
from ._state import ENDING

if TYPE_CHECKING:
    from ._attachment import Attachment
    from ._connection import Connection
    from ._poll import PollHandler

__all__ = ["Redialer", "Attempt"]

#: A deadline already passed: ``Attachment.receive`` then only looks, never waits.
_NOW = 0.0


class Redialer:
    """Redials ``connection`` on ``backoff``'s schedule; ``dial()`` starts a nonblocking connect."""

    def __init__(self, connection: Connection, backoff: Backoff, dial: Callable[[], socket.socket]) -> None:
        self.connection = connection
        self.backoff = backoff
        self.dial = dial
        # A layer with a handshake of its own under the connection (TLS): makes its
        # transport over a connected socket (``links._tls``), or None.
        self.secure: Callable[[socket.socket], Any] | None = None
        self.attempts = 0  # since the last connection that stayed up
        self.attached_at = 0.0  # when the connection last came up (timer clock; Connection.publish)
        self._rng = random.Random()

    def schedule(self) -> None:
        """The current attachment was lost: plan the next attempt (or give up)."""
        con, backoff = self.connection, self.backoff
        now = con.clock()
        if now - self.attached_at >= backoff.reset_after:
            self.attempts = 0  # it stayed up long enough: start the schedule over
        self.attempts += 1
        attempt = self.attempts
        if backoff.gives_up(attempt):
            con.close("reconnect_gave_up", BrokenError(f"{con.con_id}: gave up after {attempt - 1} attempts", "reconnect_gave_up"))
            return
        delay = backoff.delay(attempt, self._rng)
        con.log.info("clt.reconnecting", attempt=attempt, delay=round(delay, 6), at=now)

        def start() -> TaskStatus:
            if not con.closed:
                self._start(attempt)
            return TaskStatus.TERMINATE

        try:
            con.timer.schedule(f"reconnect {con.con_id}", delay, start)
        except RuntimeError:  # the timer was shut down (interpreter exit, a test's teardown)
            con.close("timer_shutdown", BrokenError(f"{con.con_id}: timer shut down while reconnecting", "timer_shutdown"))

    def _start(self, number: int) -> None:
        """Timer thread: start one attempt (a connect under way, never waited for)."""
        try:
            sock = self.dial()
            poll = self.connection._poll()
        except (OSError, RuntimeError) as e:
            self.failed(number, str(e))
            return
        Attempt(self, number, sock, poll).start()

    def failed(self, number: int, error: str) -> None:
        self.connection.log.info("clt.reconnect_failed", attempt=number, error=error)
        if not self.connection.closed:
            self.schedule()


class Attempt:
    """One redial, on the poll thread from connect to publish: the poll handler of its socket
    (a ``Pollable``) until the new attachment is the connection's."""

    poll_kind = "redial"

    def __init__(self, redialer: Redialer, number: int, sock: socket.socket, poll: PollHandler) -> None:
        self.redialer = redialer
        self.connection = redialer.connection
        self.con_id = self.connection.con_id
        self.number = number
        self.sock = sock
        self.poll = poll
        self.att: Attachment | None = None
        self.tls: Any = None  # the TLS transport while its handshake runs (``Redialer.secure``)
        self.reading = False  # registered for reading
        self.closed = False  # done, one way or the other
        self._fd = sock.fileno()
        self._deadline: Any = None

    def fileno(self) -> int:
        return self._fd

    def start(self) -> None:
        """Any thread: watch the connect, and bound the whole attempt."""
        con, poll = self.connection, self.poll

        def expire() -> TaskStatus:
            try:
                poll.call_soon(lambda: self._fail(TimeoutError(f"{con.con_id}: no connection within {con.handshake_timeout}s")))
            except RuntimeError:  # the poll handler shut down: the attempt went with it
                pass
            return TaskStatus.TERMINATE

        self._deadline = con.timer.schedule(f"redial {con.con_id}", con.handshake_timeout, expire)
        try:
            poll.want_writable(self)
        except RuntimeError as e:
            self._deadline.cancel()
            self.sock.close()
            self.redialer.failed(self.number, str(e))

    # -- the poll thread --------------------------------------------------------------------

    def on_writable(self) -> bool:
        if self.closed:
            return False
        att = self.att
        if att is None:  # the connect's outcome
            self._connected()
            return self.att is not None and not self.closed and bool(self.att.outbound.backlog)  # keep while owing
        return self._write(att)

    def on_readable(self) -> bool:
        att = self.att
        if self.tls is not None and att is None and not self.closed:
            self._tls_step()
            return True
        if self.closed or att is None:
            return True
        con = self.connection
        try:
            while not self._done():
                msg = att.receive(_NOW, until=self._done)  # never waits: the deadline is past
                if msg is None:
                    return True  # nothing more for now
                if msg is not NEED_DATA and not con.spawned:  # kept for recv, as a waiting handshake keeps them
                    con.keep(msg)
        except Exception as e:  # noqa: BLE001 - every way out of a handshake is this attempt's failure
            self._fail(e)
            return True
        self._finish()
        return True

    def on_poll_failure(self, error: BaseException | None) -> None:
        self._fail(error if error is not None else RuntimeError("poll handler shut down"))

    # -- steps ------------------------------------------------------------------------------

    def _connected(self) -> None:
        error = connect_error(self.sock)
        if error is not None:
            self._fail(error)
            return
        secure = self.redialer.secure
        if secure is not None:  # TLS first: its handshake, then the connection's
            self.tls = secure(self.sock)
            self._read()
            if not self.closed and self.att is None:
                self._tls_step()  # the ClientHello goes out now
            return
        self._open(self.sock)

    def _tls_step(self) -> None:
        try:
            done = self.tls.handshake_step()
        except LinksError as e:
            self._fail(e)
            return
        if done:
            self._open(self.tls)

    def _open(self, stream: Any) -> None:
        con = self.connection
        try:
            self.att = con.open(stream, _NOW, wait=False, via=self)
        except Exception as e:  # noqa: BLE001 - open discarded the socket already
            self.sock = None  # type: ignore[assignment]
            self._fail(e)
            return
        if self.closed:  # failed inside open (its HELLO could not go out)
            return
        self._read()  # what the peer answers
        if self._done():
            self._finish()

    def _read(self) -> None:
        if not self.reading:
            self.reading = True
            self.poll.add(self)  # inline here, on the poll thread (a first look included)

    def _write(self, att: Attachment) -> bool:
        out = att.outbound
        with out.lock:
            try:
                return out.on_writable()
            except LinksError as e:
                error = e
        self._fail(error)
        return False

    def _done(self) -> bool:
        att, session = self.att, self.connection.session
        if att is None or att.closed:
            return False
        return (session is None or session.welcomed()) and att.protocol.is_connected()

    def _finish(self) -> None:
        """The handshakes are done: the attachment becomes the connection's."""
        if self.closed:
            return
        self.closed = True
        self._deadline.cancel()
        att, con = self.att, self.connection
        assert att is not None
        self.poll.remove(self, "handshake_done")  # inline: the fd is free for the attachment's own handler
        att.hand_back()
        try:
            con.publish(att, con.session.replay_frames if con.session is not None else None)
        except LinksError as e:  # the new connection broke while the replay was written to it
            self.redialer.failed(self.number, str(e))
            return
        if con.state in ENDING and att.closed:
            return  # closed for good during the attempt: publish discarded the new connection
        con.log.info("clt.reconnected", attempt=self.number, local=str(att.con_id.local), at=con.clock())

    def _fail(self, error: BaseException) -> None:
        if self.closed:
            return
        self.closed = True
        if self._deadline is not None:
            self._deadline.cancel()
        con, att = self.connection, self.att
        sock, self.sock = self.sock, None
        # Unregistered first (inline: this is the poll thread), so the fd is closed after.
        self.poll.remove(self, "redial_failed", then=sock.close if att is None and sock is not None else None)
        if att is not None:
            con.abandon(att)  # ends it, closing its socket
        if isinstance(error, SessionLost):
            con.close("session_lost", error)  # every later call raises it: the session is gone
        elif isinstance(error, (LinksError, OSError, TimeoutError)):
            self.redialer.failed(self.number, str(error))
        else:  # a protocol hook failed in the handshake: retrying would repeat it
            con.log.error("clt.reconnect_failed", attempt=self.number, error=repr(error))
            con.close("reconnect_failed", BrokenError(f"{con.con_id}: handshake failed: {error!r}", "reconnect_failed"))
