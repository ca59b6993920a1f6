"""Chaos: resumable sessions under many random cuts, the ``links chaos`` command, and leaks.

``run_chaos`` streams numbered messages both ways through a ``FaultProxy`` that cuts the
connection (RST, FIN, mid-frame) again and again; every count it reports is asserted on its
own, so a failure says which promise broke. The seed is printed first, so a failing run can be
repeated (``links chaos --seed``). The leak test cycles connect → cut → reconnect → close and
checks that fds, threads and memory come back to their baseline.
"""

from __future__ import annotations

import ctypes
import gc
import os
import random
import re
import subprocess
import sys
import threading
from collections import Counter
from contextlib import contextmanager
from pathlib import Path

import psutil
import pytest
import structlog

import links
from links.session import Resumable
from links.testing._chaos import run_chaos
from links.testing._proxy import FaultProxy

WAIT = 5.0
ROOT = Path(__file__).resolve().parents[1]


def slow_only(request) -> None:
    if "slow" not in (request.config.getoption("markexpr") or ""):
        pytest.skip("long run: select it with -m slow")


def check(result, cuts: int, messages: int) -> None:
    print(result.summary())
    assert result.errors == []
    assert result.lost == 0
    assert result.duplicated == 0
    assert result.reordered == 0
    assert result.unexpected == 0
    assert result.received_by_server == messages
    assert result.received_by_client == messages
    assert result.cuts == cuts
    assert result.cuts_fired == cuts  # counted by the proxy: every cut really happened
    assert sum(result.cuts_by_kind.values()) == cuts
    assert all(result.cuts_by_kind[kind] > 0 for kind in ("rst", "fin", "mid_frame"))
    assert result.resumes_client == cuts
    assert result.resumes_server == cuts
    assert result.ok


def test_chaos_ci_tier_loses_and_duplicates_nothing():
    seed = random.randrange(1 << 32)
    print(f"seed {seed}")
    progress: list[tuple[int, int, int]] = []
    result = run_chaos(cuts=100, messages=10_000, seed=seed, progress=lambda d, c, s, cl: progress.append((d, s, cl)))
    assert result.seed == seed
    check(result, cuts=100, messages=10_000)
    # The cuts were spread over the streams, not made after them on an idle connection.
    in_flight = [d for d, to_server, to_client in progress if to_server < 10_000 or to_client < 10_000]
    assert len(in_flight) >= 90


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_chaos_full_run(request):
    slow_only(request)
    seed = random.randrange(1 << 32)
    print(f"seed {seed}")
    check(run_chaos(cuts=1000, messages=100_000, seed=seed), cuts=1000, messages=100_000)


def test_links_chaos_command_prints_the_tally_and_exits_zero():
    done = subprocess.run(
        [sys.executable, "-m", "links", "chaos", "--cuts", "5", "--messages", "500", "--seed", "1"],
        capture_output=True, text=True, encoding="utf-8", timeout=50, cwd=ROOT, check=False,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))},
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    out = done.stdout
    assert out.startswith("seed 1: 5 cuts, 500 messages each way")
    rows = dict(re.findall(r"^  (\S.*?)\s{2,}(\S.*)$", out, re.MULTILINE))
    assert rows["seed"] == "1"
    assert rows["cuts fired"].startswith("5/5 ")
    assert rows["resumes"] == "client 5, server 5"
    assert rows["delivered"] == "client->server 500, server->client 500"
    assert (rows["lost"], rows["duplicated"], rows["reordered"], rows["unexpected"]) == ("0", "0", "0", "0")
    assert rows["verdict"] == "OK"


def test_links_chaos_command_repeats_a_run_from_its_seed():
    """The cut schedule comes from the seed: the same seed gives the same kinds of cuts."""

    def kinds(seed: int) -> str:
        done = subprocess.run(
            [sys.executable, "-m", "links", "chaos", "--cuts", "6", "--messages", "60", "--seed", str(seed)],
            capture_output=True, text=True, encoding="utf-8", timeout=50, cwd=ROOT, check=False,
            env={**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))},
        )  # fmt: skip
        assert done.returncode == 0, done.stdout + done.stderr
        return re.search(r"cuts fired\s+6/6 (\{.*\})", done.stdout)[1]

    assert kinds(7) == kinds(7)


# -- leaks ------------------------------------------------------------------------------------------


