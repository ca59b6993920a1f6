"""Status values: enum members and sentinels, never overloaded ``None`` or ``bool``."""

from __future__ import annotations

import enum
from dataclasses import dataclass

__all__ = ["SendStatus", "AcceptStatus", "TaskStatus", "RetryAfter", "NEED_DATA"]


class SendStatus(enum.Enum):
    """What became of a send.

    ``COMPLETED``: every byte of the frame (or batch) was handed to the kernel.
    ``WOULD_BLOCK``: nothing was written because the socket buffer is full and the timeout
    allowed no waiting. A frame is never half-sent: once its first byte is out, the rest follows.
    """

    COMPLETED = "completed"
    WOULD_BLOCK = "would_block"


class AcceptStatus(enum.Enum):
    """What became of one pending connection on a listener."""

    ACCEPTED = "accepted"
    REJECTED = "rejected"  # the gate was full: the socket was closed at once and logged
    WOULD_BLOCK = "would_block"  # nobody was waiting to be accepted


class TaskStatus(enum.Enum):
    """What a timer task asks for after one run.

    ``COMPLETED``: this run is done; run again one interval from now (fixed delay).
    ``TERMINATE``: never run again.
    """

    COMPLETED = "completed"
    TERMINATE = "terminate"


@dataclass(frozen=True, slots=True)
class RetryAfter:
    """Timer task result: run again after ``seconds`` instead of the usual interval."""

    seconds: float

    def __post_init__(self) -> None:
        if not self.seconds >= 0:
            raise ValueError(f"RetryAfter needs seconds >= 0, got {self.seconds!r}")


class _NeedData:
    """Sentinel: the buffer holds no whole frame yet. Read more bytes and ask again."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "NEED_DATA"


NEED_DATA = _NeedData()
