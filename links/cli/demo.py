"""``links demo``: the library's main job, end to end on loopback, ending with a verdict.

What runs, all in this process on 127.0.0.1:

* a ``Svc`` on port 0 with its acceptor and receivers spawned into the poll thread; its
  protocol answers each request from ``send_reply``, on the poll thread;
* two ``Clt``\\ s with their receivers spawned into the same poll thread:
  "feed" turns its sender into one ``Ref``, cloned to four threads that stream one-way
  ticks; "rtt" makes request/response round trips, each one timed;
* heartbeats on every connection end, run by the timer thread;
* at the end the service broadcasts "done" to both clients through its ``SvcSender``.

The two workloads run one after the other, so the round-trip times measure the stack and
not the queue that the tick stream builds up.

Accounting: a ``Tally`` callback counts every message by kind in each direction. The exit
code is 0 only when every message sent was received, ticks arrived in order per sending
thread, every round trip got its own answer, and heartbeats reached every connection end. So
the demo is also a check of the whole stack. Heartbeats are reported but left out of the
sent/received totals: one still in flight when a connection closes is lost by design.

Only the public API is used (``import links``): this file doubles as a worked example.
"""

from __future__ import annotations

import argparse
import queue
import statistics
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import psutil
import structlog

import links

from ._args import positive
from ._logging import LEVELS, configure_logging
from ._progress import ProgressLine, print_table

__all__ = ["DemoProtocol", "Tally", "register", "run", "run_demo"]

HEARTBEAT = {"t": "hb"}


class DemoProtocol(links.Protocol):
    """JSON messages behind a 4-byte length prefix, heartbeats, and an answer per request.

    Kinds (the ``"t"`` field): ``tick`` (one-way), ``req``/``rsp`` (round trip), ``hb``, ``done``.
    """

    framer = links.LengthPrefixFramer(header_size=4, max_frame_size=64 * 1024)
    messenger = links.JsonMessenger()

    def __init__(
        self, heartbeat_interval: float | None = 0.1, on_disconnect: Callable[[Any], None] | None = None
    ) -> None:
        self.heartbeat_interval = heartbeat_interval
        self._on_disconnect = on_disconnect

    def send_reply(self, msg: Any, con: Any) -> None:
        # Runs on the poll thread, which must never wait: timeout=0. The rtt client has one
        # request outstanding at a time, so its socket always has room for the answer.
        if msg.get("t") == "req":
            con.send({"t": "rsp", "id": msg["id"]}, timeout=0)

    def send_heartbeat(self, con: Any) -> None:
        # Timer thread. A full socket means traffic is flowing anyway: skip this beat.
        con.send(HEARTBEAT, timeout=0)

    def on_disconnect(self, con_id: Any) -> None:
        if self._on_disconnect is not None:
            self._on_disconnect(con_id)


class Tally(links.Callback):
    """Counts messages by kind in each direction, checks tick order, and can be waited on.

    ``on_sent`` runs on every sending thread and ``on_recv`` on the poll thread, so counts
    are updated under a condition's lock. Waiters are woken by rare events only (never by
    each tick, which would cost the poll thread a wake-up per message).
    """

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self.sent: Counter[str] = Counter()
        self.recv: Counter[str] = Counter()
        self.heartbeat_ends: set[str] = set()  # con_ids that received at least one heartbeat
        self.disconnects = 0
        self.out_of_order = 0
        self.last_tick_at = 0.0
        self.want_ticks = -1  # wake waiters when this many ticks have arrived
        self._next_tick: dict[tuple[str, int], int] = {}

    def on_sent(self, con_id: links.ConId, msg: Any) -> None:
        with self._cond:
            self.sent[msg["t"]] += 1

    def on_recv(self, con_id: links.ConId, msg: Any) -> None:
        kind = msg["t"]
        with self._cond:
            count = self.recv[kind] = self.recv[kind] + 1
            if kind == "tick":
                key = (str(con_id), msg["w"])
                if msg["n"] != self._next_tick.get(key, 0):
                    self.out_of_order += 1
                self._next_tick[key] = msg["n"] + 1
                self.last_tick_at = time.monotonic()
                if count == self.want_ticks:
                    self._cond.notify_all()
            elif kind == "hb":
                if str(con_id) not in self.heartbeat_ends:
                    self.heartbeat_ends.add(str(con_id))
                    self._cond.notify_all()
            else:
                self._cond.notify_all()

    def expect_ticks(self, count: int) -> None:
        """Wake waiters once ``count`` ticks have arrived."""
        with self._cond:
            self.want_ticks = count

    def disconnected(self, con_id: Any) -> None:
        with self._cond:
            self.disconnects += 1
            self._cond.notify_all()

    def wait(self, predicate: Callable[[], bool], deadline: float, progress: Callable[[], None] | None = None) -> bool:
        """Wait until ``predicate()`` holds (checked under the lock); False at ``deadline``."""
        with self._cond:
            while not predicate():
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                # The short bound only serves the progress line; the wake-up comes by notify.
                self._cond.wait(min(remaining, 0.1) if progress else remaining)
                if progress:
                    progress()
            return True


