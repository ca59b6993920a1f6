"""``MuxDriver``: a ``MuxEngine`` over one physical connection, and its streams as transports.

The physical connection is a links connection like any other (so TLS, heartbeats, the gate
and ``reconnect=`` work under channels unchanged) whose protocol, ``MuxLink``, cuts yamux
frames and hands each to this driver on the poll thread. The driver is what the reference
design's history says it must be: the *one* reader of the socket, routing each stream's
bytes to that stream's transport (``links.mux._stream``), never letting a channel read the
socket itself.

Locks
    The engine and the streams are guarded by the driver's own lock (``lock``): whoever changes
    them (a channel's send, a channel's read giving window back, the poll thread's reading)
    holds it for steps that never wait, and then, released, writes what the engine produced to
    the physical connection (``release``, ``_flush``). Writing takes the physical connection's
    write lock, and only if it is free: its holder is writing the engine's output already and
    looks again once it lets go, so what others queued meanwhile goes out with its next write.
    That is how many channels' frames share one ``sendmsg`` (100 threads, each sending on its
    own channel, queue while one of them writes). But a user thread whose step leaves
    ``HELP_WRITE`` bytes or more queued (a send, an open, a close, a read's window update)
    waits for the write lock (``LOCK_WAIT`` at most) and writes them itself: senders that only
    queue never give up the interpreter, and the holder, back from its ``sendmsg``, would wait
    for it behind all of them while the queue fills (W4 with 100 threads over 10 s: 150k
    messages/s, then 680k). The runtime threads (poll, timer, a borrowing reader) and a thread
    running an asyncio loop never wait. Order: a channel's write lock, then the physical write
    lock, then the driver's lock, never the reverse; no hook or callback runs under either of
    the last two.

Readiness
    A stream's transport has no fd. Where a socket would turn readable or writable, the
    driver notifies the stream's condition (a user thread waiting in ``recv`` or for room)
    and tells the poll thread (``links.mux._wakes``): a channel it reads that a read of its
    own fed is read right after, outside every lock (``PollHandler.read_now``); any other
    readiness is marked (``PollHandler.ready``) for a later pass. A thread waiting in a
    channel's ``recv`` may read the physical connection itself meanwhile (``borrower``,
    ``links.mux._stream``): what it routes is marked the same way, one command per read.

Finishing
    ``finish`` closes the physical connection only once every stream has ended both ways: the
    peer read each to its end before it closed its side, so nothing a channel was told was
    COMPLETED is still in flight. Closing earlier would cut off what channels still owe, and
    the peer's window updates, arriving at a closed socket, would make the kernel reset the
    connection under bytes the peer had not read yet.

Failure
    A frame that breaks yamux for the whole connection (``MuxError``) is logged
    (``mux.protocol_error``, its reason), answered with GO_AWAY, and ends the physical
    connection; every channel on it then ends with ``BrokenError`` (``mux.connection_lost``).
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from .._errors import BrokenError, LinksError
from .._sending import LOCK_WAIT
from .._threads import in_event_loop, on_runtime_thread
from ._engine import GoAway, MuxEngine, StreamData, StreamEnded, StreamOpened, StreamReset
from ._stream import StreamTransport
from ._wakes import post_marks, read_now, wake_read
from ._wire import HEADER_SIZE, MuxError

if TYPE_CHECKING:
    from .._attachment import Attachment

__all__ = ["MuxDriver", "HELP_WRITE"]

#: Bytes of engine output handed to the physical outbound path per step (one ``sendmsg``):
#: a system call per 256 KiB cost twice the CPU per byte of one per MiB (measured on W3).
_PUMP = 1 << 20
#: Bytes queued in the engine from which a user thread that finds the physical connection being
#: written waits to write them itself (see Locks).
HELP_WRITE = 256 * 1024


class MuxDriver:
    """One yamux session over one physical attachment; see the module docstring."""

    def __init__(self, att: Attachment, engine: MuxEngine, on_stream: Callable[[StreamTransport], None]) -> None:
        self.att = att
        self.connection = att.connection
        self.lock = threading.Lock()  # the engine's and the streams' (see Locks)
        self.write_lock = att.connection.write_lock  # the physical outbound path's
        self.engine = engine
        self.on_stream = on_stream
        self.local, self.peer = att.con_id.local, att.con_id.peer
        self.streams: dict[int, StreamTransport] = {}
        self.error: LinksError | None = None  # the physical connection is gone: every stream ends so
        self._failed: LinksError | None = None  # a write failed under the lock: ended after it
        self._then: Callable[[], None] | None = None  # finish(): called once every stream is done
        self._now: float | None = None  # the clock's reading for the read being routed, once asked
        # The stream whose waiting thread reads the physical connection now (links._lease;
        # StreamTransport._borrow), if any: one at a time.
        self.borrower: StreamTransport | None = None
        # Where the borrower's own bytes go while it reads (the view its channel reads into),
        # and how many landed there: one copy, not two (inbound, then the view).
        self.landing: memoryview | None = None
        self.landed = 0
        att.on_drained = self._drained

    def __repr__(self) -> str:
        return f"MuxDriver({self.att.con_id}, streams={len(self.streams)})"

    # -- the lock and the output ------------------------------------------------------------

    def release(self) -> None:
        """Wake the streams the engine unblocked, release the lock, write what it produced."""
        # The engine's may_unblock and has_output, read inline: every send and read asks both,
        # and the two property calls were a quarter of a channel send's Python calls.
        engine = self.engine
        try:
            if engine._unblocked or engine._starved:
                self._wake_unblocked()
        finally:
            self.lock.release()
        if (engine._control or engine._turns) and self.error is None:
            self._flush()
        if self._then is not None or self._failed is not None:
            self._settle()

    def send_now(self, stream: StreamTransport, data: bytes) -> int | None:
        """A channel's send, its common case in one step: with the physical connection idle
        (its write lock free, nothing owed, the engine holding no output), ``data`` is framed
        and written at once, without queueing it in the engine first. None when not so:
        nothing was taken (the caller writes it the general way, ``release``), also when the
        send is refused (the general way raises what ``StreamTransport.check_sendable`` does).
        """
        write_lock, out = self.write_lock, self.att.outbound
        if not write_lock.acquire(False):  # order: the physical write lock, then ours (Locks)
            return None
        try:
            if out.backlog:
                return None
            lock = self.lock
            lock.acquire()
            try:
                # Refused: the general way raises it, and its release writes what others
                # queued while we held the write lock (raising here would leave it unwritten).
                frame = None if stream.send_refused() else self.engine.write_frame(stream.stream_id, data, _PUMP)
            finally:
                lock.release()
            if frame is None:
                return None
            try:
                if type(frame) is bytes:
                    out.take(frame)
                else:
                    out.take_parts(frame)
            except LinksError as e:
                self._failed = e  # the connection ends (``_settle``); the channel with it
            watch = out.backlog and not self.att.closed and out.needs_watch()
        finally:
            write_lock.release()
        if watch:
            self.att.watch_writable()
        engine = self.engine
        if engine._control or engine._turns:  # queued by others while we wrote: see Locks
            self._flush()
        if self._then is not None or self._failed is not None:
            self._settle()
        return len(data)

    def _wake_unblocked(self) -> None:
        """Lock held: wake the writers of the streams that can take more now."""
        for stream_id in self.engine.unblocked():
            stream = self.streams.get(stream_id)
            if stream is not None:
                self._wake(stream, writable=True)

    def _flush(self) -> None:
        """No lock held: the engine's output into the physical outbound path, while it has
        room, unless another thread is writing it (it looks again after; see Locks)."""
        engine, att, write_lock = self.engine, self.att, self.write_lock
        out = att.outbound
        while (engine._control or engine._turns) and self.error is None:  # has_output, inline
            # Owed bytes mean a full socket, watched: the poll thread writes them once it has
            # room, then hands on the engine's output (``_drained``). Trying now would fail
            # (a send refused with EAGAIN per channel send, measured on W4: 8 in 10 batches).
            if out.backlog:
                return
            if not write_lock.acquire(False):
                # Its holder writes ours too: it looks at the engine again once it lets go. A
                # queue this long says it is starved of the interpreter: help (see Locks).
                if engine.queued < HELP_WRITE or on_runtime_thread() or in_event_loop() or not write_lock.acquire(True, LOCK_WAIT):
                    return
            try:
                self._write_out()
            finally:
                watch = out.backlog and not att.closed and out.needs_watch()
                write_lock.release()
            if watch:
                att.watch_writable()
            if out.backlog or self._failed is not None:
                return  # the poll thread writes the rest once the socket has room (``_drained``)

    def _write_out(self) -> None:
        """The physical write lock held: hand on the engine's output while the outbound path
        has room (a failed write is kept in ``_failed``, for ``_settle``)."""
        engine, out, lock = self.engine, self.att.outbound, self.lock
        try:
            # Owed after a step: one more try at once (a TLS layer takes 256 KiB a call, so the
            # socket may have room still); refused, the socket is full and watched.
            while (engine._control or engine._turns) and (not out.backlog or out.flush()):
                with lock:
                    parts = engine.take_parts(_PUMP)
                    if engine._unblocked or engine._starved:  # may_unblock (max_queued has room again)
                        self._wake_unblocked()
                out.take_parts(parts)
        except LinksError as e:
            self._failed = e

    def _settle(self) -> None:
        """No lock held: end the connection after a failed write; run ``finish``'s close once
        every stream is done and the engine's output is handed on."""
        with self.lock:
            engine = self.engine
            then = self._then if not (engine.streams or engine.has_output) else None
            if then is not None:
                self._then = None
        if then is not None:
            then()
        failed, self._failed = self._failed, None
        if failed is not None:
            att = self.att
            self.connection.lost(att, getattr(failed, "reason", "broken"), failed if isinstance(failed, BrokenError) else None)

    def _drained(self) -> None:
        """Poll thread, no lock held: the physical connection wrote all it owed; more, if any."""
        self.lock.acquire()
        self.release()

    # -- what the poll thread read ----------------------------------------------------------

    def received(self, frames: list[Any]) -> None:
        """Poll thread, or a thread reading in its stead: the yamux frames of one read off the
        physical connection, under one lock; each stream they touched is woken once, at the end."""
        opened: list[StreamTransport] = []
        woken: dict[StreamTransport, bool] = {}  # stream -> whether its writers wake too
        receive, data, apply = self.engine.receive, self.engine.data, self._apply
        posts = now = None
        self.lock.acquire()
        self._now = None
        try:
            for frame in frames:
                stream_id = data(frame)  # the usual frame, taken in one step
                if stream_id:
                    self._data(stream_id, frame[HEADER_SIZE:], woken)
                    continue
                try:
                    events = receive(frame)
                except MuxError as e:
                    self.connection.log.warning("mux.protocol_error", reason=e.reason, error=str(e))
                    self._failed = BrokenError(str(e), e.reason)
                    break
                for event in events:
                    apply(event, opened, woken)
            if woken:
                posts, now = wake_read(woken)
        finally:
            self.release()
        if posts:
            post_marks(posts)
        if now:
            read_now(now)
        for stream in opened:
            self.on_stream(stream)

    def _apply(self, event: Any, opened: list[StreamTransport], woken: dict[StreamTransport, bool]) -> None:
        """Lock held: one event, onto its stream's transport (``woken``: to wake after)."""
        if isinstance(event, StreamData):
            self._data(event.stream_id, event.data, woken)
        elif isinstance(event, StreamOpened):
            stream = self.streams[event.stream_id] = StreamTransport(self, event.stream_id)
            opened.append(stream)
        elif isinstance(event, (StreamEnded, StreamReset)):
            stream = self.streams.get(event.stream_id)
            if stream is not None and stream.end is None:
                ended = isinstance(event, StreamEnded)
                reason = "peer_closed" if ended else "mux.stream_reset"
                what = "ended" if ended else "reset"
                stream.end = BrokenError(f"the peer {what} channel {event.stream_id}", reason)
                woken[stream] = True
        elif isinstance(event, GoAway):
            self.connection.log.info("mux.go_away_received", code=event.code)
        # StreamAccepted: nothing to do (data may flow before the ACK); Pong: liveness only.

    def _data(self, stream_id: int, data: memoryview, woken: dict[StreamTransport, bool]) -> None:
        """Lock held: a stream's bytes (a view of the frame), into its channel (``woken``: to wake after)."""
        stream = self.streams.get(stream_id)
        if stream is None or stream._shut:  # closed here: credited back, dropped
            self.engine.consumed(stream_id, len(data))
            return
        if stream is self.borrower and self.landing is not None and not stream.inbound:
            at, n = self.landed, len(data)
            if at + n <= len(self.landing):  # else inbound: the view takes it next read
                self.landing[at : at + n] = data
                self.landed = at + n
                self.engine.consumed(stream_id, n)
                woken.setdefault(stream, False)
                return
        att = stream.attachment
        if not stream.inbound and att is not None and att.poll is not None and not att.closed and att.poll.in_poll_thread(att.handler):
            # Its reader runs on this thread, between passes, and holds no view of its buffer
            # now: the bytes go straight in (one copy, not two), credited back as a read is.
            att.link.buffer.feed(data)
            if self._now is None:  # once per read: every channel it fed was heard from then
                self._now = att.connection.clock()
            att.last_recv = self._now
            self.engine.consumed(stream_id, len(data))
        else:
            inbound = stream.inbound
            if isinstance(inbound, tuple):  # its first bytes: see StreamTransport.inbound
                inbound = stream.inbound = deque()
            inbound.append(bytes(data))
        woken.setdefault(stream, False)

    def _wake(self, stream: StreamTransport, *, readable: bool = False, writable: bool = False) -> None:
        """Lock held: tell ``stream``'s waiters and its poll handler (if it has one)."""
        stream._notify()
        att = stream.attachment
        if att is not None and att.poll is not None:
            try:
                att.poll.ready(att.handler, readable=readable, writable=writable)
            except RuntimeError:  # the poll handler shut down: the channel ends with it
                pass

    # -- streams ----------------------------------------------------------------------------

    def may_park(self) -> bool:
        """Asked by the thread reading for its channel as it gives the reading back: whether it
        may leave it parked (``links._lease``), nobody else needing the poll thread's reading.
        So only while its channel is the only one on the connection and its sender owes nothing
        (what it owes waits for the peer's window update, which the poll thread would read; a
        sender waiting for room owes, and nobody else reads the channel). Read without the
        lock: what changes after is told by ``unpark``, which a lent reading remembers."""
        stream = self.borrower
        if stream is None or self._then is not None or len(self.streams) != 1 or self.streams.get(stream.stream_id) is not stream:
            return False  # ... nor while the connection finishes (the peer's ends are the poll thread's)
        att = stream.attachment
        return not (att is not None and att.outbound.backlog)

    def unpark(self) -> None:
        """Something is to wait for what the poll thread reads: a parked reading is given back
        to it, a lent one will be (``ReadLease.unpark``)."""
        lease = getattr(self.att.handler, "lease", None)
        if lease is not None:
            lease.unpark()

    def open_stream(self) -> StreamTransport:
        """A new stream of ours (SYN), as a transport.

        Raises:
            BrokenError: the connection is lost, or the peer said GO_AWAY. ClosedError: we did.
        """
        self.lock.acquire()
        try:
            if self.error is not None:
                raise BrokenError(str(self.error), "mux.connection_lost")
            stream_id = self.engine.open()
            stream = self.streams[stream_id] = StreamTransport(self, stream_id)
            self.unpark()  # its ACK, and whatever comes for it, is the poll thread's to read
            return stream
        finally:
            self.release()

    def accept(self, stream: StreamTransport) -> None:
        """Accept the peer's ``stream`` (ACK): its channel is ready."""
        self.lock.acquire()
        try:
            if self.error is None:
                self.engine.accept(stream.stream_id)
        finally:
            self.release()

    def forget(self, stream: StreamTransport) -> None:
        """``stream`` was closed: what still comes for it is credited back and dropped."""
        self.lock.acquire()
        try:
            if self.streams.get(stream.stream_id) is stream:
                del self.streams[stream.stream_id]
        finally:
            self.release()

    def ping(self) -> None:
        self.lock.acquire()
        try:
            if self.error is None:
                self.engine.ping()
        finally:
            self.release()

    def go_away(self) -> None:
        self.lock.acquire()
        try:
            if self.error is None:
                self.engine.go_away()
        finally:
            self.release()

    def finish(self, close: Callable[[], None]) -> None:
        """GO_AWAY now; ``close()`` once every stream has ended both ways and the engine's
        output is handed on (at once if so already, or if the connection is lost)."""
        self.lock.acquire()
        try:
            lost = self.error is not None
            if not lost:
                self.engine.go_away()
                self._then = close
                self.unpark()  # the peer's ends of the streams are the poll thread's to read
        finally:
            self.release()
        if lost:
            close()

    def lost(self, error: LinksError) -> None:
        """The physical connection ended: every stream ends with ``error`` once read out."""
        self.lock.acquire()
        try:
            self.error = error
            for stream in self.streams.values():
                if stream.end is None:
                    stream.end = error
                self._wake(stream, readable=True, writable=True)
            then, self._then = self._then, None
        finally:
            self.lock.release()
        if then is not None:
            then()
