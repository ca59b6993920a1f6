"""Shared test helpers: the everyday protocol, and waiting for log events other threads emit.

Events come from the poll and timer threads, so a test cannot just look at the captured list
right after acting: it waits on a condition, bounded, for the event to show up.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import structlog

import links

WAIT = 5.0


class Json(links.Protocol):
    """The tests' everyday protocol: JSON messages behind a 4-byte length, 64 KiB at most."""

    framer = links.LengthPrefixFramer(header_size=4, max_frame_size=1 << 16)
    messenger = links.JsonMessenger()


class LogWatch:
    """A ``capture_logs`` processor that tests can wait on. Each entry also gets ``t``, the
    ``time.monotonic()`` at which it was logged, for tests that measure between events."""

    def __init__(self, timeout: float = WAIT) -> None:
        self._cond = threading.Condition()
        self.timeout = timeout
        self.entries: list[dict] = []

    def __call__(self, logger, method, event_dict):
        with self._cond:
            self.entries.append({**event_dict, "t": time.monotonic()})
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

    def expect(self, event: str, count: int = 1, timeout: float | None = None, **fields) -> dict:
        """The ``count``-th entry of ``event`` with ``fields``, waiting for it; fails the test
        (naming what was seen instead) if it does not come within the timeout."""
        timeout = self.timeout if timeout is None else timeout
        with self._cond:
            found = self._cond.wait_for(lambda: len(self.matching(event, **fields)) >= count, timeout)
            entries = self.matching(event, **fields)
        assert found, f"no {count} x {event} {fields} within {timeout}s; saw {[e['event'] for e in self.entries]}"
        return entries[count - 1]

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


def waiting_call(call) -> tuple[threading.Thread, list[BaseException]]:
    """``call()`` started on a thread of its own (a user thread blocked in links); the
    ``links.LinksError`` it ends with lands in the list. Join the thread, then look."""
    raised: list[BaseException] = []

    def run() -> None:
        try:
            call()
        except links.LinksError as e:
            raised.append(e)

    thread = threading.Thread(target=run)
    thread.start()
    return thread, raised
