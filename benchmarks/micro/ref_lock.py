"""The ``Ref`` lock (``SpinParkLock``) against a plain ``threading.Lock``.

``Ref(spins=N)`` serializes its callers with ``SpinParkLock``: a bounded spin of
non-blocking acquires, then a blocking one (see ``links._ref``). This measures whether the
spin earns its keep in CPython, where a spinning thread holds the GIL the lock holder may
need.

Locks: ``SpinParkLock(spins=16)`` (the spin, the default until this benchmark measured it
slower), ``SpinParkLock(spins=0)`` (park at once; ``Ref``'s default now uses the C lock
itself) and ``threading.Lock``, each used as ``with lock:`` the way ``Ref`` uses it.
Critical sections:

* tiny: one integer increment, the pure cost of lock and unlock;
* sendto: one 64-byte ``send`` on a shared connected UDP socket to a local receiver that
  never reads (the kernel drops what overflows), a real syscall that releases the GIL,
  as ``Ref.send`` does.

Threads: 1, 2, 4, 8, all hammering one lock. Each cell runs a fixed number of operations
split across the threads; cells are interleaved (the lock order rotates every round) and
the median over rounds is reported, with the ratio to ``threading.Lock`` from the same run.

Run: python benchmarks/micro/ref_lock.py [--rounds 5] [--scale 1.0]
"""

from __future__ import annotations

import argparse
import socket
import statistics
import sys
import threading
import time
from collections.abc import Callable

from links.lowlevel import SpinParkLock

THREADS = (1, 2, 4, 8)


#: The spin measured against parking at once: the default before spins were switched off.
SPINS = 16


def make_locks() -> dict[str, Callable[[], object]]:
    return {
        "threading.Lock": threading.Lock,
        f"SpinParkLock({SPINS})": lambda: SpinParkLock(spins=SPINS),
        "SpinParkLock(0)": lambda: SpinParkLock(spins=0),
    }


def run_cell(lock: object, threads: int, ops: int, section: Callable[[], None]) -> float:
    """Operations per second with ``threads`` threads doing ``ops`` lock/section/unlock in total."""
    per_thread = ops // threads
    start = threading.Barrier(threads + 1)

    def work() -> None:
        start.wait()
        for _ in range(per_thread):
            with lock:
                section()

    workers = [threading.Thread(target=work) for _ in range(threads)]
    for w in workers:
        w.start()
    start.wait()
    t0 = time.perf_counter()
    for w in workers:
        w.join()
    return per_thread * threads / (time.perf_counter() - t0)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds; medians reported (default 5)")
    parser.add_argument("--scale", type=float, default=1.0, help="multiply the operations per cell (default 1)")
    args = parser.parse_args(argv)

    counter = [0]

    def tiny() -> None:
        counter[0] += 1

    receiver = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    receiver.bind(("127.0.0.1", 0))
    sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sender.connect(receiver.getsockname())
    datagram = bytes(64)
    send = sender.send

    def sendto() -> None:
        send(datagram)

    sections = {"tiny": (tiny, int(200_000 * args.scale)), "sendto": (sendto, int(50_000 * args.scale))}
    locks = make_locks()
    names = list(locks)
    results: dict[tuple[str, int, str], list[float]] = {}
    started = time.perf_counter()
    try:
        for r in range(args.rounds):
            for section_name, (section, ops) in sections.items():
                for threads in THREADS:
                    for i in range(len(names)):
                        name = names[(i + r) % len(names)]  # rotate who goes first each round
                        rate = run_cell(locks[name](), threads, ops, section)
                        results.setdefault((section_name, threads, name), []).append(rate)
            print(f"round {r + 1}/{args.rounds} done", file=sys.stderr)
    finally:
        sender.close()
        receiver.close()

    med = statistics.median
    base = names[0]
    print(f"\n{args.rounds} interleaved rounds; ops per cell: tiny {sections['tiny'][1]:,}, sendto "
          f"{sections['sendto'][1]:,}; {time.perf_counter() - started:.0f} s total. Median ops/s; ratio to "
          f"{base} in brackets (median of per-round ratios).\n")  # fmt: skip
    print("| section | threads | " + " | ".join(names) + " |")
    print("|---|---:|" + "---:|" * len(names))
    for section_name in sections:
        for threads in THREADS:
            cells = []
            base_rates = results[(section_name, threads, base)]
            for name in names:
                rates = results[(section_name, threads, name)]
                cell = f"{med(rates):,.0f}"
                if name != base:
                    cell += f" ({med(a / b for a, b in zip(rates, base_rates)):.2f})"
                cells.append(cell)
            print(f"| {section_name} | {threads} | " + " | ".join(cells) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
