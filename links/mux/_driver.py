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
    own channel, queue while one of them writes). Order: a channel's write lock, then the
    physical write lock, then the driver's lock, never the reverse; no hook or callback runs
    under either of the last two, and nobody waits for the physical write lock here.

Readiness
    A stream's transport has no fd. Where a socket would turn readable or writable, the
    driver notifies the stream's condition (a user thread waiting in ``recv`` or for room)
    and marks the channel's handler ready on the poll thread (``PollHandler.ready``), which
    reads or writes it on a later pass, never from inside this one.

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

from .._core._messenger import Messenger
from .._core._protocol import Protocol
from .._errors import BrokenError, LinksError
from ._engine import MuxEngine, StreamData, StreamEnded, StreamOpened, StreamReset, GoAway
from ._stream import StreamTransport
from ._wire import MuxError, YamuxFramer

if TYPE_CHECKING:
    from .._attachment import Attachment
    from .._core._conid import ConId

__all__ = ["MuxDriver", "MuxLink", "MuxSettings"]

#: Bytes of engine output handed to the physical outbound path per step (one ``sendmsg``):
#: a system call per 256 KiB cost twice the CPU per byte of one per MiB (measured on W3).
_PUMP = 1 << 20


class MuxSettings:
    """What both ends of a physical connection's engine are made with (``MuxEngine``'s args)."""

    def __init__(self, *, window: int, max_streams: int, chunk: int, keepalive: float | None) -> None:
        self.window = window
        self.max_streams = max_streams
        self.chunk = chunk
        self.keepalive = keepalive

    def engine(self, client: bool) -> MuxEngine:
        return MuxEngine(client=client, window=self.window, chunk=self.chunk, max_streams=self.max_streams)


class _Frames(Messenger[Any, Any]):
    """Whole yamux frames both ways, uncopied: the engine reads each during its dispatch. A
    read's frames are one message, a list, so the driver routes them under one lock and
    wakes each stream once per read, not once per frame."""

    def serialize(self, msg: Any) -> Any:
        return msg

    def deserialize(self, payload: Any) -> Any:
        return [payload]

    def deserialize_many(self, payloads: list[Any]) -> list[Any]:
        return [payloads]


class MuxLink(Protocol[Any, Any]):
    """The physical connection's protocol: a fresh driver per TCP connection (each starts a
    new yamux session: streams do not survive a cut unless a resumable session carries them).

    Args:
        client: the side that dialed.
        settings: the engine's.
        on_stream: called (poll thread, no lock held) with each stream the peer opens; it
            makes a channel over it, or refuses it (``StreamTransport.abort``).
        on_driver: called with each new driver (``(driver, None)``), and with the one lost
            when its connection ends (``(None, driver)``).
    """

    messenger = _Frames()

    def __init__(
        self, client: bool, settings: MuxSettings, on_stream: Callable[[StreamTransport], None],
        on_driver: Callable[[MuxDriver | None, MuxDriver | None], None],
    ) -> None:  # fmt: skip
        self.client = client
        self.settings = settings
        self.framer = YamuxFramer(settings.window)
        self.on_stream = on_stream
        self.on_driver = on_driver
        self.driver: MuxDriver | None = None
        self.heartbeat_interval = settings.keepalive  # a PING that often

    def on_connect(self, con: Any) -> None:
        self.driver = MuxDriver(con, self.settings.engine(self.client), self.on_stream)
        self.on_driver(self.driver, None)
        if self.client:
            self.driver.ping()  # something at once: a server's deadline for a first frame

    def on_recv(self, msg: Any) -> None:
        assert self.driver is not None
        self.driver.received(msg)

    def on_disconnect(self, con_id: ConId) -> None:
        driver, self.driver = self.driver, None
        if driver is not None:
            driver.lost(BrokenError(f"{con_id}: the connection under the channels was lost", "mux.connection_lost"))
            self.on_driver(None, driver)

    def send_heartbeat(self, con: Any) -> None:
        if self.driver is not None:
            self.driver.ping()


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
            if not write_lock.acquire(False):
                return  # its holder writes ours too: it looks at the engine again once it lets go
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
            while (engine._control or engine._turns) and out.has_room():
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
        """Poll thread: the yamux frames of one read off the physical connection, under one
        lock; each stream they touched is woken once, at the end."""
        opened: list[StreamTransport] = []
        woken: dict[StreamTransport, bool] = {}  # stream -> whether its writers wake too
        receive, apply = self.engine.receive, self._apply
        self.lock.acquire()
        self._now = None
        try:
            for frame in frames:
                try:
                    events = receive(frame)
                except MuxError as e:
                    self.connection.log.warning("mux.protocol_error", reason=e.reason, error=str(e))
                    self._failed = BrokenError(str(e), e.reason)
                    break
                for event in events:
                    apply(event, opened, woken)
            for stream, writable in woken.items():
                self._wake(stream, readable=True, writable=writable)
        finally:
            self.release()
        for stream in opened:
            self.on_stream(stream)

    def _apply(self, event: Any, opened: list[StreamTransport], woken: dict[StreamTransport, bool]) -> None:
        """Lock held: one event, onto its stream's transport (``woken``: to wake after)."""
        if isinstance(event, StreamData):
            self._data(event, woken)
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

    def _data(self, event: StreamData, woken: dict[StreamTransport, bool]) -> None:
        """Lock held: a stream's bytes, into its channel (``woken``: to wake after)."""
        stream, data = self.streams.get(event.stream_id), event.data  # data: a view of the frame
        if stream is None or stream._shut:  # closed here: credited back, dropped
            self.engine.consumed(event.stream_id, len(data))
            return
        att = stream.attachment
        if not stream.inbound and att is not None and att.poll is not None and not att.closed and att.poll.in_poll_thread(att.handler):
            # Its reader runs on this thread, between passes, and holds no view of its buffer
            # now: the bytes go straight in (one copy, not two), credited back as a read is.
            att.link.buffer.feed(data)
            if self._now is None:  # once per read: every channel it fed was heard from then
                self._now = att.connection.clock()
            att.last_recv = self._now
            self.engine.consumed(event.stream_id, len(data))
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
