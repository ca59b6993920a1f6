"""``Timer``: one thread that runs scheduled tasks (heartbeats, handshake deadlines).

Tasks
    A task is a zero-argument callable scheduled with ``schedule(name, interval, task)``.
    After each run it answers what should happen next:

    * ``TaskStatus.COMPLETED``: run again ``interval`` seconds after this run *finished*
      (fixed delay). Fixed delay rather than fixed rate, because after a stall (a GC pause,
      a blocked send) fixed rate would fire a burst of catch-up heartbeats at once, which
      helps nobody.
    * ``TaskStatus.TERMINATE``: never again.
    * ``RetryAfter(seconds)``: run again after ``seconds`` instead of the interval.

    A task that raises is logged (``timer.task_failed``) and not run again: a task that
    failed once will likely fail every time, and a log line per interval forever is worse
    than one clear line. A task scheduled with ``on_stop`` has it called once if the timer
    shuts down before the task ended: what the task would have released is released then.

The heap
    ``(deadline, seq, entry)`` tuples: ``seq`` breaks ties in scheduling order and keeps the
    heap from ever comparing two entries. Cancelling only marks the entry; it is dropped when
    it reaches the top (lazy deletion), and the heap is rebuilt without dead entries when they
    outnumber live ones, so many short-lived connections cannot grow it without bound.

Time
    Deadlines come from the injected ``Clock`` (monotonic). With ``thread=False`` no thread is
    started and the owner calls ``run_due()`` itself: that is how tests drive heartbeats
    deterministically with a ``FakeClock``.

Threads
    The timer thread never touches the selector; tasks reach connections through their
    thread-safe senders. ``shutdown()`` stops the thread; a default timer is created lazily
    (``links.default_timer()``) and shut down at interpreter exit.
"""

from __future__ import annotations

import heapq
import itertools
import threading
from collections.abc import Callable
from typing import Union

from ._clock import Clock, MonotonicClock
from ._core._status import RetryAfter, TaskStatus
from ._log import get_logger
from ._threads import runtime_thread

__all__ = ["Timer", "TimerHandle", "TaskResult"]

TaskResult = Union[TaskStatus, RetryAfter]

_log = get_logger("timer")


def _never_run() -> TaskStatus:
    return TaskStatus.TERMINATE


def _stopped(on_stop: Callable[[], None]) -> None:
    try:
        on_stop()
    except Exception as e:
        _log.error("timer.on_stop_failed", error=repr(e))


class TimerHandle:
    """A scheduled task; ``cancel()`` it to stop future runs (idempotent)."""

    __slots__ = ("name", "interval", "task", "on_stop", "cancelled", "_timer", "_queued")

    def __init__(
        self, timer: Timer, name: str, interval: float, task: Callable[[], TaskResult],
        on_stop: Callable[[], None] | None = None,
    ) -> None:  # fmt: skip
        self._timer = timer
        self.name = name
        self.interval = interval
        self.task = task
        self.on_stop = on_stop  # called once if the timer stops with the task still to run
        self.cancelled = False
        self._queued = False  # in the heap (not running, finished or forgotten by shutdown)

    def cancel(self) -> None:
        """Stop the task: it runs no more (a run already under way finishes). Idempotent, any
        thread; returns None and never raises.
        """
        self._timer._cancel(self)

    def __repr__(self) -> str:
        return f"TimerHandle({self.name!r}, interval={self.interval}, cancelled={self.cancelled})"


