"""``MuxEngine``: one yamux session, Sans-I/O: frames (or bytes) in, events and bytes out.

It knows streams, windows and the order frames go out in; it owns no socket, thread or clock
(a test keeps it so). A driver (``links.mux._driver``) feeds it what the connection read and
writes what ``take_output`` gives; tests drive it with nothing at all.

Streams
    ``open()`` starts one (a SYN, on a WINDOW_UPDATE, goes out first); a peer's SYN is reported
    (``StreamOpened``) and answered when the driver calls ``accept`` (ACK) or ``reset`` (RST:
    refused). The peer's SYNs may come in any order (the reference implementation sends each
    from the thread that opened the stream, so of two opened at once the higher id may come
    first); only a SYN for one of our ids, or for a stream open now, breaks the protocol. ``close`` half-closes (FIN, after what is still queued); once both sides said FIN,
    or either said RST, the stream is forgotten, and frames still in flight for it are ignored.

Flow control (the specification's, per stream; no window for the session as a whole)
    Sending: ``write`` takes no more than the peer's window for that stream allows, so a stream
    whose peer does not read stops its own writer and no one else. Receiving: a DATA frame may
    not exceed what we granted; the driver calls ``consumed`` as the application takes bytes,
    and a WINDOW_UPDATE gives the credit back once half a window was consumed: what a peer may
    have in flight unread is bounded by the window. links.mux grants ``DEFAULT_WINDOW`` (4 MiB,
    announced with the SYN or ACK; Linux grows a TCP receive buffer as far): with 1 MiB or less,
    a bulk transfer's sender stalls on the updates (W3 in benchmarks/RESULTS.md).

Fairness
    ``take_output`` writes control frames first (SYN, ACK, window updates, pings: small, and
    what keeps every stream moving), then data, one chunk (``chunk`` bytes) per stream in turn:
    a stream that queued megabytes gets one chunk out before every other stream with data
    gets its next. A stream with nothing queued may always queue a chunk's worth, whatever the
    others hold (``max_queued`` bounds the rest), so a small message never waits behind a
    large one for more than a turn of chunks. A stream alone with data goes out in frames as
    large as the step (``limit``): fewer frames cost both sides less.

Errors
    A violation of the protocol for the whole connection (a bad version or type, a SYN on a
    stream open now or of the wrong parity, more data than the window, a window past
    2**32-1, a PING or GO_AWAY off stream 0) raises ``MuxError``, with a GO_AWAY (protocol
    error) left in the output for the driver to write before it closes the connection. So
    does a peer that provokes answers (PINGs, refused SYNs) and does not read them: control
    output is bounded (``max_control``: an ACK, two window updates and an end per stream, plus
    ``CONTROL_SLACK``), and a frame that finds more untaken is ``mux.control_flood``.
"""

from __future__ import annotations

from collections import deque

from .._core._buffer import ReceiveBuffer
from .._errors import BrokenError, ClosedError
from . import _wire as wire
from ._events import Event, GoAway, Pong, StreamAccepted, StreamData, StreamEnded, StreamOpened, StreamReset
from ._streams import Queued, StreamState, cut
from ._wire import ACK, DATA, FIN, GO_AWAY, HEADER, HEADER_SIZE, PING, RST, SYN, WINDOW_UPDATE, MuxError

__all__ = [
    "MuxEngine", "DEFAULT_CHUNK", "DEFAULT_WINDOW", "DEFAULT_MAX_QUEUED", "DEFAULT_MAX_STREAMS",
]  # fmt: skip

#: The receive window granted to each stream by default (see Flow control).
DEFAULT_WINDOW = 4 << 20
#: Bytes of one stream's data per turn in ``take_output``: the unit of fairness.
DEFAULT_CHUNK = 64 * 1024
#: Bytes queued across all streams beyond each stream's first chunk (see Fairness).
DEFAULT_MAX_QUEUED = 4 * 1024 * 1024
#: Streams open at once; a peer's SYN beyond it is refused (RST).
DEFAULT_MAX_STREAMS = 4096
CONTROL_SLACK = 64 * 1024  #: Bytes of control frames owed beyond what streams may owe (Errors).

#: A frame this small goes out joined to its header (copying it costs less than a gathered write).
_JOIN = 4096

_unpack = HEADER.unpack_from
_frame = wire.frame


