"""What every peer of ``rpc.py`` shares: the call, the sequential loop and the pipelined window.

The call is ``echo(data)``: ``Params.size`` bytes (16 by default) sent as the one argument and
returned as the result. Every peer encodes it with its library's own way (msgpack for links,
gRPC's generic handlers and pyzmq; AMP's boxes for Twisted), dispatches it by method name on
the server and checks the result on the client: a reply that is not the bytes sent does not
count as received, and the harness's completion check then fails the measurement.

``Params.variant`` is the figure: ``seq`` (one thread, one call at a time: ``sequential``) or
``pipe`` (``Params.batch`` calls in flight: ``Window``); links also runs ``pipe_many``, the
same window refilled in batches (``pipelined_batches``). The server's ``Tally`` counts every
call it answers, under a lock where the library calls handlers from more than one thread.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from links.bench import Control, Params, Tally, payload, rtt_result

#: A reply later than this is a failed measurement, not a slow call.
WAIT_S = 30.0


def sequential(call: Callable[[bytes], Any], params: Params) -> dict[str, Any]:
    """``params.total`` calls one after the other; round trips of the measured ones, in µs."""
    data = payload(params.size)
    clock = time.perf_counter_ns
    rtts: list[float] = []
    received = 0
    for i in range(params.total):
        t0 = clock()
        reply = call(data)
        t1 = clock()
        received += reply == data
        if i >= params.warm:
            rtts.append((t1 - t0) / 1000)
    return rtt_result(rtts, params.total, params.total * params.size, received)


class Window:
    """A pipelined run's bookkeeping: the replies counted, and the measured window.

    The window opens when the last warm-up call's reply is in (the pipe is full by then) and
    closes with the last reply: its rate is the measured calls over that time, every one of
    them both sent and answered inside it.
    """

    def __init__(self, params: Params) -> None:
        self.params = params
        self.data = payload(params.size)
        self.replies = self.received = 0
        self.t0 = self.t1 = 0.0

    def reply(self, result: Any) -> bool:
        """Count one reply; True once it was the last."""
        self.replies += 1
        self.received += result == self.data
        if self.replies == self.params.warm:
            self.t0 = time.perf_counter()
        if self.replies == self.params.total:
            self.t1 = time.perf_counter()
            return True
        return False

    def result(self) -> dict[str, Any]:
        p = self.params
        seconds = self.t1 - self.t0
        rate = p.count / seconds if self.replies == p.total and seconds > 0 else float("nan")
        return {"sent": self.replies, "bytes": self.replies * p.size, "received": self.received,
                "p50": float("nan"), "p99": float("nan"), "rate": rate}  # fmt: skip


def pipelined_futures(submit: Callable[[bytes], Any], params: Params) -> dict[str, Any]:
    """``params.batch`` calls in flight through a futures API: when the window is full, wait
    for the oldest call (replies come back mostly in order, so most waits find it done)."""
    window = Window(params)
    data, depth = window.data, params.batch
    pending: deque[Any] = deque()
    for _ in range(params.total):
        if len(pending) >= depth:
            window.reply(pending.popleft().result(WAIT_S))
        pending.append(submit(data))
    while pending:
        window.reply(pending.popleft().result(WAIT_S))
    return window.result()


def pipelined_batches(submit_many: Callable[[int, bytes], list[Any]], params: Params) -> dict[str, Any]:
    """``params.batch`` calls in flight, made in batches: every reply already in at the front
    of the window is taken (waiting for the oldest if none is), then as many calls as left
    the window are made with one ``submit_many(count, data)``, which returns their futures."""
    window = Window(params)
    data, depth, total = window.data, params.batch, params.total
    pending: deque[Any] = deque()
    issued = 0
    while issued < total or pending:
        room = min(depth - len(pending), total - issued)
        if room > 0:
            pending.extend(submit_many(room, data))
            issued += room
        window.reply(pending.popleft().result(WAIT_S))
        while pending and pending[0].done():
            window.reply(pending.popleft().result())
    return window.result()


class LockedTally:
    """``Tally.add`` for handlers that run on more than one thread."""

    def __init__(self, ctl: Control, params: Params) -> None:
        self.tally = Tally(ctl, params)
        self._lock = threading.Lock()

    def add(self, nbytes: int) -> None:
        with self._lock:
            self.tally.add(1, nbytes)

    def final(self) -> None:
        self.tally.final()
