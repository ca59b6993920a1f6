"""The send path's Python cost per message, with the syscall taken out.

A real ``Clt`` is connected on loopback, then its socket's ``send`` is swapped for a stub that
takes everything at once (this reaches into links' internals on purpose: it is the only way to
time the library's own Python without the 4-5 us the kernel spends per ``send``). Variants,
interleaved every round, 100-byte messages, length-prefixed raw frames:

* ``Clt.send``: the one-message fast path (no timeout, no ``on_send``);
* ``Clt.send(timeout=5)``: the general path (``Connection.write``), which a timeout takes;
* ``Ref.send``: a shared sender ref (``into_sender_with_spawned_recver_ref``), through its lock;
* ``send_many(64)``: per message, one stub call per 64;
* ``plain``: what a plain loop runs, ``struct.pack`` of the length + the payload, and ``send``.

The table gives medians over the rounds of microseconds per message (the empty loop's cost
taken off) and of the per-round ratio to ``plain``: on a shared machine the ratio is the
figure to compare across runs.

Run: python benchmarks/bench_send_path.py [--rounds 9] [--count 200000]
"""

from __future__ import annotations

import argparse
import logging
import socket
import statistics
import struct
import threading
import time
from collections.abc import Callable

import structlog

import links

PAYLOAD = b"x" * 100


class Raw(links.Protocol):
    framer = links.LengthPrefixFramer(header_size=4)
    messenger = links.RawMessenger()


class TakesAll:
    """A socket whose ``send`` takes every byte at once; everything else is the real socket's."""

    def __init__(self, sock: object = None) -> None:
        self._sock = sock

    def send(self, data: bytes, flags: int = 0) -> int:
        return len(data)

    def __getattr__(self, name: str) -> object:
        return getattr(self._sock, name)


def timed(fn: Callable[[], None], count: int, per_call: int = 1) -> float:
    """Microseconds per message for ``count`` calls of ``fn``, each sending ``per_call``."""
    t0 = time.perf_counter()
    for _ in range(count):
        fn()
    return (time.perf_counter() - t0) / (count * per_call) * 1e6


def options(description: str, count: int) -> argparse.Namespace:
    """``--rounds`` and ``--count``, then quiet logs: how each stubbed-path benchmark starts."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--count", type=int, default=count, help="messages per variant per round")
    args = parser.parse_args()
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    return args


def loopback_clts(n: int) -> tuple[socket.socket, list[links.Clt]]:
    """``n`` real ``Clt``s connected on loopback to a listener that never reads (their
    sockets get stubbed); close the listener after them."""
    listener = socket.create_server(("127.0.0.1", 0))
    threading.Thread(target=lambda: listener.accept()[0].recv(1), daemon=True).start()
    target = f"127.0.0.1:{listener.getsockname()[1]}"
    return listener, [links.Clt.connect(target, protocol=Raw, timeout=5) for _ in range(n)]


def print_table(results: dict[str, list[float]], plain: str) -> None:
    """Per variant, the median µs per message and the median per-round ratio to ``plain``."""
    print("\n| variant | µs/msg | × plain (per-round ratio) |\n|---|---:|---:|")
    for name, values in results.items():
        ratio = statistics.median(v / p for v, p in zip(values, results[plain]))
        print(f"| {name} | {statistics.median(values):.3f} | {ratio:.2f} |")


def main() -> None:
    args = options(__doc__.splitlines()[0], 200_000)
    listener, (clt, ref_clt) = loopback_clts(2)
    for c in (clt, ref_clt):
        transport = c._con.attachment.transport  # the stub: see the module docstring
        transport.sock = TakesAll(transport.sock)
    ref = ref_clt.into_sender_with_spawned_recver_ref()

    stub, pack, batch = TakesAll(), struct.Struct("!I").pack, [PAYLOAD] * 64
    # name -> (one call, messages per call)
    variants: dict[str, tuple[Callable[[], object], int]] = {
        "Clt.send": (lambda: clt.send(PAYLOAD), 1),
        "Clt.send(timeout=5)": (lambda: clt.send(PAYLOAD, 5.0), 1),
        "Ref.send": (lambda: ref.send(PAYLOAD), 1),
        "send_many(64)": (lambda: clt.send_many(batch), 64),
        "plain pack + send": (lambda: stub.send(pack(len(PAYLOAD)) + PAYLOAD), 1),
    }
    results: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(args.rounds):
        for name, (call, per_call) in variants.items():
            results[name].append(timed(call, args.count // per_call, per_call))
    # Every call pays the loop and a lambda call: the empty lambda's cost, per message, is
    # taken off each variant.
    empty = statistics.median(timed(lambda: None, args.count) for _ in range(args.rounds))
    for name, (_, per_call) in variants.items():
        results[name] = [v - empty / per_call for v in results[name]]

    print(f"{args.rounds} rounds x {args.count:,} messages of {len(PAYLOAD)} bytes; medians over the rounds")
    print_table(results, "plain pack + send")
    ref.close()
    clt.close()
    listener.close()
    links.shutdown()


if __name__ == "__main__":
    main()
