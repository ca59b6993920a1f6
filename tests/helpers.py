"""Shared test helpers: waiting for log events that other threads emit.

Events come from the poll and timer threads, so a test cannot just look at the captured list
right after acting: it waits on a condition, bounded, for the event to show up.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

import structlog

WAIT = 5.0


class LogWatch:
    """A ``capture_logs`` processor that tests can wait on."""

    def __init__(self, timeout: float = WAIT) -> None:
        self._cond = threading.Condition()
        self.timeout = timeout
        self.entries: list[dict] = []

    def __call__(self, logger, method, event_dict):
        with self._cond:
            self.entries.append(dict(event_dict))
            self._cond.notify_all()
        return event_dict

    def matching(self, event: str, **fields) -> list[dict]:
        """Every entry of ``event`` whose fields include ``fields``."""
        with self._cond:
            return [e for e in self.entries if e["event"] == event and fields.items() <= e.items()]

    def wait(self, event: str, count: int = 1, **fields) -> dict | None:
        """The first entry of ``event`` with ``fields`` once ``count`` of them were logged,
        or None if that did not happen within the timeout."""
        with self._cond:
            found = self._cond.wait_for(lambda: len(self.matching(event, **fields)) >= count, self.timeout)
        return self.matching(event, **fields)[0] if found else None

    def wait_count(self, event: str, count: int) -> bool:
        """Whether ``count`` entries of ``event`` were logged within the timeout."""
        return self.wait(event, count) is not None

    def one(self, event: str, **fields) -> dict:
        """The single entry of ``event`` with ``fields`` (asserting there is exactly one)."""
        found = self.matching(event, **fields)
        assert len(found) == 1, f"{event} {fields}: {found} in {self.entries}"
        return found[0]


@contextmanager
def watch_logs(timeout: float = WAIT) -> Iterator[LogWatch]:
    """Capture structlog events for the block, waitable through the yielded ``LogWatch``."""
    watch = LogWatch(timeout)
    with structlog.testing.capture_logs(processors=[watch]):
        yield watch
