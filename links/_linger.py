"""``Lingering``: graceful closes that need the poll thread running to end.

A connection closed with bytes still owed turns writer, and a poll handler's ``shutdown``
drains it. Some closes need more than writing: a channels' TCP connection let go by its last
holder (``links.mux``) closes only once every channel on it has delivered what it was told
was COMPLETED, and that takes reading too (the peer's window updates, its FINs). Stopping the
poll thread under it would drop what the channels still owe. Such a close registers here
(``add``), and ``PollHandler.shutdown`` first waits for it (``wait``, within half its
timeout) while the poll thread carries on as usual; then it stops the thread.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

__all__ = ["Lingering"]


class Lingering:
    """The graceful closes under way on one poll handler."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._open: set[threading.Event] = set()

    def add(self) -> Callable[[], None]:
        """A close under way; call what this returns once it is done (more calls: harmless)."""
        done = threading.Event()
        with self._lock:
            self._open.add(done)

        def finished() -> None:
            with self._lock:
                self._open.discard(done)
            done.set()

        return finished

    def wait(self, timeout: float) -> float:
        """Wait until every close under way (and any added meanwhile) is done, ``timeout`` at
        most; the seconds of ``timeout`` left."""
        deadline = time.monotonic() + timeout  # a real wait: the real clock
        while True:
            with self._lock:
                waiting = next(iter(self._open), None)
            left = max(deadline - time.monotonic(), 0.0)
            if waiting is None or not left or not waiting.wait(left):
                return max(deadline - time.monotonic(), 0.0)