class Answers(links.Callback):
    """Hands each response to the thread that waits for it (the rtt client's own thread)."""

    def __init__(self) -> None:
        self.queue: queue.SimpleQueue[Any] = queue.SimpleQueue()

    def on_recv(self, con_id: links.ConId, msg: Any) -> None:
        if msg["t"] == "rsp":
            self.queue.put(msg)


def _feed(ref: links.Ref, worker: int, count: int, deadline: float, errors: list[str]) -> None:
    """One of the threads sharing the feed sender: ``count`` ticks, numbered for the order check."""
    try:
        for n in range(count):
            if n % 64 == 0 and time.monotonic() >= deadline:
                return  # the --seconds cap: stop sending, what was sent is still checked
            while ref.send({"t": "tick", "w": worker, "n": n}, timeout=0.5) is not links.SendStatus.COMPLETED:
                if time.monotonic() >= deadline:
                    return
    except links.LinksError as e:
        errors.append(f"feed thread {worker}: {e!r}")


def _percentile(sorted_values: list[float], p: float) -> float:
    if not sorted_values:
        return float("nan")
    index = min(len(sorted_values) - 1, max(0, round(p / 100 * len(sorted_values) + 0.5) - 1))
    return sorted_values[index]


@dataclass
class _Run:
    """What one demo asked for, its clock, and what it found along the way."""

    messages: int
    round_trips: int
    threads: int
    seconds: float
    progress: ProgressLine
    started: float = field(default_factory=time.monotonic)
    server: Tally = field(default_factory=Tally)
    clients: Tally = field(default_factory=Tally)
    answers: Answers = field(default_factory=Answers)
    failures: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)  # appended by the feed threads
    rtts: list[float] = field(default_factory=list)
    ticks_sent: int = 0
    feed_seconds: float = 0.0

    @property
    def feed_deadline(self) -> float:
        # The stream may use three quarters of the cap, so round trips are measured even when
        # --messages is more than the cap lets through.
        return self.started + 0.75 * self.seconds

    @property
    def deadline(self) -> float:
        return self.started + self.seconds

    def grace(self) -> float:
        """Draining, closing and waiting for the last heartbeats get a few seconds past the cap."""
        return max(time.monotonic(), self.deadline) + 5.0


@dataclass
class _Peers:
    """The service's sender and the two clients' senders of one demo."""

    svc: links.SvcSender
    feed: links.Ref
    rtt: links.CltSender


def run_demo(
    messages: int = 20_000,
    round_trips: int = 2_000,
    threads: int = 4,
    seconds: float = 30.0,
    heartbeat_interval: float = 0.1,
    progress: ProgressLine | None = None,
) -> tuple[bool, list[tuple[str, object]]]:
    """Run the demo; return (every check passed, summary rows)."""
    log = structlog.get_logger("links.demo")
    demo = _Run(messages, round_trips, threads, seconds, ProgressLine(enabled=False) if progress is None else progress)
    proc = psutil.Process()
    cpu0 = sum(proc.cpu_times()[:2])
    log.info("demo.started", messages=messages, round_trips=round_trips, threads=threads)
    with _setup(demo, heartbeat_interval) as peers:
        _stream(demo, peers.feed)
        log.info("demo.feed.done", sent=demo.ticks_sent, received=demo.server.recv["tick"],
                 seconds=round(demo.feed_seconds, 3))  # fmt: skip
        _time_round_trips(demo, peers.rtt)
        log.info("demo.round_trips.done", count=len(demo.rtts))
        _say_done(demo, peers.svc)
    elapsed = time.monotonic() - demo.started
    failures = _check(demo)
    rows = _report(demo, failures, elapsed, sum(proc.cpu_times()[:2]) - cpu0, proc.memory_info().rss / 2**20)
    log.info("demo.finished", ok=not failures)
    return not failures, rows


