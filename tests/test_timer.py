"""Timer: scheduling rules driven deterministically by a FakeClock, plus one real-thread check."""

from __future__ import annotations

import threading

import pytest
from structlog.testing import capture_logs

import links
from links.testing import FakeClock

COMPLETED = links.TaskStatus.COMPLETED
TERMINATE = links.TaskStatus.TERMINATE


@pytest.fixture
def clock():
    return FakeClock()


@pytest.fixture
def fake_timer(clock):
    t = links.Timer(clock=clock, thread=False)
    yield t
    t.shutdown()


def at(clock: FakeClock, timer: links.Timer, when: float) -> int:
    """Move the clock to ``when`` and run what is due; how many tasks ran."""
    clock.advance(when - clock.monotonic())
    return timer.run_due()


def test_completed_reschedules_one_interval_after_the_run_finished(clock, fake_timer):
    runs = []

    def task():
        runs.append(clock.monotonic())
        clock.advance(0.5)  # the run itself takes time: fixed delay counts from its end
        return COMPLETED

    fake_timer.schedule("hb", 1.0, task)
    assert at(clock, fake_timer, 0.99) == 0
    assert at(clock, fake_timer, 1.0) == 1
    assert fake_timer.next_deadline() == 2.5
    assert at(clock, fake_timer, 2.49) == 0
    assert at(clock, fake_timer, 2.5) == 1
    assert runs == [1.0, 2.5]
    assert fake_timer.task_count == 1


def test_late_run_does_not_burst_catch_up_runs(clock, fake_timer):
    runs = []
    fake_timer.schedule("hb", 1.0, lambda: runs.append(clock.monotonic()) or COMPLETED)
    # A long stall: one run, then the next one interval later, not ten back-to-back.
    assert at(clock, fake_timer, 10.0) == 1
    assert fake_timer.next_deadline() == 11.0


def test_delay_sets_the_first_run_only(clock, fake_timer):
    runs = []
    fake_timer.schedule("t", 5.0, lambda: runs.append(clock.monotonic()) or COMPLETED, delay=0.0)
    assert at(clock, fake_timer, 0.0) == 1
    assert at(clock, fake_timer, 4.9) == 0
    assert at(clock, fake_timer, 5.0) == 1
    assert runs == [0.0, 5.0]


def test_terminate_stops(clock, fake_timer):
    runs = []
    fake_timer.schedule("once", 1.0, lambda: runs.append(clock.monotonic()) or TERMINATE)
    assert at(clock, fake_timer, 1.0) == 1
    assert fake_timer.task_count == 0
    assert fake_timer.next_deadline() is None
    assert at(clock, fake_timer, 100.0) == 0
    assert runs == [1.0]


def test_retry_after_reschedules_after_its_seconds(clock, fake_timer):
    answers = iter([links.RetryAfter(0.25), links.RetryAfter(3.0), COMPLETED, TERMINATE])
    runs = []

    def task():
        runs.append(clock.monotonic())
        return next(answers)

    fake_timer.schedule("retry", 1.0, task)
    for when in (1.0, 1.25, 4.25, 5.25, 100.0):
        at(clock, fake_timer, when)
    assert runs == [1.0, 1.25, 4.25, 5.25]


def test_cancel_before_first_run(clock, fake_timer):
    runs = []
    handle = fake_timer.schedule("t", 1.0, lambda: runs.append(1) or COMPLETED)
    handle.cancel()
    handle.cancel()  # idempotent
    assert handle.cancelled
    assert fake_timer.task_count == 0
    assert at(clock, fake_timer, 10.0) == 0
    assert runs == []


def test_cancel_stops_future_runs(clock, fake_timer):
    runs = []
    handle = fake_timer.schedule("t", 1.0, lambda: runs.append(clock.monotonic()) or COMPLETED)
    at(clock, fake_timer, 1.0)
    handle.cancel()
    assert at(clock, fake_timer, 10.0) == 0
    assert runs == [1.0]
    assert fake_timer.task_count == 0


def test_cancel_from_inside_the_task(clock, fake_timer):
    handles = []

    def task():
        handles[0].cancel()  # e.g. a heartbeat that finds its connection closed
        return COMPLETED

    handles.append(fake_timer.schedule("t", 1.0, task))
    assert at(clock, fake_timer, 1.0) == 1
    assert fake_timer.task_count == 0
    assert at(clock, fake_timer, 10.0) == 0


def test_cancel_after_the_task_ended_keeps_counts_right(clock, fake_timer):
    once = fake_timer.schedule("once", 1.0, lambda: TERMINATE)
    at(clock, fake_timer, 1.0)
    once.cancel()  # the connection closes later and cancels its (finished) task
    assert fake_timer.task_count == 0
    fake_timer.schedule("next", 1.0, lambda: COMPLETED)
    assert fake_timer.task_count == 1


def test_failing_task_is_logged_once_and_not_run_again(clock, fake_timer):
    runs = []

    def boom():
        runs.append(clock.monotonic())
        raise RuntimeError("kaput")

    survivor = []
    fake_timer.schedule("boom", 1.0, boom)
    fake_timer.schedule("ok", 1.0, lambda: survivor.append(clock.monotonic()) or COMPLETED)
    with capture_logs() as logs:
        at(clock, fake_timer, 1.0)
        at(clock, fake_timer, 2.0)
        at(clock, fake_timer, 3.0)
    assert runs == [1.0]
    assert survivor == [1.0, 2.0, 3.0]  # one bad task does not stop the timer
    failed = [e for e in logs if e["event"] == "timer.task_failed"]
    assert len(failed) == 1
    assert failed[0]["task"] == "boom"
    assert "kaput" in failed[0]["error"]
    assert failed[0]["log_level"] == "error"
    assert fake_timer.task_count == 1


