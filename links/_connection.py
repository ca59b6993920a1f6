"""``Connection`` and ``Attachment``: one logical connection, carried by one TCP connection at a time.

Why two objects
    A user holds a ``Clt`` (or its halves, or refs to them) for as long as they like. With
    ``reconnect=`` or ``session=``, the TCP connection underneath may be cut and replaced
    many times meanwhile. So the handles point at a ``Connection`` (the logical one, which
    ends only when closed for good) and the ``Connection`` points at its current
    ``Attachment`` (one socket, its receive buffer, and, without a session, its protocol
    instance). Without ``reconnect``/``session`` there is exactly one attachment and the two
    end together, which is the plain case.

Who runs what
    * A user thread calls ``send`` / ``recv`` on the handles; they use the current attachment
      and wait on ``Connection.changed`` (a condition) while there is none.
    * The poll thread reads spawned attachments (``AttachmentReader``).
    * The timer thread runs heartbeats and idle checks per attachment, and schedules
      reconnect attempts; each attempt dials and handshakes on a short-lived thread of its
      own, so a slow dial never delays anybody's heartbeat.

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
    ``clt.disconnected`` → release the fd (on the poll thread after unregistering, when a
    reader is spawned there: closing first would let the kernel reuse the fd number under a
    selector that still maps it) → then, if the connection is not closed for good: redial
    (client with ``reconnect``), wait detached for a resume (server session), or close.

Closing for good (``Connection.close``), once, from any thread
    ``Protocol.on_close(con)`` while the socket still works (a local close only: it is how a
    protocol sends its logout) → mark closed and wake every waiter → end the attachment as
    above → ``on_disconnect`` (session) → listeners (a service pool drops it) → forget the
    session.
"""

from __future__ import annotations

import enum
import random
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from ._callbacks import Callback
from ._clock import deadline_after, time_left
from ._core._backoff import Backoff
from ._core._conid import ConId, Role
from ._core._link import Link
from ._core._protocol import Protocol, overrides
from ._core._status import NEED_DATA, RetryAfter, SendStatus, TaskStatus
from ._errors import BrokenError, ClosedError, DecodeError, FrameTooLarge, LinksError, ProtocolError
from ._gate import Permit
from ._log import get_logger
from ._ref import released_while_waiting
from ._outbound import DEFAULT_MAX_OUTBOUND, DEFAULT_STALL_TIMEOUT, Outbound, check_limits
from ._threads import on_runtime_thread
from ._timer import Timer, TimerHandle
from ._transport import Transport, socket_addrs

if TYPE_CHECKING:
    import socket

    from ._poll import PollHandler
    from .session._driver import SessionDriver

__all__ = ["Connection", "Attachment", "AttachmentReader", "ConnState"]

_COMPLETED = SendStatus.COMPLETED
_WOULD_BLOCK = SendStatus.WOULD_BLOCK

#: Seconds a send waits for a busy write lock at least (whatever its timeout), and a goodbye
#: sent from ``on_close`` at most, before it answers WOULD_BLOCK.
LOCK_WAIT = 0.1


class ConnState(enum.Enum):
    CONNECTED = "connected"  # an attachment is up
    DISCONNECTED = "disconnected"  # between attachments: redialing, or a session waiting to resume
    CLOSED = "closed"  # for good


_CLOSED = ConnState.CLOSED
_CONNECTED = ConnState.CONNECTED