@contextmanager
def _setup(demo: _Run, heartbeat_interval: float) -> Iterator[_Peers]:
    """A service and two clients on loopback, with their own poll and timer threads; on the
    way out the clients leave first, so the service sees its peers go (reason=peer_closed)."""

    def protocol_for(tally: Tally) -> Callable[[], DemoProtocol]:
        return lambda: DemoProtocol(heartbeat_interval, tally.disconnected)

    with (
        links.PollHandler("demo-poll") as poll,
        links.Timer(name="demo-timer") as timer,
        links.Svc.bind(
            "127.0.0.1:0", protocol=protocol_for(demo.server), callback=demo.server, max_connections=2, name="svc",
            poll_handler=poll, timer=timer,
        ) as svc,
    ):  # fmt: skip
        svc_sender = svc.into_sender_with_spawned_recver()
        addr = f"127.0.0.1:{svc.local_addr[1]}"
        connect = {"protocol": protocol_for(demo.clients), "timeout": 5.0, "poll_handler": poll, "timer": timer}
        clients = demo.clients
        feed = links.Clt.connect(addr, callback=clients, name="feed", **connect).into_sender_with_spawned_recver_ref()
        rtt = links.Clt.connect(
            addr, callback=clients + demo.answers, name="rtt", **connect
        ).into_sender_with_spawned_recver()
        try:
            yield _Peers(svc_sender, feed, rtt)
        finally:
            demo.progress.clear()
            feed.close()
            rtt.close()
        demo.server.wait(lambda: demo.server.disconnects >= 2, demo.grace())