class MuxEngine:
    """One yamux session; see the module docstring.

    Args:
        client: the side that dialed (odd stream ids) or not (even).
        window: the receive window granted to every stream (at least the specification's
            256 KiB; more is announced with the SYN or ACK).
        chunk: bytes of one stream's data per turn (fairness).
        max_streams: streams open at once; the peer's SYN beyond it is refused.
        max_queued: bytes queued across streams (beyond each stream's first chunk).
    """

    def __init__(
        self,
        *,
        client: bool,
        window: int = wire.INITIAL_WINDOW,
        chunk: int = DEFAULT_CHUNK,
        max_streams: int = DEFAULT_MAX_STREAMS,
        max_queued: int = DEFAULT_MAX_QUEUED,
    ) -> None:
        if not wire.INITIAL_WINDOW <= window <= wire.MAX_WINDOW:
            raise ValueError(f"window must be {wire.INITIAL_WINDOW}..{wire.MAX_WINDOW} bytes, not {window!r}")
        if chunk < 1 or max_streams < 1 or max_queued < 0:
            raise ValueError("chunk and max_streams must be positive, max_queued >= 0")
        self.client = client
        self.window = window
        self.chunk = chunk
        self.max_streams = max_streams
        self.max_queued = max_queued
        self.max_control = CONTROL_SLACK + 4 * HEADER_SIZE * max_streams
        self.framer = wire.YamuxFramer(window)
        self.streams: dict[int, StreamState] = {}
        self.queued = 0  # bytes in every stream's ``out``
        self.going_away = False  # we sent GO_AWAY: no new stream either way
        self.peer_going_away = False  # the peer did
        self.ignored = 0  # frames for streams already forgotten (late, and harmless)
        self._next_id = 1 if client else 2
        self._control = bytearray()  # frames without payload, written before any data
        self._turns: deque[int] = deque()  # streams with data queued, in turn order
        self._unblocked: list[int] = []
        self._starved: set[int] = set()  # cut short by ``max_queued``, not by their window
        self._pings = 0
        self._buffer: ReceiveBuffer | None = None  # feed() only

    def __repr__(self) -> str:
        side = "client" if self.client else "server"
        return f"MuxEngine({side}, streams={len(self.streams)}, queued={self.queued})"

    # -- what the peer sent -----------------------------------------------------------------

    def feed(self, data: bytes | bytearray | memoryview) -> list[Event]:
        """Bytes as they came, any split: the events of every whole frame among them (data as
        bytes: the buffer they came in is reused). Raises ``MuxError`` as ``receive``."""
        if self._buffer is None:
            self._buffer = ReceiveBuffer()
        self._buffer.feed(data)
        events: list[Event] = []
        while (frame := self._buffer.next_frame(self.framer)) is not None:
            stream_id = self.data(frame)  # as a driver does: the usual frame in one step
            if stream_id:
                events.append(StreamData(stream_id, bytes(frame[HEADER_SIZE:])))
            else:
                events += [StreamData(e.stream_id, bytes(e.data)) if type(e) is StreamData else e for e in self.receive(frame)]
        return events

    def receive(self, frame: bytes | bytearray | memoryview) -> list[Event]:
        """One whole frame (as ``framer`` cuts them): what it means, as events. A ``StreamData``'s
        data is a view of ``frame`` (no copy): the caller copies what it keeps past the frame's life.

        Raises:
            MuxError: the frame breaks the protocol for the whole connection; a GO_AWAY
                (protocol error) is queued for the driver to write before it closes.
        """
        try:
            if len(self._control) > self.max_control:  # the answers to its last frames are not taken
                raise MuxError(f"{len(self._control)} bytes of answers not taken: the peer does not read", "mux.control_flood")
            version, kind, flags, stream_id, length = _unpack(frame)
            if version != wire.VERSION:
                raise MuxError(f"yamux version {version} (only 0 is defined)", "mux.bad_version")
            if kind == DATA and len(frame) != HEADER_SIZE + length:  # its framer would not buffer it
                raise MuxError(f"DATA frame of {length} bytes exceeds every window ({self.framer.max_data})", "mux.window_exceeded")
            if kind == DATA or kind == WINDOW_UPDATE:
                return self._stream_frame(kind, flags, stream_id, length, frame)
            if kind == PING:
                return self._ping(flags, stream_id, length)
            if kind == GO_AWAY:
                if stream_id != 0:
                    raise MuxError(f"GO_AWAY on stream {stream_id}, not 0", "mux.bad_stream_id")
                self.peer_going_away = True
                return [GoAway(length)]
            raise MuxError(f"unknown yamux frame type {kind}", "mux.bad_type")
        except MuxError:
            self.go_away(wire.GO_AWAY_PROTOCOL_ERROR)
            raise

    def data(self, frame: bytes | bytearray | memoryview) -> int:
        """The common frame in one step: a plain DATA frame (no flags, some bytes, within the
        window) for an open stream, accounted as ``receive`` would; returns its stream id, its
        data being ``frame[HEADER_SIZE:]``. 0 for any other frame, untouched: ``receive`` it."""
        if frame[1] != DATA or frame[0] or frame[2] or frame[3] or len(self._control) > self.max_control:
            return 0
        _, _, _, stream_id, length = _unpack(frame)
        stream = self.streams.get(stream_id)
        if stream is None or not 0 < length <= stream.recv_window or len(frame) != HEADER_SIZE + length or stream.fin_received:
            return 0
        stream.recv_window -= length
        return stream_id

    def _stream_frame(self, kind: int, flags: int, stream_id: int, length: int, frame: bytes | bytearray | memoryview) -> list[Event]:
        if stream_id == 0:
            raise MuxError("DATA or WINDOW_UPDATE on stream 0", "mux.bad_stream_id")
        events: list[Event] = []
        stream = self.streams.get(stream_id)
        if flags & SYN:
            stream = self._peer_opened(stream_id, stream, events)
        if stream is None:
            # Closed here or reset already (frames in flight cross an RST), or refused just
            # now: nothing to do. The credit of a refused stream's data is nobody's.
            self.ignored += 1
            return events
        if flags & ACK and stream_id % 2 == self._next_id % 2:
            events.append(StreamAccepted(stream_id))
        if kind == DATA:
            if length > stream.recv_window:
                raise MuxError(f"stream {stream_id}: {length} bytes against a window of {stream.recv_window}", "mux.window_exceeded")
            if length:
                stream.recv_window -= length
                if not stream.fin_received:  # data after the peer's FIN: dropped, credited back
                    events.append(StreamData(stream_id, memoryview(frame)[HEADER_SIZE:]))  # uncopied: see receive
                else:
                    self.consumed(stream_id, length)
        elif length:
            self._credit(stream_id, stream, length)
        if flags & RST:
            self._forget(stream_id, stream)
            events.append(StreamReset(stream_id))
        elif flags & FIN and not stream.fin_received:
            stream.fin_received = True
            events.append(StreamEnded(stream_id))
            if stream.fin_sent:
                self._forget(stream_id, stream)
        return events

    def _peer_opened(self, stream_id: int, stream: StreamState | None, events: list[Event]) -> StreamState | None:
        """A SYN: a new stream of the peer's, or a refusal (RST) when we take no more."""
        if stream is not None or stream_id % 2 == self._next_id % 2:
            raise MuxError(f"SYN on stream {stream_id}, open already or not the peer's to open", "mux.stream_reused")
        if self.going_away or len(self.streams) >= self.max_streams:
            self._control += _frame(WINDOW_UPDATE, RST, stream_id, 0)
            return None
        stream = self.streams[stream_id] = StreamState(self.window)
        events.append(StreamOpened(stream_id))
        return stream

    def _credit(self, stream_id: int, stream: StreamState, credit: int) -> None:
        window = stream.send_window + (stream.out.size if stream.out else 0) + credit  # the peer's whole grant now
        if window > wire.MAX_WINDOW:
            raise MuxError(f"stream {stream_id}: window grew to {window}, past 2**32-1", "mux.window_overflow")
        stream.send_window += credit
        if stream.blocked:
            stream.blocked = False
            self._unblocked.append(stream_id)

    def _ping(self, flags: int, stream_id: int, opaque: int) -> list[Event]:
        if stream_id != 0:
            raise MuxError(f"PING on stream {stream_id}, not 0", "mux.bad_stream_id")
        if flags & SYN:
            self._control += _frame(PING, ACK, 0, opaque)
            return []
        if flags & ACK:
            return [Pong(opaque)]
        return []

    def consumed(self, stream_id: int, n: int) -> None:
        """The application took ``n`` bytes of ``stream_id``'s data: once half a window was
        taken, the credit goes back to the peer (one WINDOW_UPDATE, not one per read)."""
        stream = self.streams.get(stream_id)
        if stream is None or n <= 0:
            return
        stream.unacked += n
        if stream.unacked >= self.window // 2 and not stream.fin_received:
            credit, stream.unacked = stream.unacked, 0
            stream.recv_window += credit
            self._control += _frame(WINDOW_UPDATE, 0, stream_id, credit)

    # -- what we send -----------------------------------------------------------------------

    def open(self) -> int:
        """A new stream of ours; its SYN is the next frame out. Returns its id.

        Raises:
            ClosedError: we said GO_AWAY. BrokenError: the peer did (``mux.go_away``), or the
                ids ran out (a new connection is needed).
        """
        if self.going_away:
            raise ClosedError("this yamux session is going away: no new stream")
        if self.peer_going_away:
            raise BrokenError("the peer sent GO_AWAY: no new stream", "mux.go_away")
        stream_id = self._next_id
        if stream_id > wire.MAX_WINDOW:
            raise BrokenError("stream ids used up on this connection", "mux.ids_exhausted")
        self._next_id += 2
        self.streams[stream_id] = StreamState(self.window)
        self._control += _frame(WINDOW_UPDATE, SYN, stream_id, self.window - wire.INITIAL_WINDOW)
        return stream_id

    def accept(self, stream_id: int) -> None:
        """Accept the peer's ``stream_id`` (ACK, announcing a window beyond the initial one)."""
        if stream_id in self.streams:
            self._control += _frame(WINDOW_UPDATE, ACK, stream_id, self.window - wire.INITIAL_WINDOW)

    def write(self, stream_id: int, data: bytes | bytearray | memoryview) -> int:
        """Queue ``data`` for ``stream_id``; how many bytes were taken, from the front.

        Fewer than all (maybe 0) when the peer's window for the stream, or ``max_queued``,
        has no more room: ``unblocked()`` names the stream once it has. A stream with nothing
        queued may always queue up to a chunk (within its window).

        Raises:
            ClosedError: the stream was closed or reset here. BrokenError: the peer reset it.
        """
        stream = self.streams.get(stream_id)
        if stream is None:
            raise BrokenError(f"stream {stream_id} was reset", "mux.stream_reset")
        if stream.fin_queued:
            raise ClosedError(f"stream {stream_id} is closed for sending")
        shared = max(self.max_queued - self.queued, 0 if stream.out else self.chunk)
        taken = min(len(data), stream.send_window, shared)
        if taken < len(data):
            stream.blocked = True
            if taken == shared:
                self._starved.add(stream_id)
        if taken:
            out = stream.out
            if not out:
                self._turns.append(stream_id)
                out = stream.out = Queued()
                out.size = 0
            # Kept, not copied, when it cannot change under us (bytes, or a read-only view of
            # them: what the layers above hand down); anything mutable is copied, as a socket would.
            if type(data) is not bytes and not (type(data) is memoryview and data.readonly):
                data = bytes(memoryview(data)[:taken])
            elif taken < len(data):
                data = memoryview(data)[:taken]
            out.append(data)
            out.size += taken
            stream.send_window -= taken
            self.queued += taken
        return taken

    def write_frame(self, stream_id: int, data: bytes | memoryview, limit: int) -> bytes | list[bytes | memoryview] | None:
        """``write`` and ``take_parts`` in one step, for the common case of a send: no output
        waiting (no control frame, no stream's data), the stream open for sending, and its
        window and ``limit`` large enough for all of ``data`` (immutable) in one frame. The
        frame: one ``bytes`` when small, else its header and ``data`` uncopied. None when
        not so: nothing was taken (``write`` it).
        """
        stream = self.streams.get(stream_id)
        n = len(data)
        if self._control or self._turns or stream is None or stream.fin_queued or not 0 < n <= min(stream.send_window, limit):
            return None
        stream.send_window -= n
        header = _frame(DATA, 0, stream_id, n)
        return header + data if n <= _JOIN else [header, data]

    def close(self, stream_id: int) -> None:
        """Half-close ``stream_id``: FIN after what is queued. Once the peer's FIN came too,
        the stream is forgotten."""
        stream = self.streams.get(stream_id)
        if stream is None or stream.fin_queued:
            return
        stream.fin_queued = True
        if not stream.out:
            self._send_fin(stream_id, stream, WINDOW_UPDATE)

    def reset(self, stream_id: int) -> None:
        """Abort ``stream_id`` (or refuse the peer's): RST, and what is queued is dropped."""
        stream = self.streams.get(stream_id)
        if stream is None:
            return
        self._forget(stream_id, stream)
        self._control += _frame(WINDOW_UPDATE, RST, stream_id, 0)

    def ping(self) -> int:
        """Queue a PING; returns its opaque value, which the ``Pong`` event will carry."""
        self._pings = (self._pings + 1) & wire.MAX_WINDOW
        self._control += _frame(PING, SYN, 0, self._pings)
        return self._pings

    def go_away(self, code: int = wire.GO_AWAY_NORMAL) -> None:
        """Say that no new stream will be taken (once); streams open now carry on."""
        if not self.going_away:
            self.going_away = True
            self._control += _frame(GO_AWAY, 0, 0, code)

    @property
    def has_output(self) -> bool:
        """Whether ``take_output`` has frames to give (control frames, or data queued)."""
        return bool(self._control or self._turns)

    def take_output(self, limit: int | None = None) -> bytes:
        """The frames to write next: control frames, then data a chunk per stream in turn,
        until about ``limit`` bytes (None: everything queued). Whole frames only."""
        return b"".join(self.take_parts(limit))

    def take_parts(self, limit: int | None = None, max_parts: int = 512) -> list[bytes | bytearray | memoryview]:
        """``take_output`` as the pieces it is made of, uncopied (a header, then views of the
        writers' buffers), for a scatter-gather write; at most about ``max_parts`` of them."""
        parts: list[bytes | bytearray | memoryview] = []
        size = len(self._control)
        if size:
            parts.append(self._control)
            self._control = bytearray()
        turns, chunk = self._turns, self.chunk
        while turns and (limit is None or size < limit) and len(parts) < max_parts:
            stream_id = turns.popleft()
            stream = self.streams.get(stream_id)
            out = stream.out if stream is not None else ()
            if not out:
                continue  # reset meanwhile
            # A stream alone with data: no one to interleave with, so a frame as large as the step.
            n = min(out.size, chunk if turns or limit is None else max(chunk, limit - size - HEADER_SIZE))
            last = n == out.size
            flags = FIN if last and stream.fin_queued else 0  # type: ignore[union-attr]
            parts.append(_frame(DATA, flags, stream_id, n))
            if last:
                parts += out
                stream.out = ()  # type: ignore[union-attr]
            else:
                cut(out, n, parts)
                out.size -= n
            self.queued -= n
            size += HEADER_SIZE + n
            if not last:
                turns.append(stream_id)
            elif flags:
                self._fin_sent(stream_id, stream)
        return parts

    @property
    def may_unblock(self) -> bool:
        """Whether ``unblocked()`` may name a stream now (cheap: asked after every change)."""
        return bool(self._unblocked or self._starved)

    def unblocked(self) -> list[int]:
        """Streams whose writes were cut short and that can take more now, each named once
        per cut: by a window update, or by queued output taken (``max_queued``)."""
        if self._starved and self.queued <= self.max_queued // 2:
            for stream_id in self._starved:
                stream = self.streams.get(stream_id)
                if stream is not None and stream.blocked and stream.send_window:
                    stream.blocked = False
                    self._unblocked.append(stream_id)
            self._starved.clear()  # still short of window: a window update names them
        names, self._unblocked = self._unblocked, []
        return names

    # -- bookkeeping ------------------------------------------------------------------------

    def _send_fin(self, stream_id: int, stream: StreamState, kind: int) -> None:
        self._control += _frame(kind, FIN, stream_id, 0)
        self._fin_sent(stream_id, stream)

    def _fin_sent(self, stream_id: int, stream: StreamState) -> None:
        stream.fin_sent = True
        if stream.fin_received:
            self._forget(stream_id, stream)

    def _forget(self, stream_id: int, stream: StreamState) -> None:
        self.queued -= stream.out.size if stream.out else 0
        stream.out = ()
        self.streams.pop(stream_id, None)
        self._starved.discard(stream_id)

