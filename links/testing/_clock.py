"""``FakeClock``: time that moves only when a test says so."""

from __future__ import annotations

import threading

__all__ = ["FakeClock"]


class FakeClock:
    """A ``links.Clock`` whose ``monotonic()`` changes only through ``advance()``.

    Drive a ``links.Timer(clock=fake, thread=False)`` with it: ``fake.advance(1.0)`` then
    ``timer.run_due()`` runs exactly the tasks due in that second, deterministically.
    """

    def __init__(self, start: float = 0.0) -> None:
        self._now = start
        self._lock = threading.Lock()

    def monotonic(self) -> float:
        """The fake time now, in seconds: it moves only through ``advance``. Never raises."""
        return self._now

    def advance(self, seconds: float) -> float:
        """Move time forward (never back); returns the new time."""
        if seconds < 0:
            raise ValueError("monotonic time cannot go backwards")
        with self._lock:
            self._now += seconds
            return self._now

    def __repr__(self) -> str:
        return f"FakeClock({self._now})"