def _stream(demo: _Run, feed: links.Ref) -> None:
    """1. One-way stream: N threads, one shared sender Ref (each thread holds a clone)."""
    server, clients, progress = demo.server, demo.clients, demo.progress
    per_thread = [demo.messages // demo.threads + (i < demo.messages % demo.threads) for i in range(demo.threads)]
    workers = [
        threading.Thread(
            target=_feed, args=(feed.clone(), i, n, demo.feed_deadline, demo.errors), name=f"demo-feed-{i}"
        )
        for i, n in enumerate(per_thread)
    ]
    feed_started = time.monotonic()
    for w in workers:
        w.start()
    for w in workers:
        while w.is_alive():
            w.join(0.1)
            progress.update(f"feed: sent {clients.sent['tick']}/{demo.messages}, received {server.recv['tick']}")
    demo.ticks_sent = ticks_sent = clients.sent["tick"]
    server.expect_ticks(ticks_sent)

    def show() -> None:
        progress.update(f"feed: received {server.recv['tick']}/{ticks_sent}")

    if not server.wait(lambda: server.recv["tick"] >= ticks_sent, demo.grace(), show):
        demo.failures.append(f"ticks: {server.recv['tick']} of {ticks_sent} arrived")
    demo.feed_seconds = (server.last_tick_at or time.monotonic()) - feed_started


def _time_round_trips(demo: _Run, rtt: links.CltSender) -> None:
    """2. Round trips, one at a time: send, then wait for the answer the poll thread hands over."""
    for i in range(demo.round_trips):
        if time.monotonic() >= demo.deadline:
            return
        t0 = time.perf_counter_ns()
        if rtt.send({"t": "req", "id": i}, timeout=1.0) is not links.SendStatus.COMPLETED:
            demo.failures.append(f"round trip {i}: no room to send the request")
            return
        try:
            answer = demo.answers.queue.get(timeout=max(0.0, demo.grace() - time.monotonic()))
        except queue.Empty:
            demo.failures.append(f"round trip {i}: no answer")
            return
        demo.rtts.append((time.perf_counter_ns() - t0) / 1000)
        if answer["id"] != i:
            demo.failures.append(f"round trip {i}: answer to {answer['id']}")
            return
        if i % 256 == 0:
            demo.progress.update(f"round trips: {i}/{demo.round_trips}")


def _say_done(demo: _Run, svc_sender: links.SvcSender) -> None:
    """3. The service speaks to every client at once; and every end must have had a heartbeat."""
    clients = demo.clients
    delivered = svc_sender.broadcast({"t": "done"}, timeout=1.0)
    if delivered != 2 or not clients.wait(lambda: clients.recv["done"] >= 2, demo.grace()):
        demo.failures.append(f"done: broadcast reached {delivered} connections, {clients.recv['done']} arrived")
    for side in (demo.server, clients):
        if not side.wait(lambda side=side: len(side.heartbeat_ends) >= 2, demo.grace()):
            demo.failures.append("heartbeats: some connection end received none")


#: The kinds counted in the totals; heartbeats aside (see the module docstring).
_KINDS = ("tick", "req", "rsp", "done")


def _check(demo: _Run) -> list[str]:
    """Every failure of the demo: what went wrong on the way, order, and the accounting."""
    failures = demo.failures + demo.errors
    if demo.server.out_of_order:
        failures.append(f"ticks: {demo.server.out_of_order} out of order")
    sent = sum(t.sent[k] for t in (demo.server, demo.clients) for k in _KINDS)
    received = sum(t.recv[k] for t in (demo.server, demo.clients) for k in _KINDS)
    if received != sent:
        failures.append(f"{sent - received} of {sent} messages unaccounted for")
    return failures


def _cut_short(demo: _Run) -> str | None:
    """What the ``--seconds`` cap left unsent, or None."""
    missing = []
    if demo.ticks_sent < demo.messages:
        missing.append(f"{demo.ticks_sent:,} of {demo.messages:,} one-way messages")
    if len(demo.rtts) < demo.round_trips:
        missing.append(f"{len(demo.rtts):,} of {demo.round_trips:,} round trips")
    return f"the {demo.seconds:g} s cap (--seconds) stopped it at " + " and ".join(missing) if missing else None


def _report(demo: _Run, failures: list[str], elapsed: float, cpu: float, rss: float) -> list[tuple[str, object]]:
    """The summary table's rows."""
    sides = (demo.server, demo.clients)
    ordered = sorted(demo.rtts)

    def micros(value: float) -> str:
        return f"{value:.0f} µs" if ordered else "n/a"

    ticks, feed_seconds = demo.server.recv["tick"], demo.feed_seconds
    cut_short = _cut_short(demo)
    verdict = "OK: every message accounted for" if not failures else "FAILED: " + "; ".join(failures)
    return [
        ("messages sent", sum(t.sent[k] for t in sides for k in _KINDS)),
        ("messages received", sum(t.recv[k] for t in sides for k in _KINDS)),
        ("one-way ticks", f"{ticks} by {demo.threads} thread(s) sharing one sender Ref, in {feed_seconds:.3f} s"),
        ("one-way rate", f"{ticks / feed_seconds if feed_seconds > 0 else 0:,.0f} msgs/s"),
        ("round trips", len(demo.rtts)),
        ("round trip p50", micros(_percentile(ordered, 50))),
        ("round trip p99", micros(_percentile(ordered, 99))),
        ("round trip mean", micros(statistics.fmean(ordered) if ordered else 0)),
        ("heartbeats sent", sum(t.sent["hb"] for t in sides)),
        ("heartbeats received", sum(t.recv["hb"] for t in sides)),
        ("elapsed", f"{elapsed:.2f} s"),
        ("cpu seconds", f"{cpu:.2f}"),
        ("rss", f"{rss:.1f} MiB"),
        *([("cut short", cut_short)] if cut_short else []),
        ("result", verdict + (", but cut short (above)" if cut_short and not failures else "")),
    ]


def run(args: argparse.Namespace) -> int:
    configure_logging(args.log_level)
    ok, rows = run_demo(
        messages=args.messages, round_trips=args.round_trips, threads=args.threads, seconds=args.seconds,
        heartbeat_interval=args.heartbeat, progress=ProgressLine(),
    )  # fmt: skip
    print_table(rows, title="links demo")
    return 0 if ok else 1


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "demo",
        help="run a service and two clients on loopback, then print a summary",
        description=(
            "A service and two clients on 127.0.0.1: threads sharing one sender Ref stream one-way "
            "messages, a client times request/response round trips, heartbeats run throughout. "
            "Connection events are logged to stderr; the summary goes to stdout. Exit code 0 only "
            "if every message sent was received."
        ),
    )
    parser.add_argument("--messages", type=positive(int), default=20_000, help="one-way messages (default 20000)")
    parser.add_argument("--round-trips", type=positive(int), default=2_000, help="timed round trips (default 2000)")
    parser.add_argument("--threads", type=positive(int), default=4, help="threads sharing the sender Ref (default 4)")
    parser.add_argument("--seconds", type=positive(float), default=30.0, help="cap on sending time, s (default 30)")
    parser.add_argument("--heartbeat", type=positive(float), default=0.1, help="heartbeat interval, s (default 0.1)")
    parser.add_argument("--log-level", choices=LEVELS, default="info", help="lowest log level on stderr (default info)")
    parser.set_defaults(func=run)
