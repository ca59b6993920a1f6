"""Connect/close cycles against a spawned service leave no fd and no thread behind.

The fd count is exact: every socket either side opened must be closed once both sides have
processed the close (the server on its poll thread; ``poll.sync()`` waits for that). No slack
is allowed: the runtime threads and the listener exist before the baseline is taken.
"""

from __future__ import annotations

import threading

import psutil
import pytest
from helpers import Json

import links

WAIT = 5.0


class Departures:
    """Counts server-side ``on_disconnect`` calls, waitable."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self.count = 0
        departures = self

        class Tracked(Json):
            def on_disconnect(self, con_id):
                with departures._cond:
                    departures.count += 1
                    departures._cond.notify_all()

        self.protocol = Tracked

    def wait(self, count: int) -> bool:
        with self._cond:
            return self._cond.wait_for(lambda: self.count >= count, WAIT)


def run_cycles(poll, timer, cycles: int) -> None:
    departures = Departures()
    process = psutil.Process()
    # A gate wider than the run: the server may lag behind the client, and a refused
    # connection would not be counted as a departure.
    with links.Svc.bind(
        "127.0.0.1:0", protocol=departures.protocol, max_connections=cycles + 10, timer=timer, poll_handler=poll
    ) as svc:
        sender = svc.into_sender_with_spawned_recver()
        target = f"127.0.0.1:{svc.local_addr[1]}"

        def cycle() -> None:
            with links.Clt.connect(target, protocol=Json, timer=timer, timeout=WAIT):
                pass

        cycle()  # warm-up: the poll thread starts and the listener is registered
        assert departures.wait(1)
        poll.sync()
        fds, threads = process.num_fds(), threading.active_count()

        for _ in range(cycles):
            cycle()
        assert departures.wait(1 + cycles)
        poll.sync()  # the server closes each fd right after on_disconnect, on the poll thread
        assert svc.gate.in_use == 0 and len(sender) == 0
        assert process.num_fds() == fds
        assert threading.active_count() == threads


def test_connect_close_cycles_leak_nothing(poll, timer):
    run_cycles(poll, timer, 1_000)


@pytest.mark.slow
def test_connect_close_cycles_leak_nothing_at_scale(poll, timer, request):
    if "slow" not in (request.config.getoption("markexpr") or ""):
        pytest.skip("long run: select it with -m slow")
    run_cycles(poll, timer, 10_000)