class Attachment:
    """One TCP connection of a logical ``Connection``; also the ``con`` given to protocol hooks."""

    def __init__(self, connection: Connection, sock: Any, protocol: Protocol, permit: Permit | None) -> None:
        local, peer = socket_addrs(sock)
        self.connection = connection
        self.con_id = ConId(connection.role, connection.name, local, peer)
        self.transport = Transport(sock)
        self.outbound = Outbound(
            self.transport, lock=connection.write_lock, clock=connection.clock, watch=self.watch_writable,
            unwatch=self._end_stall_check, max_outbound=connection.max_outbound,
        )  # fmt: skip
        self.protocol = protocol
        self.link = Link(protocol, session=connection.session)
        self.permit = permit
        self.closed = False
        self.tasks: list[TimerHandle] = []
        self.poll: PollHandler | None = None  # set once the poll thread services it
        self.handler = AttachmentReader(self)  # what the poll thread services
        self.reading = False  # whether the poll thread reads it (spawned)
        self.lingering = False  # closed, but still writing what it owes (Connection._end)
        self.stall_task: TimerHandle | None = None
        self.last_recv = connection.clock()
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
                self.tasks.append(handle)
                return handle
        handle.cancel()
        return handle

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
        buffer = self.link.buffer
        if wait:
            n = self.transport.recv_into_waiting(buffer.writable(), timeout)
        else:
            n = self.transport.recv_into(buffer.writable())
        if n:
            buffer.commit(n)
            self.last_recv = self.connection.clock()
        return n

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

    def _start_stall_check(self) -> None:
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
        if self.stall_task is None:
            self._start_stall_check()
        handler = self.handler

        def start() -> None:  # on the poll thread, after the fd is unregistered
            poll.want_writable(handler)  # inline here: serviced from the next poll on

        try:
            poll.remove(handler, "closed", then=start)
        except RuntimeError:
            self.unlinger("poll_shutdown")

    def unlinger(self, reason: str) -> None:
        """Stop lingering (all written, the peer stalled or failed): release the fd."""
        if not self.lingering:
            return
        self.lingering = False
        if self.poll is not None:
            self.poll.remove(self.handler, reason, then=self.transport.close)
        else:
            self.transport.close()

    def dispatch(self, msg: Any) -> None:
        """``on_recv`` → the callback → ``send_reply``, skipping the hooks nobody overrides."""
        if self._on_recv is not None:
            self._on_recv(msg)
        connection = self.connection
        connection.callback.on_recv(connection.con_id, msg)
        if self._send_reply is not None:
            self._send_reply(msg, connection.hook_handle(self))

    def dispatch_all(self, msgs: list[Any]) -> None:
        """``dispatch`` each message in turn, stopping if one of them ends the attachment."""
        connection = self.connection
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


class AttachmentReader:
    """What the poll thread services for a spawned attachment: one read, then the frames it
    completed (a bounded batch; level-triggered polling reports the rest next pass)."""

    poll_kind = "recver"

    def __init__(self, attachment: Attachment) -> None:
        self.attachment = attachment
        self.con_id = attachment.con_id

    @property
    def closed(self) -> bool:
        att = self.attachment
        return att.closed and not att.lingering

    def fileno(self) -> int:
        return self.attachment.transport.fileno()

    def on_readable(self) -> bool:
        att = self.attachment
        if att.closed:
            return True  # its removal is already queued
        try:
            att.read_once()
        except LinksError as e:
            # Frames already buffered came before the end (a user-thread recv may have read
            # them just before the receiver was spawned): they are still delivered.
            if self._deliver(att):
                att.connection.lost(att, getattr(e, "reason", "closed"), e if isinstance(e, BrokenError) else None)
            return True
        if self._deliver(att) and att.connection.session is not None:
            att.connection.flush_session(att)
        return True

    @staticmethod
    def _deliver(att: Attachment) -> bool:
        """Dispatch every whole message in the buffer; False if the attachment ended meanwhile."""
        link = att.link
        # A whole read per call when the messenger allows it, else one message at a time (the
        # next may decode differently once this one is dispatched); see Link.next_messages.
        if link.batches:
            while not att.closed:
                try:
                    msgs = link.next_messages()
                except ProtocolError as e:
                    att.reject(e)
                    return False
                if not msgs:
                    break
                att.dispatch_all(msgs)
                if link.drained():
                    break  # the usual end of a read: no partial frame left to ask about
        else:
            next_message, dispatch = link.next_message, att.dispatch
            while not att.closed:
                try:
                    msg = next_message()
                except ProtocolError as e:
                    att.reject(e)
                    return False
                if msg is NEED_DATA:
                    break
                dispatch(msg)
        return not att.closed

    def on_writable(self) -> bool:
        """The socket has room: write what is owed (never waiting); True while more remains."""
        att = self.attachment
        if att.lingering:
            try:
                with att.outbound.lock:
                    if att.outbound.on_writable():
                        return True
            except LinksError:
                pass  # the peer is gone: nothing more to deliver
            att.unlinger("drained")
            return False
        if att.closed:
            return False
        out = att.outbound
        with out.lock:  # held by senders only for steps that never wait
            try:
                return out.on_writable()
            except LinksError as e:
                error = e
        att.connection.lost(att, getattr(error, "reason", "closed"), error if isinstance(error, BrokenError) else None)
        return False

    def on_poll_failure(self, error: BaseException | None) -> None:
        att = self.attachment
        if error is None:
            att.connection.close("poll_shutdown")
        else:
            att.connection.lost(att, "recver_failed", BrokenError(f"receiver failed: {error!r}", "recver_failed"))


