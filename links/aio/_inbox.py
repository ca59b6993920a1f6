"""``Inbox``: the received messages of one connection on their way to an event loop, as state.

Sans-I/O: no loop, no thread, no lock here. The driver (``links.aio._bridge``) holds a lock
around every call and does what the answers say; this module decides them.

Two threads meet here. The poll thread *pushes* what it reads; the loop *takes*. Between them:

* **One wake-up per batch.** A push wakes the loop only when a coroutine waits (``waiting``)
  and no wake-up is already on its way (``wake_pending``): the messages of one read, pushed one
  after another, cost the loop one wake-up, and none when nobody waits (the next ``recv``
  finds them).
* **Back-pressure.** At ``high`` messages queued, the push asks to pause reading the
  connection (its socket then fills, and TCP stops the peer); once the loop has taken the queue
  down to ``low``, the take asks to resume. The messages already read when the pause takes hold
  (the rest of that read) are still queued: the queue is bounded by ``high`` plus one read.
* **The end.** ``close(error)`` records why the connection ended; what was queued before is
  still taken first, in order, then every take answers the error.
"""

from __future__ import annotations

from collections import deque
from typing import Any

__all__ = ["Inbox", "EMPTY", "WAKE", "PAUSE", "RESUME"]

#: What ``take`` returns when nothing is queued.
EMPTY: Any = object()

# Orders for the driver, as bits: several may come from one call.
WAKE = 1  # post a wake-up to the loop (call_soon_threadsafe)
PAUSE = 2  # stop reading the connection
RESUME = 4  # read it again


class Inbox:
    """The queue of one connection and its flags (see the module docstring).

    Args:
        high: messages queued at which reading pauses (at least 1).
        low: messages queued at or under which it resumes (less than ``high``, at least 0).
    """

    def __init__(self, high: int = 1024, low: int | None = None) -> None:
        if isinstance(high, bool) or not isinstance(high, int) or high < 1:
            raise ValueError(f"max_queue must be a whole number >= 1, not {high!r}")
        low = high // 2 if low is None else low
        if not 0 <= low < high:
            raise ValueError(f"the resume mark must be in 0..{high - 1}, not {low!r}")
        self.high = high
        self.low = low
        self.queue: deque[Any] = deque()
        self.waiting = False  # a coroutine waits for a message (or the end)
        self.wake_pending = False  # a wake-up is posted and not yet run
        self.paused = False  # reading was asked to pause
        self.error: BaseException | None = None  # why the connection ended; None while open
        self.ended = False
        self.peak = 0  # the longest the queue has been (tests and benchmarks read it)

    def __len__(self) -> int:
        return len(self.queue)

    def push(self, msg: Any) -> int:
        """Poll thread: ``msg`` arrived; the orders for the driver (``WAKE``, ``PAUSE``)."""
        self.queue.append(msg)
        return self.pushed()

    def pushed(self) -> int:
        """The orders after a message was appended to ``queue`` (``push`` without the append:
        a driver may append without its lock and come here only when ``needs_orders()``)."""
        orders = 0
        if self.waiting and not self.wake_pending:
            self.wake_pending = True
            orders = WAKE
        n = len(self.queue)
        if n >= self.high:
            if n > self.peak:
                self.peak = n
            if not self.paused:
                self.paused = True
                orders |= PAUSE
        return orders

    def needs_orders(self) -> bool:
        """Whether a message just appended may call for orders (read *after* the append: a
        taker that is about to wait sets ``waiting`` before it looks at the queue again, so
        one of the two always sees the other)."""
        return self.waiting or len(self.queue) >= self.high

    def close(self, error: BaseException | None) -> int:
        """The connection ended (``error``: what a take raises once the queue is empty);
        ``WAKE`` if a coroutine waits. Only the first call counts."""
        if self.ended:
            return 0
        self.ended = True
        self.error = error
        if self.waiting and not self.wake_pending:
            self.wake_pending = True
            return WAKE
        return 0

    def take(self) -> tuple[Any, int]:
        """Loop: the next message (or ``EMPTY``) and the orders for the driver (``RESUME``).
        While not ``paused`` a driver may ``queue.popleft()`` without its lock instead: no
        order can come of that take."""
        queue = self.queue
        if not queue:
            return EMPTY, 0
        msg = queue.popleft()
        if self.paused and len(queue) <= self.low and not self.ended:
            self.paused = False
            return msg, RESUME
        return msg, 0

    def wait(self) -> Any:
        """Loop: a coroutine is about to wait, the queue being empty; look once more after
        saying so (a message appended meanwhile without the lock): it, or ``EMPTY``."""
        self.waiting = True
        return self.queue.popleft() if self.queue else EMPTY

    def woken(self) -> None:
        """Loop: the posted wake-up ran; the waiters look again (and ``wait`` again if need be)."""
        self.wake_pending = False
        self.waiting = False
