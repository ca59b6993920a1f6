"""links.rpc's Python cost per call, the kernel and the other threads taken out.

The receive side of each end is driven Sans-I/O: a ``Link`` over the real ``RpcProtocol``,
fed a whole read's bytes at once, its hooks told of a stand-in connection whose sends only
collect what they are given. What is timed, per message, medians over the rounds:

* ``server``: a read of N requests ``add(i, 1)`` cut, decoded, dispatched to the handler on
  this thread, and the N replies packed and handed to one ``send_many``;
* ``client replies``: a read of N replies cut, decoded and matched, each completing its
  ``call_async`` future;
* ``client call_async``: opening a call (id, future, table) and packing its request, the
  send stubbed out;
* ``msgpack floor``: ``msgpack.unpackb`` of each request plus ``msgpack.packb`` of a reply, a
  Python loop and nothing else: what any msgpack-rpc server in Python pays.

Times are this thread's CPU time (``time.thread_time``), so other processes on a shared host
weigh less than on a wall clock.

Prints a table: medians over the rounds, and each against the msgpack floor of the same run.

Run: python benchmarks/micro/rpc_path.py [--rounds 7] [--batch 1000]
"""

from __future__ import annotations

import argparse
import statistics
import time
from typing import Any

import msgpack

import links
import links.rpc
from links.lowlevel import Link


class Collect:
    """A stand-in hook handle: sends succeed at once and are only counted."""

    con_id = "bench"
    timer = None

    def __init__(self) -> None:
        self.sent = 0

    def send(self, msg: Any, timeout: float | None = None) -> links.SendStatus:
        self.sent += 1
        return links.SendStatus.COMPLETED

    def send_many(self, msgs: Any, timeout: float | None = None) -> links.SendStatus:
        self.sent += len(msgs)
        return links.SendStatus.COMPLETED


def per_message(fn: Any, n: int) -> float:
    start = time.thread_time()  # CPU time of this thread: others' load on a shared host counts less
    fn()
    return (time.thread_time() - start) / n * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--batch", type=int, default=1000)
    args = parser.parse_args()
    n = args.batch
    server = links.rpc.Server({"add": lambda a, b: a + b})
    requests = b"".join(msgpack.packb([0, i, "add", [i, 1]]) for i in range(n))
    replies = b"".join(msgpack.packb([1, i, None, i + 1]) for i in range(n))
    timer = links.Timer(name="bench-timer")
    results: dict[str, list[float]] = {k: [] for k in ("server", "client replies", "client call_async", "msgpack floor")}

    def serve_once() -> None:
        proto = server.protocol()
        con = Collect()
        proto.on_connect(con)  # type: ignore[arg-type]
        link = Link(proto, read_size=len(requests))

        def run() -> None:
            link.receive_data(requests)
            for msg in link.next_messages():
                proto.on_recv(msg)

        results["server"].append(per_message(run, n))
        assert con.sent == n

    def client_once() -> None:
        peer = links.rpc.Peer(timer=timer)
        proto = peer.protocol()
        con = Collect()
        proto.on_connect(con)  # type: ignore[arg-type]
        futures: list[Any] = []
        results["client call_async"].append(per_message(lambda: futures.extend(peer.call_async("add", i, 1) for i in range(n)), n))
        link = Link(proto, read_size=len(replies))

        def run() -> None:
            link.receive_data(replies)
            for msg in link.next_messages():
                proto.on_recv(msg)

        results["client replies"].append(per_message(run, n))
        assert all(f.done() for f in futures)

    def floor_once() -> None:
        frames = [msgpack.packb([0, i, "add", [i, 1]]) for i in range(n)]

        def run() -> None:
            unpackb, packb = msgpack.unpackb, msgpack.packb
            for frame in frames:
                msg = unpackb(frame)
                packb([1, msg[1], None, msg[3][0] + msg[3][1]])

        results["msgpack floor"].append(per_message(run, n))

    try:
        for _ in range(args.rounds):
            serve_once()
            client_once()
            floor_once()
    finally:
        timer.shutdown()
    floor = statistics.median(results["msgpack floor"])
    print("| path | µs per message | × msgpack floor |")
    print("|---|---:|---:|")
    for name, values in results.items():
        median = statistics.median(values)
        print(f"| {name} | {median:.2f} | {median / floor:.2f} |")


if __name__ == "__main__":
    main()
