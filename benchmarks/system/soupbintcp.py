"""SoupBinTCP against a plain length-prefixed protocol, both on links, side by side in one run.

What the comparison isolates: the cost of the SoupBinTCP layer itself (packet classes, the
type byte, direction and state checks, numbering and storing Sequenced Data, heartbeat
bookkeeping in ``on_sent``/``on_recv``). Everything else is the same on both sides: a ``Svc``
with its receiver spawned into the poll thread, a ``Clt`` on the calling thread, a 2-byte
big-endian length prefix, 100-byte payloads, loopback, TCP_NODELAY.

Workloads:

* W1 one-way: the client sends N messages as fast as it can; the clock stops when the
  server's callback has counted the last one.
  - soupbintcp: ``UnsequencedData(payload)`` into a ``SvcProtocol`` server (no replies);
  - plain: the bytes themselves (``RawMessenger``) into a protocol with no hooks.
  Both clients have their receivers spawned (the SoupBinTCP one must see heartbeats).
* W2 round trip: the client sends one message and waits for the answer; each is timed.
  - soupbintcp: Unsequenced Data answered by the server's ``reply`` as Sequenced Data
    (numbered and stored in the session store), received with ``Clt.recv``;
  - plain: the bytes echoed from ``send_reply``.

Each round runs one block of each workload on each side, alternating which side goes first;
the table reports medians over rounds and the median of the per-round ratios
soupbintcp/plain, with their range.

Run: python benchmarks/system/soupbintcp.py [--rounds 10] [--messages 20000] [--round-trips 2000]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import threading
import time

import links
from links import bench
from links.soupbintcp import CltProtocol, SvcProtocol, UnsequencedData

PAYLOAD = bytes(range(100))


class Plain(links.Protocol):
    framer = links.LengthPrefixFramer(header_size=2)
    messenger = links.RawMessenger()


class PlainEcho(Plain):
    def send_reply(self, msg, con):
        con.send(msg)  # one message in flight: there is always room, this never waits


class Count(links.Callback):
    """Counts received data messages on the poll thread; sets ``done`` at ``target``."""

    def __init__(self, kind: type) -> None:
        self.kind = kind
        self.count = 0
        self.target = -1
        self.done = threading.Event()

    def on_recv(self, con_id, msg) -> None:
        if type(msg) is self.kind:
            self.count += 1
            if self.count == self.target:
                self.done.set()


class Side:
    """One protocol's pair of services (W1 counting, W2 echoing) and a client to each."""

    def __init__(self, name: str, one_way_protocol, echo_protocol, client_protocol, wrap, data_type: type) -> None:
        self.name = name
        self.wrap = wrap
        self.counter = Count(data_type)
        self.w1 = links.Svc.bind("127.0.0.1:0", protocol=one_way_protocol, callback=self.counter)
        self.w1.into_sender_with_spawned_recver()
        self.w2 = links.Svc.bind("127.0.0.1:0", protocol=echo_protocol)
        self.w2.into_sender_with_spawned_recver()
        # The one-way client never reads, so its receiver goes to the poll thread: SoupBinTCP
        # must still see the server's heartbeats, or it would declare the server dead.
        c1 = links.Clt.connect(f"127.0.0.1:{self.w1.local_addr[1]}", protocol=client_protocol(), timeout=5.0)
        self.c1 = c1.into_sender_with_spawned_recver()
        self.c2 = links.Clt.connect(f"127.0.0.1:{self.w2.local_addr[1]}", protocol=client_protocol(), timeout=5.0)
        while self.c2.recv(timeout=0) is not None:  # the handshake's messages (Login Accepted)
            pass

    def one_way(self, n: int) -> float:
        """Messages per second for ``n`` one-way messages."""
        counter, send, msg = self.counter, self.c1.send, self.wrap(PAYLOAD)
        counter.done.clear()
        counter.target = counter.count + n
        started = time.perf_counter()
        for _ in range(n):
            send(msg)
        if not counter.done.wait(60):
            raise RuntimeError(f"{self.name}: only {counter.count} of {counter.target} arrived")
        return n / (time.perf_counter() - started)

    def round_trips(self, n: int) -> list[float]:
        """Each round trip's duration, in microseconds."""
        send, recv, msg, clock = self.c2.send, self.c2.recv, self.wrap(PAYLOAD), time.perf_counter
        times = []
        for _ in range(n):
            started = clock()
            send(msg)
            if recv(timeout=5.0) is None:
                raise RuntimeError(f"{self.name}: no answer")
            times.append((clock() - started) * 1e6)
        return times

    def close(self) -> None:
        for closable in (self.c1, self.c2, self.w1, self.w2):
            closable.close()


def soupbintcp_side() -> Side:
    credentials = {"username": "bench", "password": "bench"}
    return Side(
        "soupbintcp",
        SvcProtocol(**credentials),
        SvcProtocol(**credentials, reply=lambda payload: payload),
        lambda: CltProtocol(**credentials),
        UnsequencedData,
        UnsequencedData,
    )


def plain_side() -> Side:
    return Side("plain", Plain, PlainEcho, lambda: Plain, lambda payload: payload, bytes)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--messages", type=int, default=20_000)
    parser.add_argument("--round-trips", type=int, default=2_000)
    args = parser.parse_args()
    bench.quiet_logs()

    sides = {"soupbintcp": soupbintcp_side(), "plain": plain_side()}
    results: dict[str, dict[str, list[float]]] = {name: {"w1": [], "p50": [], "p99": []} for name in sides}
    started = time.monotonic()
    try:
        for side in sides.values():  # warm-up, not counted
            side.one_way(1_000)
            side.round_trips(100)
        for r in range(args.rounds):
            order = list(sides) if r % 2 == 0 else list(reversed(sides))
            for name in order:
                results[name]["w1"].append(sides[name].one_way(args.messages))
            for name in order:
                rtts = sides[name].round_trips(args.round_trips)
                results[name]["p50"].append(percentile(rtts, 0.50))
                results[name]["p99"].append(percentile(rtts, 0.99))
    finally:
        for side in sides.values():
            side.close()
        links.shutdown()
    elapsed = time.monotonic() - started

    print(
        f"{args.rounds} interleaved rounds, 100-byte payloads, 2-byte length prefix; W1 {args.messages:,} "
        f"messages per block, W2 {args.round_trips:,} round trips per block; {elapsed:.1f} s in total."
    )
    print(
        f"python {platform.python_version()} on {platform.machine()}, nproc {os.cpu_count()}, "
        f"load average {os.getloadavg()[0]:.2f}"
    )
    print()
    print("| workload | unit | soupbintcp | plain | soupbintcp/plain | ratio range |")
    print("|---|---|---:|---:|---:|---|")
    rows = [("W1 one-way throughput", "msgs/s", "w1", "{:,.0f}"),
            ("W2 round trip p50", "µs", "p50", "{:.1f}"),
            ("W2 round trip p99", "µs", "p99", "{:.1f}")]  # fmt: skip
    for label, unit, key, fmt in rows:
        soup, plain = results["soupbintcp"][key], results["plain"][key]
        ratios = [s / p for s, p in zip(soup, plain)]
        print(
            f"| {label} | {unit} | {fmt.format(statistics.median(soup))} | {fmt.format(statistics.median(plain))} "
            f"| {statistics.median(ratios):.2f} | {min(ratios):.2f}–{max(ratios):.2f} |"
        )


if __name__ == "__main__":
    main()
