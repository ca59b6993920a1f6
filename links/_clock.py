"""Clocks: time enters ``links`` only through a ``Clock``, and it is always monotonic.

Wall-clock time jumps (NTP steps, manual changes); a heartbeat scheduled against it can fire
twice or not for an hour. ``time.monotonic`` cannot go backwards. Tests swap in
``links.testing.FakeClock`` and move time by hand.
"""

from __future__ import annotations

import time
from typing import Protocol

__all__ = ["Clock", "MonotonicClock", "deadline_after", "seconds", "time_left", "FOREVER"]

#: Seconds (31 years) beyond which a timeout is no timeout: ``inf`` included, and anything
#: the OS's own timers (``poll``'s milliseconds, a lock's wait) could not hold.
FOREVER = 1e9


class Clock(Protocol):
    """What ``links`` asks of a clock: ``monotonic()`` seconds that never go backwards.

    ``MonotonicClock`` is the production one; ``links.testing.FakeClock`` moves only when a
    test says so. Any object with such a method will do (``Timer(clock=...)``).
    """
    def monotonic(self) -> float:
        """The current time in seconds, from an arbitrary origin; never less than the last value."""


def deadline_after(timeout: float | None) -> float | None:
    """When a wait of ``timeout`` seconds from now ends, on ``time.monotonic``; None: never.

    Raises:
        ValueError: ``timeout`` is nan (every comparison with nan is false, so a wait for nan
            seconds could neither run out nor be told apart from "no timeout": it would hang),
            or negative.
        TypeError: ``timeout`` is not a number.
    """
    if timeout is None:
        return None
    try:
        end = time.monotonic() + timeout
    except TypeError:
        raise TypeError(f"a timeout is None or seconds, not {type(timeout).__name__}") from None
    if end != end:
        raise ValueError("a timeout of nan seconds")
    if timeout < 0:  # a slip (a deadline already past is spelled 0): refused, not taken as 0
        raise ValueError(f"a timeout of {timeout} seconds: it is None or seconds >= 0")
    if timeout > FOREVER:  # inf, or longer than any wait the OS can time: none at all
        return None
    return end


def seconds(timeout: float | None) -> float | None:
    """``timeout`` itself, once it is known to be None or a number of seconds: for a wait
    that takes the timeout as it is (``Condition.wait_for`` spins for ever on nan); None for
    one beyond ``FOREVER``. Raises as ``deadline_after``."""
    return None if deadline_after(timeout) is None else timeout


class MonotonicClock:
    """The production clock: ``time.monotonic``."""

    __slots__ = ()

    def monotonic(self) -> float:
        """``time.monotonic()``: seconds since an arbitrary origin, never going backwards."""
        return time.monotonic()

    def __repr__(self) -> str:
        return "MonotonicClock()"


def time_left(deadline: float | None) -> float | None:
    """Seconds until ``deadline`` (from ``deadline_after``); None when there is none, and
    never below 0.0: the one spelling of "what remains of this wait"."""
    if deadline is None:
        return None
    left = deadline - time.monotonic()
    return left if left > 0.0 else 0.0