class Connection:
    """A logical connection: the handles' view, across any number of attachments."""

    def __init__(
        self,
        role: Role,
        name: str,
        *,
        protocol_factory: Callable[[], Protocol],
        callback: Callback,
        timer: Timer,
        poll: Callable[[], PollHandler],
        session: SessionDriver | None = None,
        reconnect: Backoff | None = None,
        redial: Callable[[], socket.socket] | None = None,
        handshake_timeout: float = 5.0,
        idle_timeout: float | None = None,
        stall_timeout: float = DEFAULT_STALL_TIMEOUT,
        max_outbound: int = DEFAULT_MAX_OUTBOUND,
    ) -> None:
        # Refused before any socket opens.
        if idle_timeout is not None and not idle_timeout > 0:
            raise ValueError(f"idle_timeout must be a positive number of seconds, not {idle_timeout!r}")
        check_limits(stall_timeout, max_outbound)
        self.role = role
        self.name = name
        self.con_id = ConId(role, name)
        self.protocol_factory = protocol_factory
        self.callback = callback
        self.timer = timer
        self._poll = poll
        self.session = session
        self.reconnect = reconnect
        self._redial = redial
        self.handshake_timeout = handshake_timeout
        self.idle_timeout = idle_timeout
        self.stall_timeout = stall_timeout
        self.max_outbound = max_outbound
        self.clock = timer.clock.monotonic  # every time in the engine: fake in tests
        self.log = get_logger("clt", con_id=str(self.con_id))
        self.write_lock = threading.Lock()
        self.changed = threading.Condition()  # attach, detach, close, session space
        self.state = ConnState.DISCONNECTED
        self.attachment: Attachment | None = None
        self.pending: deque[Any] = deque()  # dispatched during a handshake, kept for recv()
        self.spawned = False
        self.sender: Any = None  # the CltSender facade (hook handle in session mode)
        self._closing = False
        self._error: LinksError | None = None
        self._listeners: list[Callable[[Connection], None]] = []
        self._tasks: list[TimerHandle] = []  # schedule()d for the whole logical connection
        self._protocol: Protocol | None = None  # session mode: the one protocol instance
        self._spare_link: Link | None = None
        self._handshaking: Attachment | None = None  # session client: the first attachment, before publish
        self._attempt = 0
        self._attached_at = 0.0
        self._rng = random.Random()

    def __repr__(self) -> str:
        return f"Connection({self.con_id}, {self.state.value})"

    # -- state ------------------------------------------------------------------------------

    @property
    def closed(self) -> bool:
        return self.state is ConnState.CLOSED

    def is_connected(self) -> bool:
        att = self.attachment
        return att is not None and not att.closed and att.protocol.is_connected()

    def error(self) -> LinksError:
        """What an operation on the closed connection raises."""
        return self._error or ClosedError(f"{self.con_id} is closed")

    def schedule(self, name: str, interval: float, task: Callable[[], Any], *, delay: float | None = None) -> TimerHandle:
        """Schedule ``task`` on the timer, cancelled when the connection is closed for good."""
        handle = self.timer.schedule(name, interval, task, delay=delay)
        with self.changed:
            if not self.closed:
                self._tasks.append(handle)
                return handle
        handle.cancel()
        return handle

    def hook_handle(self, att: Attachment) -> Any:
        return self.sender if self.session is not None else att

    def add_listener(self, fn: Callable[[Connection], None]) -> None:
        """Call ``fn(self)`` once the connection is closed for good (at once if it is)."""
        with self.changed:
            if not self.closed:
                self._listeners.append(fn)
                return
        fn(self)

    def wait_attached(self, deadline: float | None) -> Attachment | None:
        """The current attachment, waiting for one until ``deadline``; None on timeout.

        Raises:
            ClosedError, BrokenError: the connection is closed for good.
        """
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
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return None
                self.changed.wait(remaining)

    # -- opening ----------------------------------------------------------------------------

    def open(self, sock: socket.socket, deadline: float, permit: Permit | None = None, *, wait: bool = True) -> Attachment:
        """Build an attachment on ``sock`` and run its handshakes (on the calling thread).

        With ``wait`` False (an accepted connection, possibly on the poll thread) the
        protocol's handshake is only started: ``on_recv`` advances it later, never a wait here.

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
        if self.con_id.local is None:
            self.con_id = att.con_id
            self.log = get_logger("clt", con_id=str(self.con_id))
        try:
            if self.session is not None and self.role is Role.INITIATOR:
                self.session.client_handshake(att, deadline)
            if self.session is None or first:
                if self.session is not None and wait:
                    # The protocol's own handshake (a login) goes through the session sender;
                    # it must reach the peer now, not at publish, or we would wait forever.
                    self._handshaking = att
                protocol.on_connect(self.hook_handle(att))
                if wait:
                    self._drive(att, lambda: protocol.is_connected(), deadline)
        except BaseException:
            self._discard(att, "handshake_failed")
            raise
        finally:
            self._handshaking = None
        return att

    def _drive(self, att: Attachment, done: Callable[[], bool], deadline: float) -> None:
        """Read and dispatch on this thread until ``done()``; keep messages for ``recv``."""
        while not done():
            msg = att.next_message()
            if msg is not NEED_DATA:
                att.dispatch(msg)
                if not self.spawned:  # a spawned receiver's callback saw it; nobody calls recv
                    self.pending.append(msg)
                continue
            if done():  # a frame that yields no message (a session WELCOME) may have finished it
                return
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"{att.con_id}: handshake did not complete in time")
            if att.read_once() == 0:
                att.transport.wait_readable(remaining)

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
                    self._discard(att, "replay_failed")
                    raise
            with self.changed:
                if self.closed:
                    closed = True
                else:
                    closed = False
                    self.attachment = att
                    self.state = ConnState.CONNECTED
                    self._attached_at = self.clock()
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
            self.pending.clear()
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
        protocol = att.protocol
        interval = protocol.heartbeat_interval
        if interval and (self.session is None or not any(t for t in att.tasks)):
            att.tasks.append(self.timer.schedule(f"heartbeat {att.con_id}", interval, _heartbeat(self, att)))
        if self.session is not None:
            att.tasks.extend(self.session.attachment_tasks(att))
        if self.idle_timeout:
            att.tasks.append(self.timer.schedule(f"idle {att.con_id}", self.idle_timeout, silence_check(att, self.idle_timeout, "clt.idle_timeout", "idle_timeout")))

    # -- writing ----------------------------------------------------------------------------

    def send(self, msg: Any, timeout: float | None, att: Attachment | None = None) -> SendStatus:
        """``write(att, [msg], timeout)``: one message, from the user's sender (``att`` None)
        or from a protocol hook (a reply on the poll thread).

        Its common case is spelled out here (a plain connection with its attachment up and
        nothing owed, no ``on_send``, no timeout): per-message ``send()`` is one syscall plus
        this Python, and the Python is what links can cut. Measured: the Python per call went
        from 5.8-7.0x a plain ``pack`` + ``send`` to 4.4-4.7x (``benchmarks/bench_send_path.py``),
        and W1 ``send()`` from 0.82-0.83x plain blocking sockets to 0.88-0.91x in the same runs
        (RESULTS.md, "Send path"). Any other case goes the general way (``write``); so does a
        failed write that waits for the next attachment.
        """
        if timeout is None and self.session is None and not self._closing:
            lock = self.write_lock
            owing: Attachment | None = None
            lock.acquire()  # not "with": acquire and release cost half as much
            try:
                target = self.attachment if att is None else att
                if (
                    target is not None and not target.closed and self.state is not _CLOSED
                    and not target.link.stamps and not target.outbound.backlog
                ):  # fmt: skip
                    link = target.link
                    try:
                        frame = link.framer.encode(link.messenger.serialize(msg))
                    except Exception as e:  # the caller's bug, as in _write_plain
                        target.protocol.on_error(msg, e)
                        raise
                    try:
                        sent = target.transport.send_some(frame)
                    except LinksError as e:
                        error = self._write_failed(target, (msg,), e)
                        if att is not None or not self._retry_after([msg], target):
                            if error is e:
                                raise
                            raise error from e
                    else:
                        if sent != len(frame):  # taken: the rest is owed, the poll thread finishes it
                            target.outbound.sent_part(frame, sent)
                            if target.outbound.needs_watch():
                                owing = target
                        if target.notify_sent:
                            target.sent(msg)
                        if owing is None:
                            return _COMPLETED
            finally:
                lock.release()
            if owing is not None:
                owing.watch_writable()
                return _COMPLETED
        return self.write(att, [msg], timeout)

    def write(self, att: Attachment | None, msgs: list[Any], timeout: float | None) -> SendStatus:
        """Stamp, encode and write ``msgs`` as one write, all or nothing.

        ``att`` None means "the current attachment, whichever it is" (the user's sender): it
        waits for one while disconnected, or, with a session, queues into the replay buffer.
        Waits happen only outside the write lock, never on a runtime thread
        (``links._threads``), and never longer than ``timeout``.
        """
        deadline = deadline_after(timeout)
        may_wait = timeout != 0 and not on_runtime_thread()
        while True:
            target = None
            refused = False
            if not self._lock_for(deadline, may_wait):
                return self._would_block(None, msgs)
            try:
                if self.state is _CLOSED:
                    raise self.error()
                target = self._target(att)
                if self.session is not None:
                    if self.session.can_send():
                        return self._write_session(target, msgs)
                elif target is not None:
                    status = self._write_plain(target, msgs, retry=att is None)
                    if status is not None:
                        return status
                    refused = not target.closed  # no room (else: cut, wait for the next one)
            finally:
                self._unlock(target)
            left = time_left(deadline)
            if not may_wait or left == 0.0:
                return self._would_block(target, msgs)
            with released_while_waiting():  # never under a lock: not ours, nor a Ref's
                if refused:
                    assert target is not None
                    target.outbound.wait_room(left)  # until the socket drains
                    continue
                # No room in the replay buffer (session) or no attachment (plain): wait for a change.
                with self.changed:
                    # Checked again under the condition's lock: the change we would wait for may
                    # have happened since the write lock was released, and its notify is not repeated.
                    if self.state is not _CLOSED and not self._ready_for(self.session):
                        self.changed.wait(left)

    def _lock_for(self, deadline: float | None, may_wait: bool) -> bool:
        """Take the write lock for a send. It is held only for steps that never wait (see
        ``links._outbound``), but a hook or callback run under it may be slow, so the wait is
        bounded: by the send's timeout, but at least ``LOCK_WAIT`` (a holder merely between two
        time slices must not turn a reply into WOULD_BLOCK), and ``LOCK_WAIT`` at most for the
        goodbye of a closing connection or a send on a runtime thread."""
        if deadline is None and may_wait and not self._closing:
            return self.write_lock.acquire()
        if self._closing or not may_wait:
            return self.write_lock.acquire(timeout=LOCK_WAIT)
        return self.write_lock.acquire(timeout=max(LOCK_WAIT, deadline - time.monotonic()))

    def _unlock(self, att: Attachment | None) -> None:
        """Release the write lock; if ``att`` owes bytes, the poll thread is asked to finish them."""
        watch = att is not None and not att.closed and att.outbound.needs_watch()
        self.write_lock.release()
        if watch:
            att.watch_writable()  # type: ignore[union-attr]

    def _target(self, att: Attachment | None) -> Attachment | None:
        """The attachment a write goes to (write lock held): ``att``, or the current one."""
        target = self.attachment if att is None else att
        if target is None and self.session is not None:
            target = self._handshaking
        if target is not None and target.closed:
            if att is not None:
                raise BrokenError(f"{att.con_id} ended", "broken")
            return None
        return target

    def _would_block(self, target: Attachment | None, msgs: list[Any]) -> SendStatus:
        protocol = target.protocol if target is not None else self._protocol
        if protocol is None and self.attachment is not None:
            protocol = self.attachment.protocol
        if protocol is not None:
            for msg in msgs:
                protocol.on_would_block(msg)
        return _WOULD_BLOCK

    def _retry_after(self, msgs: list[Any], failed: Attachment) -> bool:
        """Whether the user's sender, whose socket write of ``msgs`` on ``failed`` just raised,
        waits for the next attachment and writes them again, rather than raising.

        Only with ``reconnect=``, when the connection was cut (its own write failed, or the
        reader ended it meanwhile): that is "between attachments", like any other send. Only
        for one message: a frame whose write failed never reached the peer whole, so writing
        it again cannot duplicate it; of a failed batch, some may have. Only a failed socket
        write: an error from encoding, or from a hook after the write, is raised as it is.
        """
        return self.reconnect is not None and len(msgs) == 1 and failed.closed

    def _ready_for(self, session: Any) -> bool:
        """Whether a waiting sender can proceed now (an attachment is up, or there is room)."""
        if session is not None:
            return session.can_send()
        att = self.attachment
        return att is not None and not att.closed

    def _write_plain(self, att: Attachment, msgs: list[Any], retry: bool = False) -> SendStatus | None:
        """Stamp, encode and hand ``msgs`` to ``att``'s outbound path; None when it has no room
        (nothing was stamped), or, instead of raising, when the write failed and ``retry``
        (the user's sender) asks to wait it out (``_retry_after``)."""
        link, outbound = att.link, att.outbound
        stamped: Any = msgs
        try:
            if not outbound.has_room():
                return None
            if len(msgs) == 1:
                msg = msgs[0]
                if link.stamps:
                    msg = link.stamp(msg)
                stamped = (msg,)
                try:
                    frames = link.encode(msg)
                except Exception as e:  # a message we cannot encode is the caller's bug, not the link's
                    att.protocol.on_error(msg, e)
                    raise
            else:
                stamped, frames = link.encode_many(msgs)
            outbound.take(frames)
        except LinksError as original:
            e = self._write_failed(att, stamped, original)
            if retry and self._retry_after(msgs, att):
                return None
            if e is original:
                raise
            raise e from original
        if att.notify_sent:
            for msg in stamped:
                att.sent(msg)
        return _COMPLETED

    def _write_failed(self, att: Attachment, msgs: Iterable[Any], original: LinksError) -> LinksError:
        """A plain write on ``att`` raised ``original``: tell the protocol, end the attachment
        if the peer is at fault, and return the error the caller should see."""
        e = original
        if isinstance(e, ClosedError) and att.closed and not (self.state is _CLOSED and self._error is None):
            # The socket was shut under us by another thread that found the connection
            # broken (idle timeout, a hostile frame, a slow consumer): not a local close.
            e = self.error() if self.state is _CLOSED else BrokenError(f"{att.con_id} ended", "broken")
        for msg in msgs:
            att.protocol.on_error(msg, e)
        if isinstance(e, BrokenError):
            self.lost(att, e.reason, e)
        return e

    def _write_session(self, att: Attachment | None, msgs: list[Any]) -> SendStatus:
        """Session: numbered frames go to the replay buffer first, so once accepted here a
        message is delivered exactly once, whatever happens to the socket afterwards. They
        are owed to the socket at once (never refused: the replay buffer bounds them)."""
        if att is not None:
            link = att.link
        else:  # detached: encode with a spare engine; the frames go to the replay buffer only
            if self._spare_link is None:
                assert self._protocol is not None
                self._spare_link = Link(self._protocol, session=self.session, read_size=16)
            link = self._spare_link
        stamped, frames = link.encode_many(msgs)
        if att is not None:
            self.owe(att, frames)  # a failure is not the caller's: the frames wait for replay
        for msg in stamped:
            if att is not None:
                att.sent(msg)
            else:
                self.callback.on_sent(self.con_id, msg)
        return _COMPLETED

    def owe(self, att: Attachment, data: bytes) -> bool:
        """Write lock held: hand committed bytes (session frames, acks, a replay) to ``att``;
        False if its socket failed (``att`` is then ended)."""
        try:
            att.outbound.owe(data)
        except LinksError as e:
            self.lost(att, getattr(e, "reason", "broken"), e if isinstance(e, BrokenError) else None)
            return False
        return True

    def flush_session(self, att: Attachment) -> None:
        """Write what the session owes (acks) without ever waiting: this runs on the poll
        thread. A busy sender means a data frame is going out, and the owed ack stays owed."""
        if not self.write_lock.acquire(blocking=False):
            return
        try:
            out = self.session.take_output() if self.session is not None else b""
            if out and not att.closed:
                self.owe(att, out)
        finally:
            self._unlock(att)

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
                if not self.closed:
                    self.state = ConnState.DISCONNECTED
            self.changed.notify_all()
        self._end(att, reason, error)
        if not current or self.closed or self._closing:
            return
        if self.session is not None:
            self.session.detached(self)
        if self.reconnect is not None and self._redial is not None:
            self._schedule_reconnect()
        elif self.session is None or self.role is Role.INITIATOR:
            self.close(reason, error if isinstance(error, BrokenError) else BrokenError(f"{self.con_id}: {reason}", reason))

    def _discard(self, att: Attachment, reason: str) -> None:
        with self.changed:
            if att.closed:
                return
            att.closed = True
        self._end(att, reason, None, quiet=True)

    def _end(self, att: Attachment, reason: str, error: LinksError | None, quiet: bool = False) -> None:
        # An orderly local close still delivers what senders were told was COMPLETED: the
        # socket stops reading (waking any reader) and lingers, write-only, on the poll thread
        # until what is owed is written or the peer stalls for stall_timeout.
        linger = error is None and not quiet and bool(att.outbound.backlog) and self.state is _CLOSED
        for task in att.tasks:
            task.cancel()
        if not linger:  # else it bounds the lingering too
            att._end_stall_check()
        if linger:
            att.transport.shutdown_read()
        else:
            att.transport.shutdown()
        if self.session is None:
            try:
                att.protocol.on_disconnect(att.con_id)
            except Exception as e:
                self.log.error("clt.on_disconnect_failed", error=repr(e))
        if att.permit is not None:
            att.permit.release()
        if not quiet:
            fields = {"error": str(error)} if error is not None else {}
            att_log = self.log if att.con_id == self.con_id else get_logger("clt", con_id=str(att.con_id))
            att_log.info("clt.disconnected", reason=reason, **fields)
        if linger:
            att.linger()
        elif att.poll is not None:
            att.poll.remove(att.handler, reason, then=att.transport.close)
        else:
            att.transport.close()

    def close(self, reason: str = "closed", error: LinksError | None = None) -> bool:
        """Close for good (idempotent). True for the call that actually closed it."""
        with self.changed:
            if self.closed or self._closing:
                return False
            self._closing = True
            att = self.attachment
        if error is None and att is not None and not att.closed:
            try:
                att.protocol.on_close(self.hook_handle(att))
            except Exception as e:
                self.log.warning("clt.on_close_failed", error=repr(e))
        with self.changed:
            self.state = ConnState.CLOSED
            self._error = error
            att, self.attachment = self.attachment, None
            # Claimed under the lock, as lost() claims it: only one of them may end it.
            end_att = att is not None and not att.closed
            if end_att:
                att.closed = True
            listeners, self._listeners = self._listeners, []
            tasks, self._tasks = self._tasks, []
            self.changed.notify_all()
        for task in tasks:
            task.cancel()
        if end_att:
            self._end(att, reason, error)
        elif self.session is not None or self.reconnect is not None:
            self.log.info("clt.disconnected", reason=reason, **({"error": str(error)} if error else {}))
        if self.session is not None and self._protocol is not None:
            try:
                self._protocol.on_disconnect(self.con_id)
            except Exception as e:
                self.log.error("clt.on_disconnect_failed", error=repr(e))
        for fn in listeners:
            fn(self)
        if self.session is not None:
            self.session.closed(self)
        return True

    # -- reconnecting (client) --------------------------------------------------------------

    def _schedule_reconnect(self) -> None:
        backoff = self.reconnect
        assert backoff is not None
        if self.timer.clock.monotonic() - self._attached_at >= backoff.reset_after:
            self._attempt = 0  # it stayed up long enough: start the schedule over
        self._attempt += 1
        attempt = self._attempt
        if backoff.gives_up(attempt):
            self.close("reconnect_gave_up", BrokenError(f"{self.con_id}: gave up after {attempt - 1} attempts", "reconnect_gave_up"))
            return
        delay = backoff.delay(attempt, self._rng)
        self.log.info("clt.reconnecting", attempt=attempt, delay=round(delay, 6), at=self.timer.clock.monotonic())

        def start() -> TaskStatus:
            if not self.closed:
                threading.Thread(target=self._redial_once, args=(attempt,), name=f"links-redial {self.name}", daemon=True).start()
            return TaskStatus.TERMINATE

        try:
            self.timer.schedule(f"reconnect {self.con_id}", delay, start)
        except RuntimeError:  # the timer was shut down (interpreter exit, a test's teardown)
            self.close("timer_shutdown", BrokenError(f"{self.con_id}: timer shut down while reconnecting", "timer_shutdown"))

    def _redial_once(self, attempt: int) -> None:
        from .session._engine import SessionLost  # noqa: PLC0415 - only sessions raise it

        assert self._redial is not None
        try:
            deadline = time.monotonic() + self.handshake_timeout
            sock = self._redial()
            att = self.open(sock, deadline)
        except SessionLost as e:
            self.close("session_lost", e)  # every later call raises it: the session is gone
            return
        except (LinksError, OSError, TimeoutError) as e:
            self.log.info("clt.reconnect_failed", attempt=attempt, error=str(e))
            if not self.closed:
                self._schedule_reconnect()
            return
        except Exception as e:  # a protocol hook failed in the handshake: retrying would repeat it
            self.log.error("clt.reconnect_failed", attempt=attempt, error=repr(e))
            self.close("reconnect_failed", BrokenError(f"{self.con_id}: handshake failed: {e!r}", "reconnect_failed"))
            return
        try:
            self.publish(att, self.session.replay_frames if self.session is not None else None)
        except LinksError as e:  # the new connection broke while the replay was written to it
            self.log.info("clt.reconnect_failed", attempt=attempt, error=str(e))
            if not self.closed:
                self._schedule_reconnect()
            return
        if self.closed and att.closed:
            return  # closed for good during the attempt: publish discarded the new connection
        self.log.info("clt.reconnected", attempt=attempt, local=str(att.con_id.local), at=self.timer.clock.monotonic())


def _heartbeat(connection: Connection, att: Attachment) -> Callable[[], TaskStatus]:
    protocol = att.protocol

    def beat() -> TaskStatus:
        if att.closed:
            return TaskStatus.TERMINATE
        try:
            protocol.send_heartbeat(connection.hook_handle(att))
        except LinksError as e:
            connection.log.warning("heartbeat.failed", error=str(e))
        return TaskStatus.TERMINATE if att.closed else TaskStatus.COMPLETED

    return beat


def silence_check(att: Attachment, limit: float, event: str, reason: str) -> Callable[[], Any]:
    """A timer task that drops ``att`` once nothing arrived from the peer for ``limit`` seconds.

    A silent peer (paused, unplugged, behind a NAT that forgot us) sends no FIN, so only
    silence can tell. Bytes waiting unread count as hearing from it: then our reader is behind
    (a busy poll thread, or no thread in ``recv``), not the peer gone. The task runs again
    exactly when the limit could next be reached, so detection lags by timer latency only.
    """

    def check() -> Any:
        if att.closed:
            return TaskStatus.TERMINATE
        clock = att.connection.clock
        idle = clock() - att.last_recv
        if idle >= limit and att.transport.has_unread_data():
            att.last_recv = clock()
            idle = 0.0
        if idle >= limit:
            att.connection.log.warning(event, idle=round(idle, 3), limit=limit)
            att.drop(reason)
            return TaskStatus.TERMINATE
        return RetryAfter(limit - idle)

    return check


def stall_check(att: Attachment, limit: float) -> Callable[[], Any]:
    """A timer task that drops ``att`` once its peer took none of what we owe it for ``limit``
    seconds: a slow consumer (``links._outbound``). Only that connection ends; its sends
    then raise ``BrokenError("slow_consumer")`` (or, with ``reconnect=``, wait for a redial)."""
    outbound = att.outbound

    def check() -> Any:
        if att.closed and not att.lingering:
            return TaskStatus.TERMINATE
        stalled = outbound.stalled_for()
        if stalled >= limit:
            att.connection.log.warning("clt.slow_consumer", stalled=round(stalled, 3), stall_timeout=limit, owed=outbound.owed_bytes)
            if att.lingering:
                att.unlinger("slow_consumer")
            else:
                att.drop("slow_consumer")
            return TaskStatus.TERMINATE
        return RetryAfter(limit - stalled)

    return check
