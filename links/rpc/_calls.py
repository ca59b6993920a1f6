"""``Calls``: the runtime around a ``CallTable``: calls opened from any thread, completed by
the receiving thread, timed out by the waiter itself or by the timer.

How a call waits
    A blocking call waits on a lock of its own (``_Waiter``): taken when the call opens,
    released by whoever completes it. That is the cheapest wait CPython has (no condition, no
    future, no handoff to another thread), and its timeout is the caller's own: a call that
    times out retires its id itself, so blocking calls put nothing on the timer.
    ``call_async`` gives a ``concurrent.futures.Future``; its timeout is a deadline in the table,
    and one timer task per connection, set for the earliest deadline, expires them. Cancelling
    the future retires its id.

Races, and who wins
    The table is the referee: whoever takes a call's token out of it (the reply, the timeout,
    the cancel, the end of the connection) completes it; the others find nothing. So a late
    reply is dropped (logged at debug by the caller of ``complete``), never handed to another
    call, and a waiter whose timeout ends just as its reply is taken waits the moment more
    for that reply rather than raising.

``max_in_flight``
    A call that finds the table full waits for room (on a condition of the same lock; only
    such calls wait on it) within its timeout, or raises ``InFlightLimit`` at once when its
    timeout is 0. A call that got no room in time raises ``CallTimeout``: it was never sent.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Hashable
from concurrent.futures import Future, InvalidStateError
from typing import Any

from .._clock import deadline_after
from .._core._status import RetryAfter, TaskStatus
from .._errors import LinksError
from .._log import get_logger
from .._timer import Timer, TimerHandle
from ._errors import CallTimeout, InFlightLimit
from ._table import CallTable

__all__ = ["Calls", "Waiter", "CallFuture"]

_allocate_lock = threading.Lock
_monotonic = time.monotonic
_log = get_logger("rpc")


class Waiter:
    """What a blocking call waits on: a lock held until the call is completed."""

    __slots__ = ("lock", "error", "value")

    def __init__(self) -> None:
        self.lock = _allocate_lock()
        self.lock.acquire()
        self.error: BaseException | None = None
        self.value: Any = None


class CallFuture(Future):  # type: ignore[type-arg]
    """The future of a call: cancelling it retires the call (no done-callback per call)."""

    _call: tuple[Calls, Hashable] | None = None

    def cancel(self) -> bool:
        """Stop waiting for the reply: the call's id is retired, a late reply dropped.

        Returns:
            False if the call is done already (as ``Future.cancel``), else True.
        """
        if not super().cancel():
            return False
        if self._call is not None:
            calls, call_id = self._call
            calls.retire(call_id, self)
        return True


def _settle(token: Any, error: BaseException | None, value: Any) -> None:
    """Complete a token taken out of the table (by whoever took it: only once)."""
    if type(token) is Waiter:
        token.error = error
        token.value = value
        token.lock.release()
        return
    try:
        if error is None:
            token.set_result(value)
        else:
            token.set_exception(error)
    except InvalidStateError:
        pass  # cancelled by its caller just now: its done-callback retires nothing, as it should


class Calls:
    """The pending calls of one connection and the threads around them (module docstring).

    Args:
        max_in_flight: the most calls pending at once.
        timer: runs the deadlines of ``call_async`` (the default timer when None).
    """

    def __init__(self, max_in_flight: int = 10_000, timer: Timer | None = None) -> None:
        self.table = CallTable(max_in_flight)
        self.lock = threading.Lock()
        self._room = threading.Condition(self.lock)
        self._room_waiters = 0
        self.timer = timer
        self._alarm: TimerHandle | None = None
        self._alarm_at: float | None = None
        #: Set once no call can be made any more: makes the error new calls raise.
        self.ended: Callable[[], LinksError] | None = None

    # -- opening (any thread; ``lock`` held by the caller) ----------------------------------

    def admit(self, timeout: float | None) -> None:
        """Return once a call may be added: not ended, not full (``lock`` held; it waits).

        Raises:
            ClosedError, BrokenError: the connection ended for good.
            InFlightLimit: full, and ``timeout`` is 0.
            CallTimeout: still full when ``timeout`` ran out.
        """
        if self.ended is not None:
            raise self.ended()
        table = self.table
        if not table.full:
            return
        if timeout == 0:
            raise InFlightLimit(f"{table.max_in_flight} calls in flight (max_in_flight)")
        deadline = deadline_after(timeout)
        self._room_waiters += 1
        try:
            while table.full:
                left = None if deadline is None else deadline - _monotonic()
                if left is not None and left <= 0:
                    raise CallTimeout(f"no room among {table.max_in_flight} calls in flight in time: not sent")
                self._room.wait(left)
                if self.ended is not None:
                    raise self.ended()
        finally:
            self._room_waiters -= 1

    def open_future(
        self, call_id: Hashable | None, timeout: float | None, *, wait: bool = True
    ) -> tuple[Hashable, Future[Any]]:
        """Open a call completed through a future (``lock`` NOT held; it takes it); with
        ``wait`` False a full table raises ``InFlightLimit`` at once, whatever ``timeout``.

        Returns:
            The call's id (a fresh one when ``call_id`` is None) and its future.

        Raises:
            What ``admit`` raises; ``DuplicateId``: ``call_id`` is pending already.
        """
        future = CallFuture()
        deadline = None
        if timeout is not None:
            timer = self.timer_or_default()
            deadline = timer.clock.monotonic() + timeout
        with self.lock:
            self.admit(timeout if wait else 0)
            if call_id is None:
                call_id = self.table.open(future, deadline)
            else:
                self.table.add(call_id, future, deadline)
            if deadline is not None and (self._alarm_at is None or deadline < self._alarm_at):
                self._arm(deadline)
        future._call = (self, call_id)
        return call_id, future

    def open_waiter(self, call_id: Hashable | None, timeout: float | None) -> tuple[Hashable, Waiter]:
        """Open a call a thread will ``wait`` for (``lock`` NOT held); as ``open_future``."""
        waiter = Waiter()
        with self.lock:
            if self.ended is not None or self.table.full:
                self.admit(timeout)
            if call_id is None:
                call_id = self.table.open(waiter)
            else:
                self.table.add(call_id, waiter)
        return call_id, waiter

    def wait(self, call_id: Hashable, waiter: Waiter, deadline: float | None) -> Any:
        """Wait for the call's outcome until ``deadline`` (``time.monotonic``).

        Raises:
            CallTimeout: no reply in time (the id is retired); the call's error otherwise.
        """
        if deadline is None:
            waiter.lock.acquire()
        else:
            left = deadline - _monotonic()
            if not (left > 0 and waiter.lock.acquire(timeout=left)):
                if self.retire(call_id, waiter) is not None:
                    raise CallTimeout(f"no reply to call {call_id!r} in time")
                waiter.lock.acquire()  # the reply was taken just now: it is being handed over
        if waiter.error is not None:
            error, waiter.error = waiter.error, None
            raise error
        return waiter.value

    # -- finishing ------------------------------------------------------------------------

    def complete(self, call_id: Hashable, error: BaseException | None, value: Any) -> bool:
        """Complete the pending call ``call_id``; False if there is none (unknown or retired)."""
        with self.lock:
            token = self.table.pending.pop(call_id, None)
            if token is None:
                return False
            if self._room_waiters:
                self._room.notify()
        _settle(token, error, value)
        return True

    def retire(self, call_id: Hashable, token: Any = None) -> Any:
        """Forget a call (timed out, cancelled, its send failed); its token, or None if gone."""
        with self.lock:
            token = self.table.retire(call_id, token)
            if token is not None and self._room_waiters:
                self._room.notify()
        return token

    def fail(self, call_id: Hashable, token: Any, error: BaseException) -> None:
        """Fail a call whose request could not be sent (if it is still pending)."""
        if self.retire(call_id, token) is not None:
            _settle(token, error, None)

    def fail_all(self, make_error: Callable[[], BaseException], *, end: Callable[[], LinksError] | None = None) -> int:
        """Fail every pending call with a fresh ``make_error()`` each; with ``end``, refuse every
        later call too (``end()`` makes the error). Returns how many were pending."""
        with self.lock:
            if end is not None:
                self.ended = end
            tokens = self.table.fail_all()
            self._room.notify_all()
            alarm, self._alarm, self._alarm_at = self._alarm, None, None
        if alarm is not None:
            alarm.cancel()
        for token in tokens:
            _settle(token, make_error(), None)
        return len(tokens)

    # -- deadlines of futures (timer thread) ----------------------------------------------

    def timer_or_default(self) -> Timer:
        if self.timer is None:
            from .._runtime import default_timer

            self.timer = default_timer()
        return self.timer

    def _arm(self, deadline: float) -> None:
        """Have the timer expire calls at ``deadline`` (``lock`` held)."""
        if self._alarm is not None:
            self._alarm.cancel()
        timer = self.timer_or_default()
        self._alarm_at = deadline
        delay = max(0.0, deadline - timer.clock.monotonic())
        self._alarm = timer.schedule("rpc.deadlines", 1.0, self._expire, delay=delay)

    def _expire(self) -> TaskStatus | RetryAfter:
        timer = self.timer_or_default()
        now = timer.clock.monotonic()
        with self.lock:
            tokens = self.table.expire(now)
            if tokens and self._room_waiters:
                self._room.notify_all()
            upcoming = self.table.next_deadline
            self._alarm_at = upcoming
            if upcoming is None:
                self._alarm = None
        for token in tokens:
            _settle(token, CallTimeout("no reply in time"), None)
        if upcoming is None:
            return TaskStatus.TERMINATE
        return RetryAfter(max(upcoming - now, 0.0))

