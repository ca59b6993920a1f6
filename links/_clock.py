"""Clocks: time enters ``links`` only through a ``Clock``, and it is always monotonic.

Wall-clock time jumps (NTP steps, manual changes); a heartbeat scheduled against it can fire
twice or not for an hour. ``time.monotonic`` cannot go backwards. Tests swap in
``links.testing.FakeClock`` and move time by hand.
"""

from __future__ import annotations

import time
from typing import Protocol

__all__ = ["Clock", "MonotonicClock"]


class Clock(Protocol):
    def monotonic(self) -> float: ...


class MonotonicClock:
    """The production clock: ``time.monotonic``."""

    __slots__ = ()

    def monotonic(self) -> float:
        return time.monotonic()

    def __repr__(self) -> str:
        return "MonotonicClock()"
