"""The receive path's Python cost per frame: ``Link.next_message`` against ``next_messages``.

No sockets: a ``Link`` is fed reads of 2,000 frames (100-byte payloads, 4-byte length
prefix) and drained the way a driver drains it, each message going to a counting callback:

* ``per frame``: ``next_message()`` until ``NEED_DATA``, the callback once per message (the
  loop a user-thread ``recv`` runs, and the poll thread's loop for stateful messengers);
* ``batch``: ``next_messages()`` until empty, the callback once per message in the list
  (the poll thread's loop for messengers with ``deserialize_many``).

Messengers: ``RawMessenger`` (has the batch form) and ``JsonMessenger`` (has not: its batch
call gives one message, so the two loops should cost about the same, decoding dominating).
The variants are interleaved every round; the table gives medians of microseconds per frame
and of the per-round ratio batch / per frame.

Run: python benchmarks/bench_receive_path.py [--rounds 15] [--reads 50]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable

import links

FRAMES_PER_READ = 2000
PAYLOADS = {"raw": b"x" * 100, "json": b'{"order":1,"side":"buy","qty":100,"px":"101.25","venue":"XLON"}'}
MESSENGERS = {"raw": links.RawMessenger, "json": links.JsonMessenger}


def make_link(messenger: str) -> links.Link:
    protocol = links.Protocol()
    protocol.framer = links.LengthPrefixFramer(header_size=4)
    protocol.messenger = MESSENGERS[messenger]()
    return links.Link(protocol)


def per_frame(link: links.Link, on_recv: Callable[[object, object], None]) -> None:
    next_message, need_data = link.next_message, links.NEED_DATA
    while (msg := next_message()) is not need_data:
        on_recv(None, msg)


def batch(link: links.Link, on_recv: Callable[[object, object], None]) -> None:
    next_messages = link.next_messages
    while msgs := next_messages():
        for msg in msgs:
            on_recv(None, msg)


def measure(messenger: str, drain: Callable[..., None], reads: int) -> float:
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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=15, help="interleaved rounds; medians reported (default 15)")
    parser.add_argument("--reads", type=int, default=50, help=f"reads of {FRAMES_PER_READ} frames per cell (default 50)")
    args = parser.parse_args(argv)
    drains = {"per frame": per_frame, "batch": batch}
    results: dict[tuple[str, str], list[float]] = {}
    started = time.perf_counter()
    for r in range(args.rounds):
        for messenger in MESSENGERS:
            order = list(drains) if r % 2 == 0 else list(reversed(drains))  # alternate who goes first
            for name in order:
                results.setdefault((messenger, name), []).append(measure(messenger, drains[name], args.reads))
    med = statistics.median
    print(f"{args.rounds} interleaved rounds, {args.reads} reads x {FRAMES_PER_READ} frames per cell, "
          f"{time.perf_counter() - started:.0f} s; Python {sys.version.split()[0]}.\n")  # fmt: skip
    print("| messenger | per frame µs | batch µs | batch / per frame |")
    print("|---|---:|---:|---:|")
    for messenger in MESSENGERS:
        one, many = results[(messenger, "per frame")], results[(messenger, "batch")]
        ratio = med(b / a for a, b in zip(one, many))
        print(f"| {messenger} | {med(one):.3f} | {med(many):.3f} | {ratio:.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
