"""``Attachment``: one TCP connection of a logical ``Connection``, and ``AttachmentReader``,
what the poll thread services for it.

An attachment owns one socket's worth of state: its ``Transport``, its ``Outbound`` (what it
owes the socket), its ``Link`` (receive buffer, framer, messenger) and, without a session, its
protocol instance. It is also the ``con`` handed to a plain connection's protocol hooks: it
has ``send``, ``send_many``, ``close``, ``con_id``, ``timer``, ``schedule`` and
``is_connected``.

Receiving: ``receive`` is the loop of a thread that may wait (``recv``, a client's handshake):
one message at a time, read, cut, dispatched. ``AttachmentReader`` is the poll thread's: one
read per readiness event and every whole frame it completed, a batch at a time where the
messenger allows (nothing there ever waits). Raw socket calls are the transport's alone.

Its ``AttachmentReader`` is registered with the poll thread for reading once the receiver
is spawned, and for writing whenever the outbound path owes bytes (``watch_writable``); a
closed attachment that still owes bytes lingers there, write-only, until they are written
or its peer stalls (``linger``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from contextlib import suppress
from typing import TYPE_CHECKING, Any

from ._callbacks import Callback
from ._clock import time_left
from ._core._conid import ConId
from ._core._link import Link
from ._core._protocol import Protocol, overrides
from ._core._status import NEED_DATA, SendStatus, TaskStatus
from ._errors import BrokenError, DecodeError, FrameTooLarge, LinksError, ProtocolError
from ._gate import Permit
from ._liveness import stall_check
from ._log import get_logger
from ._outbound import Outbound
from ._reader import AttachmentReader
from ._timer import Timer, TimerHandle
from ._transport import Transport, socket_addrs

if TYPE_CHECKING:
    from ._connection import Connection
    from ._poll import PollHandler

__all__ = ["Attachment"]

#: Seconds before the poll thread looks again at a socket whose write lock was busy.
WATCH_AGAIN = 0.002


class Attachment:
    """One TCP connection of a logical ``Connection``; also the ``con`` given to protocol hooks."""

    __slots__ = (
        "transport", "connection", "con_id", "outbound", "protocol", "link", "permit", "closed", "tasks", "poll",
        "handler", "reading", "lingering", "first_deadline", "stall_task", "on_drained", "after_read", "last_recv",
        "_on_recv", "_send_reply", "_on_sent", "notify_sent",
    )  # fmt: skip

    def __init__(self, connection: Connection, sock: Any, protocol: Protocol, permit: Permit | None) -> None:
        # A socket, or a byte-stream layer over one already (a ``links._tls.TlsTransport``).
        self.transport = sock if isinstance(sock, Transport) else Transport(sock)
        local, peer = socket_addrs(self.transport.sock)
        self.connection = connection
        self.con_id = ConId(connection.role, connection.name, local, peer)
        self.outbound = Outbound(
            self.transport, lock=connection.write_lock, clock=connection.clock, owner=self, max_outbound=connection.max_outbound
        )
        self.protocol = protocol
        self.link = Link(protocol, session=connection.session, read_size=self.transport.read_size)
        self.permit = permit
        self.closed = False
        self.tasks: tuple[TimerHandle, ...] = ()  # a tuple: most attachments have none
        self.poll: PollHandler | None = None  # set once the poll thread services it
        self.handler = AttachmentReader(self)  # what the poll thread services
        self.reading = False  # whether the poll thread reads it (spawned)
        self.lingering = False  # closed, but still writing what it owes (Connection._end)
        # A service's deadline for the first whole message (links._liveness), None once one came.
        self.first_deadline: TimerHandle | None = None
        self.stall_task: TimerHandle | None = None
        # Told (poll thread, no lock held) when the poll thread wrote all the socket was owed:
        # a layer that keeps output of its own (the multiplexer) hands on more then.
        self.on_drained: Callable[[], None] | None = None
        # Told (poll thread) after each readiness event's messages were dispatched: links.aio
        # wakes its event loop once per read there, not once per message.
        self.after_read: Callable[[], None] | None = None
        # When it last heard from the peer: every read sets it, and the idle check when it
        # starts (links._liveness); no clock read, and no float kept, for one that never checks.
        self.last_recv = 0.0
        self._on_recv = protocol.on_recv if overrides(protocol, "on_recv") else None
        self._send_reply = protocol.send_reply if overrides(protocol, "send_reply") else None
        self._on_sent = protocol.on_sent if overrides(protocol, "on_sent") else None
        # Whether a written message needs telling anyone: skipping the no-op calls when nobody
        # listens is a measurable share of the send path (benchmarks/RESULTS.md, "send path").
        self.notify_sent = self._on_sent is not None or overrides(connection.callback, "on_sent", Callback)

    def __repr__(self) -> str:
        return f"Attachment({self.con_id}, closed={self.closed})"

    # -- the hook handle ----------------------------------------------------------------------

    @property
    def peer_certificate(self) -> dict[str, Any] | None:
        """The peer's verified TLS certificate (``ssl.SSLSocket.getpeercert()``'s dict: its
        ``subject``, ``subjectAltName``, ...), or None (no TLS, or none asked of the peer)."""
        return getattr(self.transport, "peer_certificate", None)

    @property
    def timer(self) -> Timer:
        return self.connection.timer

    def is_connected(self) -> bool:
        return not self.closed and self.protocol.is_connected()

    def schedule(self, name: str, interval: float, task: Callable[[], Any], *, delay: float | None = None) -> TimerHandle:
        """Schedule ``task`` on the connection's timer, cancelled when this connection ends.

        For a protocol's deadlines (a login timeout started in ``on_connect``): unlike
        ``con.timer.schedule``, nothing fires for a connection that is already gone.
        """
        handle = self.connection.timer.schedule(name, interval, task, delay=delay)
        with self.connection.changed:
            if not self.closed:
                self.tasks += (handle,)
                return handle
        handle.cancel()
        return handle

    def keep_tasks(self, handles: Iterable[TimerHandle]) -> None:
        """Keep ``handles`` (its liveness tasks) to cancel when this attachment ends."""
        handles = tuple(handles)
        if handles:
            with self.connection.changed:
                self.tasks += handles

    def send(self, msg: Any, timeout: float | None = None) -> SendStatus:
        """Send on this very TCP connection (a protocol's login, heartbeat or reply)."""
        return self.connection.send(msg, timeout, self)

    def send_many(self, msgs: Iterable[Any], timeout: float | None = None) -> SendStatus:
        return self.connection.write(self, list(msgs), timeout)

    def close(self, reason: str | None = None) -> None:
        """End the connection, from a protocol hook.

        Args:
            reason: None for an orderly close for good (``on_close`` sends the goodbye; later
                calls raise ``ClosedError``). A short reason when the *peer* is at fault (it
                went silent, broke the rules): no goodbye, and it ends as if the peer had
                broken it, so ``reconnect=`` redials and later calls raise ``BrokenError(reason)``.
        """
        if reason is None:
            self.connection.close()
        else:
            self.drop(reason)

    def drop(self, reason: str = "dropped") -> None:
        """End only this TCP connection, as broken: reconnecting or resuming may follow."""
        self.connection.lost(self, reason, BrokenError(f"{self.con_id}: {reason}", reason))

    # -- reading (one thread at a time: the poll thread or one user thread) -------------------

    def read_once(self, wait: bool = False, timeout: float | None = None) -> int:
        """One ``recv_into`` into the receive buffer; bytes read (0: none yet). With ``wait``,
        it sleeps in the kernel until bytes come or ``timeout`` passes (only a user thread may:
        never the poll thread).

        Raises:
            BrokenError, ClosedError: the socket ended.
        """
        buffer, transport = self.link.buffer, self.transport
        if wait:
            n = transport.recv_into_waiting(buffer.writable(), timeout)
        elif transport.virtual and not transport.holds_input:
            return 0  # a channel holding nothing (the poll thread's first look): no buffer made for it
        else:
            n = transport.recv_into(buffer.writable())
        if n:
            buffer.commit(n)
            self.last_recv = self.connection.clock()
        return n

    def receive(self, deadline: float | None, until: Callable[[], bool] | None = None) -> Any:
        """The receive loop of a thread that may wait (``recv``, a client's handshake; never the
        poll thread, whose loop is ``AttachmentReader``'s batch): the next whole message,
        dispatched (``on_recv`` → callback → ``send_reply``), reading as needed until
        ``deadline``. None when the time ran out or another thread ended this attachment;
        ``NEED_DATA`` as soon as ``until()`` holds with no message pending (a session's
        WELCOME finishes a handshake without one).

        Raises:
            BrokenError, ClosedError: the socket ended (the caller decides what that ends).
            FrameTooLarge, DecodeError, ProtocolError: after ending this attachment.
        """
        n = 1
        while not self.closed:
            msg = self.next_message()
            if msg is not NEED_DATA:
                self.dispatch(msg)
                return msg
            if until is not None and until():
                return NEED_DATA
            if not n and deadline is not None and time_left(deadline) == 0.0:
                return None  # one last look came up empty
            left = time_left(deadline)
            # Sleep in recv itself, one syscall (see _transport, "Blocking mode"); once the
            # deadline has passed, one last look that does not wait.
            n = self.read_once(wait=left is None or left > 0, timeout=left)
        return None

    def next_message(self) -> Any:
        """The next whole message (or ``NEED_DATA``); a hostile frame ends this attachment.

        Raises:
            FrameTooLarge, DecodeError, ProtocolError: re-raised after ``reject``.
        """
        try:
            return self.link.next_message()
        except ProtocolError as e:
            self.reject(e)
            raise

    def reject(self, error: ProtocolError) -> None:
        """The peer sent a frame we refuse: log why, and end this attachment (only this one)."""
        log = self.connection.log
        if isinstance(error, FrameTooLarge):
            event = "frame.too_large"
            log.warning(event, size=error.size, max_frame_size=error.max_frame_size)
        elif isinstance(error, DecodeError):
            event = "frame.decode_failed"
            log.warning(event, error=str(error))
        else:
            event = "session.protocol_error"
            log.warning(event, error=str(error))
        self.connection.lost(self, event, BrokenError(str(error), event))

    def greeted(self) -> None:
        """The first whole message arrived: the service's deadline for it is off."""
        deadline, self.first_deadline = self.first_deadline, None
        if deadline is not None:
            deadline.cancel()

    def watch_writable(self) -> None:
        """Ask the poll thread to finish what ``outbound`` owes once the socket has room, and
        check meanwhile that the peer does not stall (once per backlog: ``Outbound.needs_watch``)."""
        connection = self.connection
        self._start_stall_check()
        try:
            poll = self.poll
            if poll is None:
                poll = self.poll = connection._poll()
            poll.want_writable(self.handler)
        except RuntimeError as e:  # the poll handler was shut down: nobody can finish it
            self.drop("poll_shutdown")
            connection.log.warning("clt.write_unfinished", error=str(e))

    def watch_again(self) -> bool:
        """The write lock was busy when the socket had room: ask the poll thread again in a
        moment (the watch stays asked for: ``Outbound.needs_watch`` will not ask twice).
        False when the timer refused (shut down): the caller keeps its watch instead (a
        want_writable here, from inside its on_writable, would be undone by its return)."""

        def again() -> TaskStatus:
            if not self.handler.closed and self.poll is not None:  # open, or lingering
                with suppress(RuntimeError):  # the poll handler shut down meanwhile
                    self.poll.want_writable(self.handler)
            return TaskStatus.TERMINATE

        try:
            self.connection.timer.schedule(f"write {self.con_id}", WATCH_AGAIN, again, delay=WATCH_AGAIN)
        except RuntimeError:  # the timer shut down: the level-triggered watch looks again next pass
            return False
        return True

    def hand_back(self) -> None:
        """The handshake's poll handler (a redial's ``Attempt``) is done: the attachment's own
        takes over, and is asked to finish anything still owed."""
        self.handler = AttachmentReader(self)
        self.poll = None  # set again by whoever registers it next
        out = self.outbound
        with out.lock:
            watch = out.handed_over()
        if watch:
            self.watch_writable()

    def unwatch(self) -> None:
        """``outbound`` owes nothing any more (its lock held): the stall check ends."""
        self._end_stall_check()

    def _start_stall_check(self) -> None:
        self._end_stall_check()  # one at a time
        limit = self.connection.stall_timeout
        try:
            self.stall_task = self.connection.timer.schedule(f"stall {self.con_id}", limit, stall_check(self, limit))
        except RuntimeError:  # the timer was shut down: nothing left to bound
            self.stall_task = None
        if self.closed and not self.lingering:  # ended meanwhile, and _end found no task to cancel
            self._end_stall_check()

    def _end_stall_check(self) -> None:
        task, self.stall_task = self.stall_task, None
        if task is not None:
            task.cancel()

    def end(self, reason: str, error: LinksError | None, *, quiet: bool = False, linger: bool = False) -> None:
        """Once closed (``Connection.lost``/``close``): stop its tasks, shut its socket, run
        ``on_disconnect`` (plain), release its permit, log, release the fd. With ``linger``
        and bytes still owed, the socket only stops reading (waking any reader) and the poll
        thread writes what is owed first (``linger``), bounded by ``stall_timeout``."""
        connection = self.connection
        linger = linger and bool(self.outbound.backlog)
        for task in self.tasks:
            task.cancel()
        if linger:
            self.transport.shutdown_read()
        else:
            self._end_stall_check()
            if error is None:
                self.transport.shutdown()
            else:
                self.transport.abort()
        if connection.session is None:
            try:
                self.protocol.on_disconnect(self.con_id)
            except Exception as e:
                connection.log.error("clt.on_disconnect_failed", error=repr(e))
        if self.permit is not None:
            self.permit.release()
        if not quiet:
            fields = {"error": str(error)} if error is not None else {}
            log = connection.log if self.con_id == connection.con_id else get_logger("clt", con_id=str(self.con_id))
            log.info("clt.disconnected", reason=reason, **fields)
        if linger:
            self.linger()
        elif self.poll is not None:
            self.poll.remove(self.handler, reason, then=self.transport.close)
        else:
            self.transport.close()

    def linger(self) -> None:
        """Closed: let the poll thread write what is still owed, then release the fd."""
        connection = self.connection
        try:
            poll = self.poll if self.poll is not None else connection._poll()
        except RuntimeError:
            self.transport.close()
            return
        self.poll = poll
        self.lingering = True
        self._end_stall_check()  # a check may have ended as the attachment closed: a fresh one
        self._start_stall_check()
        handler = self.handler

        def start() -> None:  # on the poll thread, after the fd is unregistered
            try:
                poll.want_writable(handler)  # inline here: serviced from the next poll on
            except RuntimeError:  # shut down, and not from its own thread: nobody would write it
                self.unlinger("poll_shutdown")

        try:
            poll.remove(handler, "closed", then=start)
        except RuntimeError:
            self.unlinger("poll_shutdown")

    def unlinger(self, reason: str) -> None:
        """Stop lingering (all written, the peer stalled or failed): release the fd."""
        if not self.lingering:
            return
        self.lingering = False
        self._end_stall_check()
        if self.poll is not None:
            self.poll.remove(self.handler, reason, then=self.transport.close)
        else:
            self.transport.close()

    def dispatch(self, msg: Any) -> None:
        """``on_recv`` → the callback → ``send_reply``, skipping the hooks nobody overrides."""
        if self.first_deadline is not None:
            self.greeted()
        if self._on_recv is not None:
            self._on_recv(msg)
        connection = self.connection
        connection.callback.on_recv(connection.con_id, msg)
        if self._send_reply is not None:
            self._send_reply(msg, connection.hook_handle(self))

    def dispatch_all(self, msgs: list[Any]) -> None:
        """``dispatch`` each message in turn, stopping if one of them ends the attachment."""
        connection = self.connection
        if self.first_deadline is not None:
            self.greeted()
        if self._on_recv is None and self._send_reply is None:
            # Only the callback to call: the loop the poll thread spends its time in, kept bare.
            on_recv, con_id = connection.callback.on_recv, connection.con_id
            for msg in msgs:
                if self.closed:
                    return
                on_recv(con_id, msg)
        else:
            dispatch = self.dispatch
            for msg in msgs:
                if self.closed:
                    return
                dispatch(msg)

    def sent(self, msg: Any) -> None:
        if self._on_sent is not None:
            self._on_sent(msg)
        self.connection.callback.on_sent(self.connection.con_id, msg)
