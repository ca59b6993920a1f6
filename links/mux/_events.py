"""What ``MuxEngine.receive`` reports: one small immutable object per thing the peer did."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Event", "GoAway", "Pong", "StreamAccepted", "StreamData", "StreamEnded", "StreamOpened", "StreamReset"]


@dataclass(frozen=True, slots=True)
class StreamOpened:
    """The peer opened ``stream_id``: answer with ``accept`` or ``reset``."""

    stream_id: int


@dataclass(frozen=True, slots=True)
class StreamAccepted:
    """The peer accepted ``stream_id``, which we opened (its ACK)."""

    stream_id: int


@dataclass(frozen=True, slots=True)
class StreamData:
    """Bytes for ``stream_id``, in order; call ``consumed`` as the application takes them.
    From ``MuxEngine.receive``, a view of the frame received (copy what you keep); from ``feed``, bytes."""

    stream_id: int
    data: bytes | memoryview


@dataclass(frozen=True, slots=True)
class StreamEnded:
    """The peer sent FIN on ``stream_id``: nothing more will come on it."""

    stream_id: int


@dataclass(frozen=True, slots=True)
class StreamReset:
    """The peer sent RST on ``stream_id`` (aborted, or refused when we opened it)."""

    stream_id: int


@dataclass(frozen=True, slots=True)
class Pong:
    """The answer to our ``ping`` with this ``opaque`` value."""

    opaque: int


@dataclass(frozen=True, slots=True)
class GoAway:
    """The peer will accept no new stream; ``code`` is 0 normal, 1 protocol error, 2 internal."""

    code: int


Event = StreamOpened | StreamAccepted | StreamData | StreamEnded | StreamReset | Pong | GoAway
