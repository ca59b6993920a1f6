"""``ReadyMarks``: readiness told to the poll thread for handlers without a file descriptor.

No selector can watch a multiplexed channel (one of many logical connections over one TCP
connection): it becomes readable when the code reading that connection hands it a frame, and
writable when the peer grants it room. That code says so with ``PollHandler.ready()``, and the
poll thread keeps each such *mark* here until its next pass services it.

* Coalesced: a handler marked twice before its turn is serviced once, for both.
* Deferred: the code that marks is usually inside a handler call of its own, holding its
  locks; servicing the marked handler right there could deadlock, and would nest handler calls.
* A pass at a time: marks made while a pass's marks are serviced (a handler marking itself or
  another) wait for the next pass; none is lost and none recurses.

Poll thread only (a mark from another thread comes as one of its commands): nothing here locks.
"""

from __future__ import annotations

from typing import Any

__all__ = ["ReadyMarks"]


class ReadyMarks:
    """Pending marks, one per handler, in the order first marked (see above).

    ``pending`` is a plain dict, never replaced: the poll loop keeps it in a local and tests it
    every pass, which costs next to nothing while no handler is virtual.
    """

    def __init__(self) -> None:
        self.pending: dict[int, list[Any]] = {}  # id(handler) -> [handler, selector events marked]

    def mark(self, handler: Any, events: int) -> None:
        """Note that ``handler`` is ready for ``events`` (``selectors.EVENT_READ``/``EVENT_WRITE`` bits)."""
        entry = self.pending.get(id(handler))
        if entry is None:
            # The entry holds the handler: its id cannot be reused by another while marked.
            self.pending[id(handler)] = [handler, events]
        else:
            entry[1] |= events

    def take(self) -> list[list[Any]]:
        """Every pending ``[handler, events]``, now no longer pending: the caller services them;
        what is marked meanwhile waits for the next call."""
        marks = list(self.pending.values())
        self.pending.clear()
        return marks