class EventCounter:
    """A structlog processor that counts events by name and drops them: nothing is kept, so a
    long run does not grow memory the way ``capture_logs`` (which stores every entry) would."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self.counts: Counter[str] = Counter()

    def __call__(self, logger, method, event_dict):
        with self._cond:
            self.counts[event_dict["event"]] += 1
            self._cond.notify_all()
        raise structlog.DropEvent

    def wait(self, event: str, count: int) -> None:
        with self._cond:
            assert self._cond.wait_for(lambda: self.counts[event] >= count, WAIT), (event, count, self.counts)


@contextmanager
def counted_logs():
    counter = EventCounter()
    old = structlog.get_config()["processors"]
    structlog.configure(processors=[counter])
    try:
        yield counter
    finally:
        structlog.configure(processors=old)


class Json(links.Protocol):
    messenger = links.JsonMessenger()


def rss() -> int:
    """Resident memory, after handing back to the OS what the allocator holds but no longer
    uses (glibc's ``malloc_trim``), so the number follows live memory rather than free lists."""
    gc.collect()
    if TRIM is not None:
        TRIM(0)
    return psutil.Process().memory_info().rss


try:
    TRIM = ctypes.CDLL("libc.so.6").malloc_trim
except (OSError, AttributeError):  # not glibc: plain RSS
    TRIM = None


def run_cycles(poll, timer, cycles: int, warmup: int) -> tuple[tuple[int, int, int], tuple[int, int, int]]:
    """``warmup`` cycles, the baseline, then ``cycles`` more; (fds, threads, rss) at both points.

    A cycle connects a session client through a proxy, has the connection reset while a
    message is sent, waits for the resume and the message, and closes. The warm-up lets what
    is bounded but not instant reach its steady state before the baseline: the allocator's
    arenas, the timer's cancelled tasks (dropped lazily).
    """
    process = psutil.Process()
    settings = {"heartbeat_interval": 0.05, "dead_after": 40}
    backoff = links.Backoff(initial=0.001, maximum=0.005, jitter=0.0)
    received = links.CounterCallback()
    with counted_logs() as events, links.Svc.bind(
        "127.0.0.1:0", protocol=Json, callback=received, poll_handler=poll, timer=timer,
        max_connections=warmup + cycles + 10, session=Resumable(detached_ttl=0.5, **settings),
    ) as svc:  # fmt: skip
        svc.into_sender_with_spawned_recver()
        done = 0

        def run(n: int) -> None:
            nonlocal done
            with FaultProxy(svc.local_addr, connect_timeout=WAIT) as proxy:
                for _ in range(n):
                    clt = links.Clt.connect(
                        f"127.0.0.1:{proxy.addr[1]}", protocol=Json, poll_handler=poll, timer=timer, timeout=WAIT,
                        reconnect=backoff, session=Resumable(**settings),
                    )  # fmt: skip
                    with clt.into_sender_with_spawned_recver() as sender:
                        assert proxy.reset() >= 1  # (the previous cycle's pair may still be closing)
                        sender.send(done)  # sent while cut or just resumed: delivered either way
                        events.wait("clt.reconnected", done + 1)
                        events.wait("session.resumed", done + 1)
                        assert received.wait_recv(done + 1, WAIT)
                    done += 1
                stats = proxy.stats()
            # Every cut fired (each cycle waited for its resume); every redial went through the proxy.
            assert stats.rst_cuts >= n and stats.accepted == 2 * n
            # Each client closed with a goodbye, so each session ended on both sides at once
            # (two session.ended per cycle): wait for that, then for the poll thread to have
            # closed every fd (redials make no threads: the thread count is checked as is).
            events.wait("session.ended", 2 * done)
            poll.sync()

        run(warmup)
        before = (process.num_fds(), threading.active_count(), rss())
        run(cycles)
        after = (process.num_fds(), threading.active_count(), rss())
        assert events.counts["session.started"] == events.counts["session.resumed"] == warmup + cycles
        assert len(svc) == 0 and svc.gate.in_use == 0
    return before, after


def check_no_leaks(poll, timer, cycles: int, warmup: int) -> None:
    (fds, threads, mem), (fds_after, threads_after, mem_after) = run_cycles(poll, timer, cycles, warmup)
    print(f"{cycles} cycles after {warmup}: fds {fds} -> {fds_after}, threads {threads} -> {threads_after}, "
          f"rss {mem / 2**20:.1f} -> {mem_after / 2**20:.1f} MiB")  # fmt: skip
    assert fds_after == fds
    assert threads_after == threads
    assert mem_after - mem < 5 * 2**20


def test_connect_cut_reconnect_cycles_leak_nothing(poll, timer):
    check_no_leaks(poll, timer, 1_000, warmup=500)


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_connect_cut_reconnect_cycles_leak_nothing_at_scale(request, poll, timer):
    slow_only(request)
    check_no_leaks(poll, timer, 10_000, warmup=1_000)
