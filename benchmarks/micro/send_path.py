"""The send path's Python cost per message, the kernel taken out.

Each links sender is a real connection (``Clt.from_socket`` on a loopback socket pair) whose
socket is wrapped so that ``send`` takes every byte at once without a syscall: what is left to
time is links' own Python, without the 4-5 µs the kernel spends per ``send``. Every other
socket call goes to the real socket. Variants, interleaved every round, 100-byte messages,
length-prefixed raw frames:

* ``Clt.send``: the one-message fast path (no timeout, no ``on_send``);
* ``Clt.send(timeout=5)``: the general path, which a timeout takes;
* ``CltSender.send``: the sending half of ``Clt.split()``;
* ``Ref.send``: a shared sender ref (``into_sender_with_spawned_recver_ref``), through its lock;
* ``send_many(64)``: per message, one stubbed ``send`` per 64;
* ``stripped``: the least any thread-safe sender can do (take a lock, frame the payload with
  the protocol's framer, ``send``): the floor a links sender could reach;
* ``plain``: what a plain loop runs, ``struct.pack`` of the length + the payload, and ``send``.

The table gives medians over the rounds of microseconds per message (the empty loop's cost
taken off) and of the per-round ratio to ``plain``: on a shared machine the ratio is the
figure to compare across runs.

Run: python benchmarks/micro/send_path.py [--rounds 9] [--count 200000]
"""

from __future__ import annotations

import argparse
import socket
import statistics
import struct
import threading
from collections.abc import Callable

import links
from links import bench

PAYLOAD = b"x" * 100


class TakesAll:
    """A socket whose ``send`` takes every byte at once; everything else is the real socket's."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock

    def send(self, data: bytes, flags: int = 0) -> int:
        return len(data)

    def __getattr__(self, name: str) -> object:
        return getattr(self.sock, name)


def stubbed_clt(peers: list[socket.socket]) -> links.Clt:
    """A connected ``Clt`` whose socket's ``send`` is stubbed; its peer socket goes to ``peers``."""
    client, server = bench.loopback_pair()
    peers.append(server)
    return links.Clt.from_socket(TakesAll(client), links.Role.INITIATOR, protocol=bench.Raw)  # type: ignore[arg-type]


def stripped_sender(sock: TakesAll) -> Callable[[bytes], None]:
    """Lock, frame, send: a thread-safe sender with nothing else."""
    lock, encode, send = threading.Lock(), bench.Raw.framer.encode, sock.send

    def sender(msg: bytes) -> None:
        with lock:
            frame = encode(msg)
            if send(frame, socket.MSG_DONTWAIT) != len(frame):
                raise RuntimeError("a partial send: the stripped sender does not finish frames")

    return sender


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=9, help="interleaved rounds; medians reported (default 9)")
    parser.add_argument("--count", type=int, default=200_000, help="messages per variant per round (default 200000)")
    args = parser.parse_args(argv)
    bench.quiet_logs()
    peers: list[socket.socket] = []
    clt, split_clt, ref_clt = (stubbed_clt(peers) for _ in range(3))
    _, sender = split_clt.split()
    ref = ref_clt.into_sender_with_spawned_recver_ref()
    stub, pack, batch = TakesAll(peers[0]), struct.Struct("!I").pack, [PAYLOAD] * 64
    stripped = stripped_sender(stub)
    # name -> (one call, messages per call)
    variants: dict[str, tuple[Callable[[], object], int]] = {
        "Clt.send": (lambda: clt.send(PAYLOAD), 1),
        "Clt.send(timeout=5)": (lambda: clt.send(PAYLOAD, 5.0), 1),
        "CltSender.send": (lambda: sender.send(PAYLOAD), 1),
        "Ref.send": (lambda: ref.send(PAYLOAD), 1),
        "send_many(64)": (lambda: clt.send_many(batch), 64),
        "stripped": (lambda: stripped(PAYLOAD), 1),
        "plain": (lambda: stub.send(pack(len(PAYLOAD)) + PAYLOAD), 1),
    }
    results: dict[str, list[float]] = {name: [] for name in variants}
    try:
        for r in range(args.rounds):
            names = list(variants)
            for name in names[r % len(names) :] + names[: r % len(names)]:  # a different one first each round
                call, per_call = variants[name]
                results[name].append(bench.timed(call, args.count // per_call, per_call))
        # Every call pays the loop and a lambda call: the empty lambda's cost, per message, is
        # taken off each variant.
        empty = statistics.median(bench.timed(lambda: None, args.count) for _ in range(args.rounds))
        for name, (_, per_call) in variants.items():
            results[name] = [v - empty / per_call for v in results[name]]
    finally:
        for closable in (ref, sender, clt, split_clt, *peers):
            closable.close()
        links.shutdown()
    print(f"{args.rounds} rounds x {args.count:,} messages of {len(PAYLOAD)} bytes; medians over the rounds\n")
    print("\n".join(bench.ratio_table(results, "plain")))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
