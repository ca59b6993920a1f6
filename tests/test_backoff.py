"""``Backoff``: the arithmetic, and the reconnect schedule a real ``Clt`` follows.

The schedule is measured from the ``clt.reconnecting`` events a client logs, on a
``FakeClock`` driving a ``Timer(thread=False)``: the test advances time to each attempt's
deadline itself, so the gaps between attempts are exact and independent of machine load.
"""

from __future__ import annotations

import itertools
import math
import random
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from helpers import Json, watch_logs

import links
from links.testing import FakeClock
from links.testing._proxy import FaultProxy

WAIT = 5.0


@contextmanager
def refused_redials(poll, timer, backoff: links.Backoff, client_timer: links.Timer) -> Iterator[links.CltSender]:
    """A spawned client with ``reconnect=backoff`` whose service is gone: every redial is
    refused at once, so the backoff alone spaces the attempts. Yields its sender."""
    svc = links.Svc.bind("127.0.0.1:0", protocol=Json, poll_handler=poll, timer=timer)
    svc.into_sender_with_spawned_recver()
    clt = links.Clt.connect(
        f"127.0.0.1:{svc.local_addr[1]}", protocol=Json, timeout=0.05, poll_handler=poll, timer=client_timer,
        reconnect=backoff,
    )  # fmt: skip
    with clt.into_sender_with_spawned_recver() as sender:
        svc.close()  # FIN to the client, and nobody listens any more
        poll.sync()  # the listener is closed on the poll thread: from here every dial is refused
        yield sender


def run_next_attempt(clock: FakeClock, timer: links.Timer) -> None:
    """Move fake time to the next scheduled redial and run it (and nothing else)."""
    deadline = timer.next_deadline()
    assert deadline is not None
    clock.advance(deadline - clock.monotonic())
    assert timer.run_due() == 1


# -- the arithmetic --------------------------------------------------------------------------


def test_base_grows_geometrically_up_to_the_maximum():
    b = links.Backoff(initial=0.05, maximum=0.5, factor=1.2, jitter=0.1)
    assert b.base(1) == pytest.approx(0.05)
    assert b.base(2) == pytest.approx(0.06)
    assert b.base(5) == pytest.approx(0.05 * 1.2**4)
    assert b.base(13) == pytest.approx(0.05 * 1.2**12)  # 0.445: still below the cap
    assert b.base(14) == 0.5 and b.base(1000) == 0.5
    assert [b.base(n) for n in range(1, 30)] == sorted(b.base(n) for n in range(1, 30))


def test_factor_one_is_a_constant_delay():
    b = links.Backoff(initial=0.2, maximum=1.0, factor=1.0, jitter=0.0)
    assert {b.delay(n) for n in range(1, 50)} == {0.2}


def test_delay_without_jitter_is_the_base():
    b = links.Backoff(initial=0.05, maximum=0.5, factor=2.0, jitter=0.0)
    assert [b.delay(n) for n in range(1, 6)] == [b.base(n) for n in range(1, 6)]


def test_jitter_stays_within_its_bounds_and_spreads():
    seed = random.randrange(1 << 32)
    print(f"seed {seed}")
    rng = random.Random(seed)
    b = links.Backoff(initial=0.05, maximum=0.5, factor=1.2, jitter=0.1)
    for attempt in (1, 5, 20):
        base = b.base(attempt)
        delays = [b.delay(attempt, rng) for _ in range(2000)]
        assert all(base * 0.9 <= d <= base * 1.1 for d in delays)
        # Uniform over ±10 %: both halves of the range are used, and the ends are reached.
        assert min(delays) < base * 0.92 and max(delays) > base * 1.08
        assert abs(sum(delays) / len(delays) - base) < base * 0.01


def test_jitter_is_reproducible_from_a_seed():
    b = links.Backoff(jitter=0.3)
    first = [b.delay(n, random.Random(7)) for n in range(1, 10)]
    assert first == [b.delay(n, random.Random(7)) for n in range(1, 10)]
    assert first != [b.delay(n, random.Random(8)) for n in range(1, 10)]


def test_gives_up_only_after_max_attempts():
    assert not any(links.Backoff().gives_up(n) for n in (1, 10, 10**6))  # None: forever
    b = links.Backoff(max_attempts=3)
    assert [b.gives_up(n) for n in (1, 2, 3, 4, 5)] == [False, False, False, True, True]
    assert links.Backoff(max_attempts=0).gives_up(1)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"initial": 0}, "initial"),
        ({"initial": -1}, "initial"),
        ({"initial": 2.0, "maximum": 1.0}, "initial <= maximum"),
        ({"factor": 0.5}, "factor"),
        ({"jitter": -0.1}, "jitter"),
        ({"jitter": 1.0}, "jitter"),
        ({"initial": math.nan}, "initial"),
        ({"maximum": math.nan}, "initial <= maximum"),
        ({"factor": math.nan}, "factor"),
        ({"jitter": math.nan}, "jitter"),
        ({"reset_after": math.nan}, "reset_after"),
        ({"reset_after": -1.0}, "reset_after"),
    ],
)
def test_invalid_settings_are_refused(kwargs, message):
    with pytest.raises(ValueError, match=message):
        links.Backoff(**kwargs)


