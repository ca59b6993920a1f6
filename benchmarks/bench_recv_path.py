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

import socket
import statistics
import struct
from collections.abc import Callable

from bench_send_path import loopback_clts, options, print_table, timed

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
    args = options(__doc__.splitlines()[0], 100_000)
    listener, (clt,) = loopback_clts(1)
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

    print(f"{args.rounds} rounds x {args.count:,} messages of {len(FRAME) - 4} bytes; medians over the rounds")
    print_table(results, "plain recv_into")
    transport.sock = real
    clt.close()
    listener.close()
    links.shutdown()


if __name__ == "__main__":
    main()