def test_equal_deadlines_run_in_scheduling_order(clock, fake_timer):
    order = []
    for name in ["c", "a", "b", "a2"]:
        fake_timer.schedule(name, 1.0, lambda name=name: order.append(name) or TERMINATE)
    assert at(clock, fake_timer, 1.0) == 4
    assert order == ["c", "a", "b", "a2"]


def test_earlier_deadline_runs_first_whatever_the_scheduling_order(clock, fake_timer):
    order = []
    for name, interval in [("slow", 3.0), ("fast", 1.0), ("mid", 2.0)]:
        fake_timer.schedule(name, interval, lambda name=name: order.append(name) or TERMINATE)
    at(clock, fake_timer, 5.0)
    assert order == ["fast", "mid", "slow"]


def test_cancelled_handles_do_not_grow_the_heap(clock, fake_timer):
    live = [fake_timer.schedule(f"live{i}", 10.0, lambda: COMPLETED) for i in range(10)]
    # Many short-lived connections: each schedules a far-off deadline, then cancels it.
    for i in range(5000):
        fake_timer.schedule(f"short{i}", 1000.0, lambda: COMPLETED).cancel()
        assert len(fake_timer._heap) <= 2 * len(live) + 100
    assert fake_timer.task_count == len(live)
    # Nothing cancelled ever runs; the live ones still do.
    assert at(clock, fake_timer, 2000.0) == len(live)


def test_schedule_after_shutdown_raises(clock, fake_timer):
    fake_timer.schedule("t", 1.0, lambda: COMPLETED)
    fake_timer.shutdown()
    assert fake_timer.is_shutdown
    assert fake_timer.task_count == 0
    with pytest.raises(RuntimeError):
        fake_timer.schedule("t", 1.0, lambda: COMPLETED)
    fake_timer.shutdown()  # idempotent


def test_on_stop_is_called_once_for_each_task_still_to_run_when_the_timer_stops(clock, fake_timer):
    stopped: list[str] = []
    fake_timer.schedule("waiting", 1.0, lambda: COMPLETED, on_stop=lambda: stopped.append("waiting"))
    ended = fake_timer.schedule("ended", 1.0, lambda: TERMINATE, on_stop=lambda: stopped.append("ended"))
    cancelled = fake_timer.schedule("cancelled", 1.0, lambda: COMPLETED, on_stop=lambda: stopped.append("cancelled"))
    cancelled.cancel()
    assert at(clock, fake_timer, 1.0) == 2 and not ended._queued
    with capture_logs() as logs:
        fake_timer.schedule("raising", 5.0, lambda: COMPLETED, on_stop=lambda: 1 / 0)
        fake_timer.shutdown()
        fake_timer.shutdown()
    assert stopped == ["waiting"]
    assert [e["event"] for e in logs] == ["timer.on_stop_failed"]


def test_on_stop_is_called_when_the_timer_stops_while_the_task_runs(clock, fake_timer):
    stopped: list[str] = []

    def task() -> links.TaskStatus:
        fake_timer.shutdown()  # as another thread might, during the run
        return COMPLETED

    fake_timer.schedule("running", 1.0, task, on_stop=lambda: stopped.append("running"))
    at(clock, fake_timer, 1.0)
    assert stopped == ["running"]


@pytest.mark.parametrize(("interval", "delay"), [(0.0, None), (-1.0, None), (float("nan"), None), (1.0, float("nan"))])
def test_an_interval_that_is_not_a_positive_duration_or_a_nan_delay_is_refused(fake_timer, clock, interval, delay):
    with pytest.raises(ValueError):
        fake_timer.schedule("t", interval, lambda: COMPLETED, delay=delay)
    ran = []
    fake_timer.schedule("good", 1.0, lambda: ran.append(1) or COMPLETED)
    at(clock, fake_timer, 1.0)
    assert ran == [1]  # nothing refused went into the heap ahead of it


def test_threaded_timer_runs_tasks_and_shutdown_stops_its_thread():
    ran_three_times = threading.Event()
    ran_on = []

    def task():
        ran_on.append(threading.current_thread().name)
        if len(ran_on) == 3:
            ran_three_times.set()
        return COMPLETED

    timer = links.Timer(name="test-timer-threaded")
    try:
        timer.schedule("fast", 0.01, task)
        assert ran_three_times.wait(timeout=5.0)
        assert set(ran_on) == {"test-timer-threaded"}
    finally:
        timer.shutdown()
    assert not any(t.name == "test-timer-threaded" for t in threading.enumerate())


def test_retry_after_zero_runs_once_per_run_due_call():
    clock = FakeClock()
    timer = links.Timer(clock=clock, thread=False)
    runs = []
    timer.schedule("eager", 1.0, lambda: runs.append(1) or links.RetryAfter(0))
    clock.advance(1.0)
    assert timer.run_due() == 1
    assert timer.run_due() == 1
    assert len(runs) == 2
    with pytest.raises(ValueError):
        links.RetryAfter(-1)
