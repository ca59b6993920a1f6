"""``Connection``: one logical connection, carried by one ``Attachment`` (TCP connection) at a time.

The engine's pieces, one module each: ``links._attachment`` (one socket's state and its poll
handler), ``links._sending`` (the outbound path, a part of this class), ``links._outbound``
(what one socket is owed), ``links._liveness`` (heartbeat, idle and stall checks),
``links._redial`` (the reconnect policy), ``links._state`` (the states and their table).
This module keeps what ties them: opening, publishing, spawning, losing and closing.

Why two objects
    A user holds a ``Clt`` (or its halves, or refs to them) as long as they like; with
    ``reconnect=`` or ``session=`` the TCP connection underneath may be replaced many times
    meanwhile. So the handles point at a ``Connection`` (the logical one, which ends only
    when closed for good), which points at its current ``Attachment`` (one socket, its
    receive buffer and, without a session, its protocol instance). Plain: one attachment.

Who runs what
    * A user thread calls ``send`` / ``recv`` on the handles; they use the current attachment
      and wait on ``Connection.changed`` (a condition) while there is none.
    * The poll thread reads spawned attachments (``AttachmentReader``) and finishes what any
      attachment owes its socket; it never waits on a socket.
    * The timer thread runs heartbeats, idle and stall checks per attachment, and schedules
      reconnect attempts (``Redialer``); each attempt then runs on the poll thread, a
      nonblocking connect and handshake that never waits, so no thread is made for it.

Protocol instances and hooks
    Without a session, every attachment gets a fresh protocol from the factory, and its hooks
    (``on_connect`` on the way up, so logins are redone after a reconnect; ``on_disconnect``
    on the way down) run per attachment. With a session the application sees one unbroken
    stream, so one protocol instance serves the whole logical connection: ``on_connect`` once
    at the start, ``on_disconnect`` once at the end. The ``con`` handed to hooks is the
    ``Attachment`` the protocol instance belongs to (plain) or the logical connection's
    sender (session): either way it has ``send``, ``send_many``, ``close``, ``con_id``,
    ``timer`` and ``is_connected``.

Ending an attachment (``Connection.lost``), each step once per attachment
    mark it closed → cancel its timer tasks → ``shutdown()`` its socket (the peer sees FIN,
    waiters wake) → ``on_disconnect`` (plain) → release its gate permit → log
    ``clt.disconnected`` → release the fd (after unregistering it from the poll thread, so
    the kernel cannot reuse the number under a selector that maps it) → then, if not closed
    for good: redial (client with ``reconnect``), wait detached for a resume (server
    session), or close. An orderly close of an attachment that still owes bytes lingers
    instead: reads stop; the poll thread writes what is owed (``stall_timeout`` bounds it).

Closing for good (``Connection.close``), once, from any thread
    ``Protocol.on_close(con)`` while the socket still works (a local close only: it is how a
    protocol sends its logout) → a session's BYE, owed after every frame numbered → mark
    closed and wake every waiter → end the attachment as above → ``on_disconnect``
    (session) → listeners (a service pool drops it) → forget the session.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ._attachment import Attachment
from ._callbacks import Callback
from ._clock import time_left
from ._core._backoff import Backoff
from ._core._conid import ConId, Role
from ._core._link import Link
from ._core._protocol import Protocol
from ._core._status import NEED_DATA
from ._errors import BrokenError, ClosedError, LinksError, raised_again
from ._gate import Permit
from . import _liveness as liveness
from ._condition import LazyCondition
from ._log import Logger, get_logger
from ._outbound import DEFAULT_MAX_OUTBOUND, DEFAULT_STALL_TIMEOUT, check_limits
from ._reader import AttachmentReader
from ._redial import Redialer
from ._sending import LOCK_WAIT, Sending
from ._state import ENDING, TRANSITIONS, ConnState
from ._timer import Timer, TimerHandle

if TYPE_CHECKING:
    import socket
    from ._poll import PollHandler

__all__ = ["Connection", "Attachment", "AttachmentReader", "ConnState"]

_CLOSED = ConnState.CLOSED
_CONNECTED = ConnState.CONNECTED


class Connection(Sending):
    """A logical connection: the handles' view, across any number of attachments."""

    # Slots, and what an idle one never uses made on first use (links.mux: thousands idle at once).
    __slots__ = ("con_id", "protocol_factory", "callback", "timer", "_poll", "session", "reconnect", "_redialer",
                 "handshake_timeout", "idle_timeout", "stall_timeout", "max_outbound", "clock", "write_lock", "changed",
                 "state", "attachment", "pending", "spawned", "sender", "_fast_path", "_error", "_closed_here",
                 "_listeners", "_tasks", "_protocol", "_handshaking", "__weakref__")  # fmt: skip

    def __init__(
        self, role: Role, name: str, *, protocol_factory: Callable[[], Protocol], callback: Callback, timer: Timer,
        poll: Callable[[], PollHandler], session: Any = None, reconnect: Backoff | None = None,
        redial: Callable[[], socket.socket] | None = None, handshake_timeout: float = 5.0,
        idle_timeout: float | None = None, stall_timeout: float = DEFAULT_STALL_TIMEOUT, max_outbound: int = DEFAULT_MAX_OUTBOUND,
    ) -> None:  # fmt: skip
        if idle_timeout is not None and not idle_timeout > 0:  # refused before any socket opens
            raise ValueError(f"idle_timeout must be a positive number of seconds, not {idle_timeout!r}")
        check_limits(stall_timeout, max_outbound)
        self.con_id = ConId(role, name)  # its role and name are the connection's
        self.protocol_factory = protocol_factory
        self.callback = callback
        self.timer = timer
        self._poll = poll
        self.session = session
        self.reconnect = reconnect
        # The reconnect policy, outside the connection: it redials when an attachment is lost.
        self._redialer = Redialer(self, reconnect, redial) if reconnect is not None and redial is not None else None
        self.handshake_timeout = handshake_timeout
        self.idle_timeout = idle_timeout
        self.stall_timeout = stall_timeout
        self.max_outbound = max_outbound
        self.clock = timer._monotonic  # every time in the engine: fake in tests
        self.write_lock = threading.Lock()
        self.changed = LazyCondition()  # attach, detach, close, session space
        self.state = ConnState.OPENING
        self.attachment: Attachment | None = None
        self.pending: deque[Any] | tuple[()] = ()  # see keep()
        self.spawned = False
        self.sender: Any = None  # the CltSender facade (hook handle in session mode)
        self._fast_path = session is None
        self._error: LinksError | None = None
        self._closed_here = False  # close() was called, maybe after the peer ended it
        self._listeners: Any = ()  # none, one listener, or a tuple of them: see add_listener
        self._tasks: tuple[TimerHandle, ...] = ()  # schedule()d for the whole logical connection
        self._protocol: Protocol | None = None  # session mode: the one protocol instance
        self._spare_link: Link | None = None
        self._handshaking: Attachment | None = None  # a session client's attachment in HANDSHAKING

    def __repr__(self) -> str:
        return f"Connection({self.con_id}, {self.state.value})"

    # Read off ``con_id``; the logger made per use (a few events per life: kept, it costs 0.4 KB).
    role: Role = property(lambda self: self.con_id.role)  # type: ignore[assignment]
    name: str = property(lambda self: self.con_id.name)  # type: ignore[assignment]
    log: Logger = property(lambda self: get_logger("clt", con_id=str(self.con_id)))  # type: ignore[assignment]

    # -- state ------------------------------------------------------------------------------

    @property
    def closed(self) -> bool:
        return self.state is ConnState.CLOSED

    def _move(self, state: ConnState) -> None:
        """Enter ``state`` (``changed`` held), as ``links._state.TRANSITIONS`` allows."""
        if state is not self.state and state not in TRANSITIONS[self.state]:
            raise RuntimeError(f"{self.con_id}: no transition from {self.state.value} to {state.value}")
        self.state = state

    def is_connected(self) -> bool:
        att = self.attachment
        return att is not None and not att.closed and att.protocol.is_connected()

    def error(self) -> LinksError:
        """What an operation on the closed connection raises (fresh each time)."""
        return raised_again(self._error, self._closed_here, f"{self.con_id} is closed")

    def schedule(self, name: str, interval: float, task: Callable[[], Any], *, delay: float | None = None) -> TimerHandle:
        """Schedule ``task`` on the timer, cancelled when the connection is closed for good."""
        handle = self.timer.schedule(name, interval, task, delay=delay)
        with self.changed:
            if not self.closed:
                self._tasks += (handle,)
                return handle
        handle.cancel()
        return handle

    def hook_handle(self, att: Attachment) -> Any:
        return self.sender if self.session is not None else att

    def add_listener(self, fn: Callable[[Connection], None]) -> None:
        """Call ``fn(self)`` once the connection is closed for good (at once if it is)."""
        with self.changed:
            if not self.closed:
                held = self._listeners  # kept bare when alone (most have one; a tuple costs 48 B more)
                self._listeners = fn if not held else (*held, fn) if isinstance(held, tuple) else (held, fn)
                return
        fn(self)

    def wait_attached(self, deadline: float | None) -> Attachment | None:
        """The current attachment, waiting for one until ``deadline``; None on timeout.

        Raises: ClosedError, BrokenError: the connection is closed for good."""
        att = self.attachment
        if att is not None and self.state is _CONNECTED:
            # The common case, without the lock: publish() sets both together, and a close
            # that lands just after this look is one that lands just after the locked look.
            return att
        with self.changed:
            while True:
                if self.closed:
                    raise self.error()
                att = self.attachment
                if att is not None:
                    return att
                left = time_left(deadline)
                if left == 0.0:
                    return None
                self.changed.wait(left)

    # -- opening ----------------------------------------------------------------------------

    def open(
        self, sock: socket.socket, deadline: float, permit: Permit | None = None, *, wait: bool = True, via: Any = None
    ) -> Attachment:
        """Build an attachment on ``sock`` and run its handshakes (on the calling thread).

        With ``wait`` False (an accepted connection, or a redial, on the poll thread) the
        handshakes are only started (a session client's HELLO, the protocol's ``on_connect``):
        what the peer answers advances them later, never a wait here. ``via`` is then the poll
        handler serving the attachment until its handshake is done (``links._redial``).

        Raises:
            ConnectTimeout-worthy ``TimeoutError`` when the handshake misses ``deadline``;
            ``SessionLost``; whatever a protocol hook raised. The socket is closed on failure.
        """
        first = self._protocol is None
        if self.session is not None:
            protocol = self._protocol if self._protocol is not None else self.protocol_factory()
            self._protocol = protocol
        else:
            protocol = self.protocol_factory()
        att = Attachment(self, sock, protocol, permit)
        if via is not None:
            att.handler = via
        self._begin_handshake(att, permit)
        if self.con_id.local is None:
            self.con_id = att.con_id
        try:
            if self.session is not None and self.role is Role.INITIATOR:
                if wait:
                    self.session.client_handshake(att, deadline)
                else:
                    self.session.send_hello(att)
            if self.session is None or first:
                if self.session is not None and wait:
                    # The protocol's own handshake (a login) goes through the session sender;
                    # it must reach the peer now, not at publish, or we would wait forever.
                    self._handshaking = att
                protocol.on_connect(self.hook_handle(att))
                if wait:
                    self._drive(att, lambda: protocol.is_connected(), deadline)
        except BaseException:
            self.abandon(att)
            raise
        finally:
            self._handshaking = None
        return att

    def _begin_handshake(self, att: Attachment, permit: Permit | None) -> None:
        """Move to HANDSHAKING with ``att``, or refuse it (socket and permit released) when
        the connection is closing: a resume or redial that arrives too late."""
        with self.changed:
            if self.state not in ENDING:
                self._move(ConnState.HANDSHAKING)
                return
        att.transport.close()
        if permit is not None:
            permit.release()
        raise ClosedError(f"{self.con_id} is closed")

    def abandon(self, att: Attachment, reason: str = "handshake_failed") -> None:
        """A handshake that will not finish: end ``att``; the connection is detached again."""
        self._discard(att, reason)
        with self.changed:
            if self.state is ConnState.HANDSHAKING:
                self._move(ConnState.DETACHED)

    def _drive(self, att: Attachment, done: Callable[[], bool], deadline: float) -> None:
        """Receive on this thread until ``done()``; keep the messages for ``recv``."""
        while not done():
            msg = att.receive(deadline, until=done)
            if msg is None:
                raise TimeoutError(f"{att.con_id}: handshake did not complete in time")
            if msg is not NEED_DATA and not self.spawned:  # spawned: its callback saw it; nobody calls recv
                self.keep(msg)

    def keep(self, msg: Any) -> None:
        """Keep ``msg``, dispatched during a handshake, for ``recv`` (``pending`` made for the first)."""
        if isinstance(self.pending, tuple):
            self.pending = deque()
        self.pending.append(msg)

    def publish(self, att: Attachment, replay: Callable[[], bytes] | None = None) -> None:
        """Make ``att`` the current attachment: write ``replay()`` first, then let senders in.

        ``replay`` runs under the write lock, so no sender can number a frame between the
        moment the replay is computed and the moment new frames go to ``att``.
        """
        self.write_lock.acquire()
        try:
            if replay is not None:
                try:
                    att.outbound.owe(replay())  # what the socket does not take now is owed
                except LinksError:
                    self.abandon(att, "replay_failed")
                    if self.session is not None and self.state is ConnState.DETACHED:
                        self.session.detached(self)  # so it resumes again, or expires
                    raise
            with self.changed:
                if self.state in ENDING:
                    closed = True
                else:
                    closed = False
                    self.attachment = att
                    self._move(_CONNECTED)
                    if self._redialer is not None:  # when it came up: the backoff starts over after long enough
                        self._redialer.attached_at = self.clock()
                    self.changed.notify_all()
        finally:
            self._unlock(att)
        if closed:
            self._discard(att, "closed")
            return
        self._start_tasks(att)
        if self.spawned:
            self._spawn(att)

    def spawn(self) -> None:
        """From now on every attachment is read by the poll thread (and only the callback
        sees messages: the ones kept from a handshake were dispatched to it already)."""
        with self.changed:
            self.spawned = True
            self.pending = ()
            att = self.attachment
        if att is not None:
            self._spawn(att)

    def _spawn(self, att: Attachment) -> None:
        poll = self._poll()
        with self.changed:
            if att.closed or att.reading:  # spawn() and publish() may both get here
                return
            att.reading = True
            att.poll = poll
        poll.add(att.handler)

    def _start_tasks(self, att: Attachment) -> None:
        att.keep_tasks(liveness.start(self, att))

    # -- ending -----------------------------------------------------------------------------

    def lost(self, att: Attachment, reason: str, error: LinksError | None) -> None:
        """``att`` ended (peer, network, hostile input, idle). Idempotent per attachment.

        It may be called with ``write_lock`` held (a failed write), so neither it nor what it
        calls takes that lock: a close caused by an error sends no goodbye.
        """
        with self.changed:
            if att.closed:
                return
            att.closed = True
            current = self.attachment is att
            if current:
                self.attachment = None
                if self.state not in ENDING:
                    self._move(ConnState.DETACHED)
            self.changed.notify_all()
        self._end(att, reason, error)
        if not current or self.state in ENDING:
            return
        if self.session is not None:
            self.session.detached(self)
        if self._redialer is not None:
            self._redialer.schedule()
        elif self.session is None or self.role is Role.INITIATOR:
            self.close(reason, error if isinstance(error, BrokenError) else BrokenError(f"{self.con_id}: {reason}", reason))

    def _discard(self, att: Attachment, reason: str) -> None:
        with self.changed:
            if att.closed:
                return
            att.closed = True
        self._end(att, reason, None, quiet=True)

    def _end(self, att: Attachment, reason: str, error: LinksError | None, quiet: bool = False, linger: bool = False) -> None:
        # An orderly local close lingers to deliver what senders were told was COMPLETED.
        att.end(reason, error, quiet=quiet, linger=(linger or error is None) and not quiet and self.state is _CLOSED)

    def close(self, reason: str = "closed", error: LinksError | None = None, *, orderly: bool = False) -> bool:
        """Close for good (idempotent). True for the call that actually closed it. A close
        without ``error`` (a local one: ``on_close`` runs), or ``orderly`` (the peer's goodbye),
        says goodbye too (a session's BYE) and lingers to deliver what is owed."""
        orderly = orderly or error is None
        with self.changed:
            self._closed_here = self._closed_here or error is None
            if self.state in ENDING:
                return False
            self._move(ConnState.CLOSING)
            self._fast_path = False  # from now on every send checks the state (_sending)
            att = self.attachment
        if error is None and att is not None and not att.closed:
            try:
                att.protocol.on_close(self.hook_handle(att))
            except Exception as e:
                self.log.warning("clt.on_close_failed", error=repr(e))
        att, listeners = self._claim_for_close(orderly, error)
        if att is not None:
            self._end(att, reason, error, linger=orderly)
        elif self.session is not None or self.reconnect is not None:
            self.log.info("clt.disconnected", reason=reason, **({"error": str(error)} if error else {}))
        self._closed_for_good(listeners)
        return True

    def _claim_for_close(self, orderly: bool, error: LinksError | None) -> tuple[Attachment | None, Any]:
        """Mark the connection closed; the attachment to end (None: none, or lost() has it)
        and the listeners to call. Under the write lock when it can be had soon: no sender
        is then halfway through handing a frame over, so what ``_end`` sees owed is all, and
        a session's BYE goes after every frame numbered."""
        # Only an orderly close needs it (whether to linger); one caused by an error may come
        # from a thread that holds the lock itself (a failed write), which must not wait.
        locked = orderly and self.write_lock.acquire(timeout=LOCK_WAIT)
        try:
            if locked and self.session is not None and self.attachment is not None:
                self.session.say_goodbye(self.attachment)
            with self.changed:
                self._move(_CLOSED)
                self._error = error
                att, self.attachment = self.attachment, None
                # Claimed under the lock, as lost() claims it: only one of them may end it.
                if att is not None and att.closed:
                    att = None
                if att is not None:
                    att.closed = True
                listeners, self._listeners = self._listeners, ()
                tasks, self._tasks = self._tasks, ()
                self.changed.notify_all()
        finally:
            if locked:
                self.write_lock.release()
        for task in tasks:
            task.cancel()
        return att, listeners

    def _closed_for_good(self, listeners: Any) -> None:
        if self.session is not None and self._protocol is not None:
            try:
                self._protocol.on_disconnect(self.con_id)
            except Exception as e:
                self.log.error("clt.on_disconnect_failed", error=repr(e))
        for fn in listeners if isinstance(listeners, tuple) else (listeners,):
            fn(self)
        if self.session is not None:
            self.session.closed(self)
