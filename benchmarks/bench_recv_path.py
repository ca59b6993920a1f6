"""A user thread's ``recv`` path: Python cost per message, with the socket's read stubbed.

A real ``Clt`` is connected on loopback, then its socket is wrapped so that every
``recv_into`` hands over exactly one 104-byte frame at once (it reaches into links' internals,
as ``bench_send_path.py`` does, to time the library's own Python without the kernel). Every
other socket call goes to the real socket, so ``setsockopt`` is a real syscall. Variants,
interleaved every round:

* ``Clt.recv()``: waits without a timeout (the read that sleeps in ``recv``);
* ``Clt.recv(30)``: with a timeout, so each read waits for what is left of its deadline;
* ``plain recv_into``: one ``recv_into`` of the frame, the length unpacked, the payload copied.

The table gives medians over the rounds of microseconds per message (the empty loop's cost
taken off) and the per-round ratio to ``plain``.

Run: python benchmarks/bench_recv_path.py [--rounds 9] [--count 100000]
"""

from __future__ import annotations

import argparse
import logging
import socket
import statistics
import struct
import threading
from collections.abc import Callable

import structlog
from bench_send_path import Raw, timed

import links

FRAME = struct.pack("!I", 100) + b"x" * 100


class OneFrameAReader:
    """A socket whose every ``recv_into`` yields one whole frame; the rest is the real socket's."""

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock

    def recv_into(self, view: memoryview, nbytes: int = 0, flags: int = 0) -> int:
        view[: len(FRAME)] = FRAME
        return len(FRAME)

    def __getattr__(self, name: str) -> object:
        return getattr(self._sock, name)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--count", type=int, default=100_000, help="messages per variant per round")
    args = parser.parse_args()
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))

    listener = socket.create_server(("127.0.0.1", 0))
    threading.Thread(target=lambda: listener.accept()[0].recv(1), daemon=True).start()
    clt = links.Clt.connect(f"127.0.0.1:{listener.getsockname()[1]}", protocol=Raw, timeout=5)
    transport = clt._con.attachment.transport  # the stub: see the module docstring
    real = transport.sock
    stub = transport.sock = OneFrameAReader(real)

    view, unpack = memoryview(bytearray(4096)), struct.Struct("!I").unpack_from

    def plain() -> None:
        stub.recv_into(view)
        (length,) = unpack(view, 0)
        bytes(view[4 : 4 + length])

    variants: dict[str, Callable[[], object]] = {
        "Clt.recv()": clt.recv,
        "Clt.recv(30)": lambda: clt.recv(30.0),
        "plain recv_into": plain,
    }
    results: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(args.rounds):
        for name, call in variants.items():
            results[name].append(timed(call, args.count))
    empty = statistics.median(timed(lambda: None, args.count) for _ in range(args.rounds))
    results = {name: [v - empty for v in values] for name, values in results.items()}

    base = results["plain recv_into"]
    print(f"{args.rounds} rounds x {args.count:,} messages of {len(FRAME) - 4} bytes; medians over the rounds")
    print("\n| variant | µs/msg | × plain (per-round ratio) |\n|---|---:|---:|")
    for name, values in results.items():
        ratio = statistics.median(v / p for v, p in zip(values, base))
        print(f"| {name} | {statistics.median(values):.3f} | {ratio:.2f} |")
    transport.sock = real
    clt.close()
    listener.close()
    links.shutdown()


if __name__ == "__main__":
    main()
