"""``CallTable``: which calls are pending, by id (Sans-I/O: no threads, no clock).

The runtime (``links.rpc._calls``) keeps one per connection, under its own lock, and completes
what the table hands back: the table holds an opaque *token* per pending call (the thing that
wakes the caller) and never completes anything itself.

* ``open(token, deadline)`` gives a new id (msgpack-rpc ids are u32, wrapping around and
  skipping ids still pending) and ``add(id, token, deadline)`` takes one the caller chose
  (a protocol with ids of its own). Either refuses past ``max_in_flight`` (``full``).
* ``complete(id)`` takes the token of the call a reply answers; None for an id that is not
  pending (never sent, or retired): the reply is then dropped.
* ``retire(id)`` forgets a call that timed out or was cancelled, so a late reply finds
  nothing; ``retire(id, token)`` only if it is still that token's call.
* ``expire(now)`` retires every call whose deadline passed; ``next_deadline`` says when to
  ask again. Deadlines are optional (a caller that waits with a timeout of its own retires
  its call itself). Finished calls leave their deadline entries behind, dropped lazily and
  swept once they outnumber the live ones, so the heap stays within twice the pending calls.
* ``was_retired(id)``: whether a reply to ``id`` is late (its call retired lately) rather
  than for a call never made; the last ``RETIRED_KEPT`` ids are remembered.
* ``fail_all()`` empties the table (the connection ended) and returns every token.
"""

from __future__ import annotations

import heapq
from collections.abc import Hashable
from typing import Any

__all__ = ["CallTable", "TableFull", "DuplicateId", "RETIRED_KEPT"]

_MAX_ID = 2**32 - 1
#: How many retired ids are remembered, to tell a late reply from one that was never asked for.
RETIRED_KEPT = 4096


class TableFull(Exception):
    """``max_in_flight`` calls are pending."""


class DuplicateId(ValueError):
    """A call with this id is already pending."""


class CallTable:
    """The pending calls of one connection (see the module docstring).

    Args:
        max_in_flight: the most calls pending at once.
    """

    __slots__ = ("pending", "max_in_flight", "_next", "_heap", "_seq", "_retired")

    def __init__(self, max_in_flight: int = 10_000) -> None:
        if max_in_flight < 1:
            raise ValueError("max_in_flight must be at least 1")
        self.max_in_flight = max_in_flight
        #: id -> token, for every pending call.
        self.pending: dict[Hashable, Any] = {}
        self._next = 0
        self._heap: list[tuple[float, int, Hashable, Any]] = []  # (deadline, seq, id, token)
        self._seq = 0
        self._retired: dict[Hashable, None] = {}  # the latest ids retired, oldest first

    def __len__(self) -> int:
        return len(self.pending)

    @property
    def full(self) -> bool:
        """Whether ``max_in_flight`` calls are pending."""
        return len(self.pending) >= self.max_in_flight

    def open(self, token: Any, deadline: float | None = None) -> int:
        """A fresh u32 id for a new call holding ``token``.

        Raises:
            TableFull: ``max_in_flight`` calls are pending.
        """
        pending = self.pending
        if len(pending) >= self.max_in_flight:
            raise TableFull(self.max_in_flight)
        msgid = self._next
        while msgid in pending:  # only after a wrap-around with a call pending for ages
            msgid = msgid + 1 if msgid < _MAX_ID else 0
        self._next = msgid + 1 if msgid < _MAX_ID else 0
        pending[msgid] = token
        if deadline is not None:
            self._push(deadline, msgid, token)
        return msgid

    def add(self, call_id: Hashable, token: Any, deadline: float | None = None) -> None:
        """Record a call whose id the caller chose.

        Raises:
            TableFull: ``max_in_flight`` calls are pending.
            DuplicateId: a call with ``call_id`` is pending already.
        """
        pending = self.pending
        if call_id in pending:
            raise DuplicateId(f"a call with id {call_id!r} is pending already")
        if len(pending) >= self.max_in_flight:
            raise TableFull(self.max_in_flight)
        pending[call_id] = token
        if deadline is not None:
            self._push(deadline, call_id, token)

    def _push(self, deadline: float, call_id: Hashable, token: Any) -> None:
        self._seq += 1
        heapq.heappush(self._heap, (deadline, self._seq, call_id, token))
        self._sweep()

    def complete(self, call_id: Hashable) -> Any:
        """The token of the pending call ``call_id``, which is no longer pending; None if it was
        not (an unknown id, or a call retired already)."""
        return self.pending.pop(call_id, None)

    def retire(self, call_id: Hashable, token: Any = None) -> Any:
        """Forget the pending call ``call_id`` (timed out, cancelled, its send failed); with
        ``token``, only if it is still that token's call. Returns the token, or None if there
        was nothing to retire (a reply won the race)."""
        pending = self.pending
        current = pending.get(call_id)
        if current is None or (token is not None and current is not token):
            return None
        del pending[call_id]
        self._remember(call_id)
        return current

    def _remember(self, call_id: Hashable) -> None:
        retired = self._retired
        retired[call_id] = None
        if len(retired) > RETIRED_KEPT:
            del retired[next(iter(retired))]

    def was_retired(self, call_id: Hashable) -> bool:
        """Whether ``call_id`` is among the last ``RETIRED_KEPT`` calls retired (timed out,
        cancelled, failed): a reply to it is late, not unknown."""
        return call_id in self._retired

    def expire(self, now: float) -> list[Any]:
        """Retire every pending call whose deadline is ``now`` or earlier; their tokens, in
        deadline order."""
        heap, pending, out = self._heap, self.pending, []
        while heap and heap[0][0] <= now:
            _, _, call_id, token = heapq.heappop(heap)
            if pending.get(call_id) is token:
                del pending[call_id]
                self._remember(call_id)
                out.append(token)
        self._sweep()
        return out

    @property
    def next_deadline(self) -> float | None:
        """The earliest deadline among the entries kept (maybe of a call finished since: asking
        then retires nothing and tells the next), or None."""
        self._sweep()
        return self._heap[0][0] if self._heap else None

    def _sweep(self) -> None:
        """Drop the entries of finished calls once they outnumber the live ones."""
        heap = self._heap
        if len(heap) > 64 and len(heap) > 2 * len(self.pending):
            pending = self.pending
            heap[:] = [e for e in heap if pending.get(e[2]) is e[3]]
            heapq.heapify(heap)

    def fail_all(self) -> list[Any]:
        """Empty the table: every pending call's token (the connection ended)."""
        tokens = list(self.pending.values())
        for call_id in list(self.pending)[-RETIRED_KEPT:]:
            self._remember(call_id)
        self.pending.clear()
        self._heap.clear()
        return tokens