class Timer:
    """Runs tasks at monotonic deadlines on one thread (or on demand with ``thread=False``).

    Args:
        clock: the time source (``MonotonicClock`` by default).
        thread: start a thread on first ``schedule`` (default), or leave running to
            ``run_due()`` calls.
        name: the thread's name.
    """

    def __init__(self, clock: Clock | None = None, *, thread: bool = True, name: str = "links-timer") -> None:
        self.clock = MonotonicClock() if clock is None else clock
        self._monotonic = self.clock.monotonic  # bound once: every connection's clock (links._connection)
        self.name = name
        self._use_thread = thread
        self._heap: list[tuple[float, int, TimerHandle]] = []
        self._seq = itertools.count()
        self._cond = threading.Condition(threading.Lock())
        self._thread: threading.Thread | None = None
        self._stopped = False
        self._dead = 0  # cancelled entries still in the heap

    # -- public ---------------------------------------------------------------------------

    def schedule(
        self, name: str, interval: float, task: Callable[[], TaskResult], *, delay: float | None = None,
        on_stop: Callable[[], None] | None = None,
    ) -> TimerHandle:  # fmt: skip
        """Run ``task`` after ``delay`` (default: ``interval``), then as it asks; ``on_stop()``
        once if the timer is shut down while the task is still to run (it releases what the
        task would have: a task that ended, or was cancelled, is not told).

        Raises:
            RuntimeError: the timer was shut down.
            ValueError: ``interval`` is not a positive number of seconds, or ``delay`` is nan
                (a nan in the heap would disorder every other task's turn).
        """
        if not interval > 0:
            raise ValueError(f"interval must be a positive number of seconds, not {interval!r}")
        if delay is not None and delay != delay:
            raise ValueError("a delay of nan seconds")
        handle = TimerHandle(self, name, interval, task, on_stop)
        first = interval if delay is None else delay
        with self._cond:
            if self._stopped:
                raise RuntimeError(f"{self.name} is shut down")
            self._push(self.clock.monotonic() + first, handle)
            if self._use_thread and self._thread is None:
                self._thread = threading.Thread(target=self._run, name=self.name, daemon=True)
                self._thread.start()
        return handle

    def run_due(self) -> int:
        """Run every task whose deadline has passed (on the calling thread); how many ran.

        Each task runs at most once per call, so one that asks for ``RetryAfter(0)`` cannot
        keep this loop going forever: it runs again on the next call.
        """
        ran = 0
        with self._cond:
            horizon = next(self._seq)  # entries scheduled from here on wait for the next call
        while True:
            with self._cond:
                handle = self._pop_due(self.clock.monotonic(), horizon)
            if handle is None:
                return ran
            self._execute(handle)
            ran += 1

    def next_deadline(self) -> float | None:
        """The earliest live deadline, or None when nothing is scheduled."""
        with self._cond:
            self._drop_dead_top()
            return self._heap[0][0] if self._heap else None

    @property
    def task_count(self) -> int:
        """How many tasks are scheduled (cancelled ones excluded)."""
        with self._cond:
            return len(self._heap) - self._dead

    def shutdown(self, timeout: float = 5.0) -> None:
        """Stop the thread and forget every task. Idempotent."""
        with self._cond:
            self._stopped = True
            stops = [e[2].on_stop for e in self._heap if e[2].on_stop is not None and not e[2].cancelled]
            for entry in self._heap:
                entry[2]._queued = False
            self._heap.clear()
            self._dead = 0
            self._cond.notify_all()
            thread = self._thread
        for on_stop in stops:
            _stopped(on_stop)
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)

    @property
    def is_shutdown(self) -> bool:
        """Whether ``shutdown()`` ran: True once the timer thread stopped and ``schedule`` raises ``RuntimeError``."""
        return self._stopped

    def __enter__(self) -> Timer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.shutdown()

    def __repr__(self) -> str:
        return f"Timer({self.name!r}, tasks={self.task_count})"

    # -- internals (callers hold self._cond unless noted) ----------------------------------

    def _push(self, deadline: float, handle: TimerHandle) -> None:
        heapq.heappush(self._heap, (deadline, next(self._seq), handle))
        handle._queued = True
        # Wake the thread only when this task became the earliest one; otherwise its current
        # wait already ends early enough.
        if self._heap[0][2] is handle:
            self._cond.notify()

    def _cancel(self, handle: TimerHandle) -> None:
        # Under the lock, so the flag and the dead count cannot disagree with a concurrent
        # pop or reschedule. A handle that is running or finished has no heap entry to count.
        with self._cond:
            if handle.cancelled:
                return
            handle.cancelled = True
            # Its entry may sit in the heap until it reaches the top; the task's closure (often
            # a whole connection, buffers included) need not wait with it.
            handle.task = _never_run
            if not handle._queued:
                return
            self._dead += 1
            if self._dead > 64 and self._dead > len(self._heap) // 2:
                self._heap = [e for e in self._heap if not e[2].cancelled]
                heapq.heapify(self._heap)
                self._dead = 0

    def _drop_dead_top(self) -> None:
        while self._heap and self._heap[0][2].cancelled:
            heapq.heappop(self._heap)[2]._queued = False
            self._dead -= 1

    def _pop_due(self, now: float, horizon: int | None = None) -> TimerHandle | None:
        self._drop_dead_top()
        if self._heap and self._heap[0][0] <= now and (horizon is None or self._heap[0][1] < horizon):
            handle = heapq.heappop(self._heap)[2]
            handle._queued = False
            return handle
        return None

    def _execute(self, handle: TimerHandle) -> None:
        """Run one task outside the lock and reschedule it as it asked."""
        try:
            result = handle.task()
        except Exception as e:
            _log.error("timer.task_failed", task=handle.name, error=repr(e))
            return
        if result is TaskStatus.TERMINATE:
            return
        delay = result.seconds if isinstance(result, RetryAfter) else handle.interval
        with self._cond:
            if not self._stopped and not handle.cancelled:
                self._push(self.clock.monotonic() + delay, handle)
                return
            stopped = self._stopped and not handle.cancelled and handle.on_stop is not None
        if stopped:  # shut down while it ran: it is not run again
            _stopped(handle.on_stop)

    def _run(self) -> None:
        """The timer thread: sleep on the condition until the earliest deadline, run, repeat."""
        with runtime_thread():  # a task's send never waits on a socket here (links._threads)
            self._loop()

    def _loop(self) -> None:
        while True:
            with self._cond:
                while True:
                    if self._stopped:
                        return
                    self._drop_dead_top()
                    if not self._heap:
                        self._cond.wait()
                        continue
                    wait = self._heap[0][0] - self.clock.monotonic()
                    if wait <= 0:
                        handle = heapq.heappop(self._heap)[2]
                        handle._queued = False
                        break
                    self._cond.wait(wait)
            self._execute(handle)