def test_backoff_is_an_immutable_value():
    b = links.Backoff(initial=0.1)
    with pytest.raises(AttributeError):
        b.initial = 1.0  # type: ignore[misc]
    assert b == links.Backoff(initial=0.1) and hash(b) == hash(links.Backoff(initial=0.1))


# -- the schedule a client follows --------------------------------------------------------------


def test_reconnect_schedule_follows_the_backoff_within_its_jitter(poll, timer):
    """Every redial is refused (the service is gone); each attempt's logged delay and the fake
    time between attempts match ``base(attempt) * (1 ± jitter)``."""
    backoff = links.Backoff(initial=0.05, maximum=0.5, factor=1.2, jitter=0.1)
    clock = FakeClock(1000.0)
    fake = links.Timer(clock=clock, thread=False)
    attempts = 10
    with watch_logs() as logs, refused_redials(poll, timer, backoff, fake):
        logs.expect("clt.reconnecting", attempt=1)
        for attempt in range(1, attempts + 1):
            run_next_attempt(clock, fake)
            logs.expect("clt.reconnect_failed", attempt=attempt)
            logs.expect("clt.reconnecting", attempt=attempt + 1)
    events = [e for e in logs.entries if e["event"] == "clt.reconnecting"][: attempts + 1]
    assert [e["attempt"] for e in events] == list(range(1, attempts + 2))
    delays = []
    for event, following in itertools.pairwise(events):
        base = backoff.base(event["attempt"])
        low, high = base * (1 - backoff.jitter), base * (1 + backoff.jitter)
        assert low - 1e-6 <= event["delay"] <= high + 1e-6, event
        gap = following["at"] - event["at"]  # fake time from scheduling one attempt to the next
        assert gap == pytest.approx(event["delay"], abs=1e-5), (event, following)
        delays.append(event["delay"])
    assert delays != [backoff.base(n) for n in range(1, attempts + 1)]  # jitter was applied
    assert delays[-1] > delays[0]  # 0.05 * 1.2**9 = 0.258 vs 0.05: well apart even with jitter
    assert not logs.matching("clt.reconnected")
    assert len(logs.matching("clt.reconnect_failed")) == attempts


def test_schedule_restarts_only_after_the_connection_stayed_up(poll, timer):
    """A connection that drops soon after coming up keeps climbing the schedule; one that
    stayed up ``reset_after`` starts again at attempt 1."""
    backoff = links.Backoff(initial=0.01, maximum=0.05, factor=2.0, jitter=0.0, reset_after=0.5)
    clock = FakeClock(1000.0)
    fake = links.Timer(clock=clock, thread=False)  # the schedule's clock: "stayed up" is fake time
    with watch_logs() as logs, links.Svc.bind("127.0.0.1:0", protocol=Json, poll_handler=poll, timer=timer) as svc:
        svc.into_sender_with_spawned_recver()
        with FaultProxy(svc.local_addr) as proxy:
            clt = links.Clt.connect(
                f"127.0.0.1:{proxy.addr[1]}", protocol=Json, poll_handler=poll, timer=fake, reconnect=backoff
            )
            with clt:
                clt.into_sender_with_spawned_recver()
                assert proxy.drop() == 1
                assert logs.expect("clt.reconnecting", attempt=1)["delay"] == pytest.approx(0.01)
                run_next_attempt(clock, fake)
                logs.expect("clt.reconnected", attempt=1)
                assert proxy.reset() == 1  # right after coming up: no reset of the schedule
                assert logs.expect("clt.reconnecting", attempt=2)["delay"] == pytest.approx(0.02)
                run_next_attempt(clock, fake)
                logs.expect("clt.reconnected", attempt=2)
                clock.advance(backoff.reset_after)  # the connection stays up that long
                assert proxy.drop() == 1
                third = logs.expect("clt.reconnecting", count=3)
                assert third["attempt"] == 1 and third["delay"] == pytest.approx(0.01)
                run_next_attempt(clock, fake)
                logs.expect("clt.reconnected", count=2, attempt=1)
            stats = proxy.stats()
    assert stats.fin_cuts == 2 and stats.rst_cuts == 1 and stats.accepted == 4


def test_max_attempts_reached_makes_sends_raise(poll, timer):
    backoff = links.Backoff(initial=0.01, maximum=0.02, factor=2.0, jitter=0.0, max_attempts=3)
    with watch_logs() as logs, refused_redials(poll, timer, backoff, timer) as sender:
        logs.expect("clt.reconnecting", attempt=1)  # the client noticed: no connection to write to
        with pytest.raises(links.BrokenError) as raised:
            sender.send(1, timeout=WAIT)  # waits for a connection that never comes back
        assert raised.value.reason == "reconnect_gave_up"
        with pytest.raises(links.BrokenError):
            sender.send(2, timeout=0)
    assert [e["attempt"] for e in logs.matching("clt.reconnecting")] == [1, 2, 3]
    assert [e["attempt"] for e in logs.matching("clt.reconnect_failed")] == [1, 2, 3]
    assert logs.matching("clt.disconnected", reason="reconnect_gave_up")
