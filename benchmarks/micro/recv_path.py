"""The receive path's Python cost per message, the kernel taken out.

Two tables, one per half of the path:

**Cutting frames** (no sockets): a ``Link`` (``links.lowlevel``) is fed reads of 2,000
frames (100-byte payloads, 4-byte length prefix) and drained the way a driver drains it, each
message going to a counting callback:

* ``per frame``: ``next_message()`` until ``NEED_DATA``, the callback once per message (the
  loop a user-thread ``recv`` runs, and the poll thread's loop for stateful messengers);
* ``batch``: ``next_messages()`` until empty, the callback once per message in the list
  (the poll thread's loop for messengers with ``deserialize_many``).

Messengers: ``RawMessenger`` (has the batch form) and ``JsonMessenger`` (has not: its batch
call gives one message, so the two loops should cost about the same, decoding dominating).
The table gives medians of microseconds per frame and of the per-round ratio batch / per frame.

**A user thread's recv**: a real connection (``Clt.from_socket`` on a loopback socket pair)
whose socket is wrapped so that every ``recv_into`` hands over exactly one 104-byte frame at
once; every other socket call goes to the real socket, so ``setsockopt`` is a real syscall:

* ``Clt.recv()``: waits without a timeout (the read that sleeps in ``recv``);
* ``Clt.recv(30)``: with a timeout, so each read waits for what is left of its deadline;
* ``plain``: one ``recv_into`` of the frame, the length unpacked, the payload copied.

The table gives medians of microseconds per message (the empty loop's cost taken off) and the
per-round ratio to ``plain``. Variants are interleaved every round in both tables.

Run: python benchmarks/micro/recv_path.py [--rounds 9] [--reads 50] [--count 100000]
"""

from __future__ import annotations

import argparse
import socket
import statistics
import struct
import sys
import time
from collections.abc import Callable

import links
from links import bench
from links.lowlevel import NEED_DATA, Link

FRAMES_PER_READ = 2000
PAYLOADS = {"raw": b"x" * 100, "json": b'{"order":1,"side":"buy","qty":100,"px":"101.25","venue":"XLON"}'}
MESSENGERS = {"raw": links.RawMessenger, "json": links.JsonMessenger}
FRAME = struct.pack("!I", 100) + b"x" * 100


# -- cutting frames ---------------------------------------------------------------------------


def make_link(messenger: str) -> Link:
    protocol = links.Protocol()
    protocol.framer = links.LengthPrefixFramer(header_size=4)
    protocol.messenger = MESSENGERS[messenger]()
    return Link(protocol)


def per_frame(link: Link, on_recv: Callable[[object, object], None]) -> None:
    next_message = link.next_message
    while (msg := next_message()) is not NEED_DATA:
        on_recv(None, msg)


def batch(link: Link, on_recv: Callable[[object, object], None]) -> None:
    next_messages = link.next_messages
    while msgs := next_messages():
        for msg in msgs:
            on_recv(None, msg)


def measure_cut(messenger: str, drain: Callable[..., None], reads: int) -> float:
    """Microseconds per frame over ``reads`` reads of FRAMES_PER_READ frames each."""
    link = make_link(messenger)
    read = link.framer.encode(PAYLOADS[messenger]) * FRAMES_PER_READ
    count = 0

    def on_recv(con_id: object, msg: object) -> None:
        nonlocal count
        count += 1

    t0 = time.perf_counter()
    for _ in range(reads):
        link.receive_data(read)
        drain(link, on_recv)
    elapsed = time.perf_counter() - t0
    if count != reads * FRAMES_PER_READ:
        raise SystemExit(f"{messenger} {drain.__name__}: {count} messages, expected {reads * FRAMES_PER_READ}")
    return elapsed / count * 1e6


def cutting_table(rounds: int, reads: int) -> list[str]:
    drains = {"per frame": per_frame, "batch": batch}
    results: dict[tuple[str, str], list[float]] = {}
    for r in range(rounds):
        for messenger in MESSENGERS:
            order = list(drains) if r % 2 == 0 else list(reversed(drains))  # alternate who goes first
            for name in order:
                results.setdefault((messenger, name), []).append(measure_cut(messenger, drains[name], reads))
    med = statistics.median
    lines = ["| messenger | per frame µs | batch µs | batch / per frame |", "|---|---:|---:|---:|"]
    for messenger in MESSENGERS:
        one, many = results[(messenger, "per frame")], results[(messenger, "batch")]
        lines.append(f"| {messenger} | {med(one):.3f} | {med(many):.3f} | {med(b / a for a, b in zip(one, many)):.2f} |")
    return lines


# -- a user thread's recv ---------------------------------------------------------------------


class OneFrameAReader:
    """A socket whose every ``recv_into`` yields one whole frame; the rest is the real socket's."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock

    def recv_into(self, view: memoryview, nbytes: int = 0, flags: int = 0) -> int:
        view[: len(FRAME)] = FRAME
        return len(FRAME)

    def __getattr__(self, name: str) -> object:
        return getattr(self.sock, name)


def recv_table(rounds: int, count: int) -> list[str]:
    client, server = bench.loopback_pair()
    stub = OneFrameAReader(client)
    clt = links.Clt.from_socket(stub, links.Role.INITIATOR, protocol=bench.Raw)  # type: ignore[arg-type]
    view, unpack = memoryview(bytearray(4096)), struct.Struct("!I").unpack_from

    def plain() -> None:
        stub.recv_into(view)
        (length,) = unpack(view, 0)
        bytes(view[4 : 4 + length])

    variants: dict[str, Callable[[], object]] = {
        "Clt.recv()": clt.recv,
        "Clt.recv(30)": lambda: clt.recv(30.0),
        "plain": plain,
    }
    results: dict[str, list[float]] = {name: [] for name in variants}
    try:
        for r in range(rounds):
            names = list(variants)
            for name in names[r % len(names) :] + names[: r % len(names)]:  # a different one first each round
                results[name].append(bench.timed(variants[name], count))
        empty = statistics.median(bench.timed(lambda: None, count) for _ in range(rounds))
    finally:
        clt.close()
        server.close()
    return bench.ratio_table({name: [v - empty for v in values] for name, values in results.items()}, "plain")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=9, help="interleaved rounds; medians reported (default 9)")
    parser.add_argument("--reads", type=int, default=50, help=f"cutting: reads of {FRAMES_PER_READ} frames per cell (default 50)")
    parser.add_argument("--count", type=int, default=100_000, help="recv: messages per variant per round (default 100000)")
    args = parser.parse_args(argv)
    bench.quiet_logs()
    try:
        cutting = cutting_table(args.rounds, args.reads)
        recv = recv_table(args.rounds, args.count)
    finally:
        links.shutdown()
    print(f"{args.rounds} interleaved rounds; Python {sys.version.split()[0]}.\n")
    print(f"Cutting frames: {args.reads} reads x {FRAMES_PER_READ} frames per cell, µs per frame\n")
    print("\n".join(cutting))
    print(f"\nA user thread's recv: {args.count:,} messages of {len(FRAME) - 4} bytes per cell, the read stubbed\n")
    print("\n".join(recv))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
