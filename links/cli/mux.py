"""``links mux echo`` and ``links mux probe``: channels (yamux streams) from the command line.

``links mux echo --host H --port P`` serves yamux on every TCP connection it accepts and, on
every stream the peer opens, echoes each message back; a message is a frame with a 4-byte
big-endian length in front. ``links mux probe HOST:PORT --streams N --messages K`` opens N
streams at once over one TCP connection, sends K frames of random sizes (1 byte to
``--max-size``, 256 KiB by default) on each, reads the echoes back and checks every byte and
the order on each stream; it prints a summary and exits 0 only if all match. Both speak the
published yamux format, so either works against another implementation of it.
"""

from __future__ import annotations

import argparse
import hashlib
import random
import sys
import threading
import time
from collections.abc import Iterator
from typing import Any

import links
from links.lowlevel import format_addr
import links.mux
from links.mux import Mux

from ._args import address, at_least, port, positive
from ._logging import LEVELS
from ._startup import serve_until_interrupted, start, tls_options
from ._tls import add_client_options, add_server_options, client_context, server_context

__all__ = ["register"]

#: The largest echo frame either side takes (payload), well above the probe's largest.
MAX_FRAME = 16 << 20
KIB = 1024
#: What one stream of the echo server may owe its peer: an echo is never refused for room
#: (the poll thread cannot wait), and a peer that keeps sending without reading is cut off
#: by the stall timeout, not by lost echoes.
ECHO_BACKLOG = 64 << 20


class Frames(links.Protocol):
    """4-byte big-endian length, then the payload: the messages of ``echo`` and ``probe``."""

    framer = links.LengthPrefixFramer(header_size=4, byteorder="big", max_frame_size=4 + MAX_FRAME)
    messenger = links.RawMessenger()


class Echo(Frames):
    def send_reply(self, msg: bytes, con: Any) -> None:
        # A peer that left with frames still on their way in makes this raise BrokenError: the
        # library then ends that channel quietly, as broken (no poll.handler_failed).
        con.send(msg)


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "mux",
        help="channels over one TCP connection (yamux): an echo server and a probe",
        description="Serve or probe yamux streams carrying 4-byte length-prefixed frames.",
    )
    commands = parser.add_subparsers(dest="mux_command", metavar="SUBCOMMAND")
    echo = commands.add_parser(
        "echo",
        help="echo every frame on every stream a peer opens",
        description=(
            "Serves yamux on every TCP connection accepted and echoes each frame (4-byte big-endian "
            "length, then the payload) on the stream it came on, until Ctrl-C."
        ),
    )
    echo.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    echo.add_argument("--port", type=port, default=0, help="port to listen on (default 0: any free one, printed)")
    echo.add_argument("--max-channels", type=positive(int), default=1024, help="streams served at once (default 1024)")
    echo.add_argument("--max-connections", type=positive(int), default=128, help="TCP connections at once (default 128)")
    add_server_options(echo)
    echo.add_argument("--log-level", choices=LEVELS, default="info", help="lowest log level on stderr (default info)")
    echo.set_defaults(func=run_echo)

    probe = commands.add_parser(
        "probe",
        help="open streams over one connection, send random frames, check the echoes",
        description=(
            "Opens --streams yamux streams at once over one TCP connection, sends --messages frames "
            "of random sizes on each, reads the echoes back and checks every byte and the order on "
            "each stream. Exit status 0 only if all match."
        ),
    )
    probe.add_argument("addr", type=address, metavar="HOST:PORT", help="the echo server")
    probe.add_argument("--streams", type=positive(int), default=10, help="streams opened at once (default 10)")
    probe.add_argument("--messages", type=positive(int), default=100, help="frames sent on each stream (default 100)")
    probe.add_argument(
        "--max-size", type=at_least(1, MAX_FRAME), default=256 * KIB, help="largest frame payload, bytes (default 262144)"
    )
    probe.add_argument("--seed", type=at_least(0), default=None, help="seed of the random sizes and bytes (default: random, printed)")
    probe.add_argument("--timeout", type=positive(float), default=60.0, help="seconds for the whole probe (default 60)")
    add_client_options(probe)
    probe.add_argument("--log-level", choices=LEVELS, default="warning", help="lowest log level on stderr (default warning)")
    probe.set_defaults(func=run_probe)
    parser.set_defaults(func=lambda args: args._parser.error("a subcommand is needed: echo, probe"))


# -- echo ---------------------------------------------------------------------------------------


def run_echo(args: argparse.Namespace) -> int:
    tls = start(args, server_context)
    try:
        svc = links.Svc.bind(
            f"{args.host}:{args.port}", protocol=Echo, mux=True, max_channels=args.max_channels,
            max_connections=args.max_connections, tls=tls, name="mux-echo", max_outbound=ECHO_BACKLOG,
        )  # fmt: skip
    except OSError as e:
        print(f"links mux echo: cannot listen on {args.host}:{args.port}: {e.strerror or e}", file=sys.stderr)
        return 1
    with svc:
        svc.into_sender_with_spawned_recver()
        print(f"mux echo listening on {format_addr(svc.local_addr)}", flush=True)
        serve_until_interrupted()
    return 0


# -- probe --------------------------------------------------------------------------------------


class _Expect(links.Callback):
    """One stream's echoes, checked against what was sent, in order (poll thread); ``done``
    once all came, one did not match, or the channel ended."""

    def __init__(self, expected: list[tuple[int, bytes]]) -> None:
        self.expected = expected  # (size, digest) of every frame sent, in order
        self.got = 0
        self.mismatch: str | None = None
        self.done = threading.Event()

    def ended(self) -> None:
        self.done.set()  # no more echoes will come: waiting on would only wait for the deadline

    def on_recv(self, con_id: Any, msg: bytes) -> None:
        if self.mismatch is None:
            if self.got >= len(self.expected):
                self.mismatch = f"echo {self.got + 1} of {len(self.expected)}: more echoes than frames sent"
            else:
                size, digest = self.expected[self.got]
                if len(msg) != size or _digest(msg) != digest:
                    self.mismatch = f"echo {self.got + 1}: {len(msg)} bytes, expected frame {self.got + 1} ({size} bytes)"
        self.got += 1
        if self.mismatch is not None or self.got == len(self.expected):
            self.done.set()


class _Probed(Frames):
    """A probe stream's protocol: tells its ``_Expect`` when the channel ends."""

    def __init__(self, expect: _Expect) -> None:
        self.expect = expect

    def on_disconnect(self, con_id: Any) -> None:
        self.expect.ended()


def _frames(seed: int, count: int, max_size: int) -> Iterator[bytes]:
    """One stream's frames, made one at a time (the same ones again for the same seed)."""
    rng = random.Random(seed)
    for _ in range(count):
        yield rng.randbytes(rng.randint(1, max_size))


def _digest(frame: bytes) -> bytes:
    return hashlib.blake2b(frame, digest_size=16).digest()


def run_probe(args: argparse.Namespace) -> int:
    tls = start(args, client_context)
    seed = random.randrange(1 << 32) if args.seed is None else args.seed
    print(f"probe {args.addr}: {args.streams} streams x {args.messages} frames of 1..{args.max_size} bytes, seed {seed}", flush=True)
    deadline = time.monotonic() + args.timeout
    started = time.monotonic()
    try:
        mux = links.mux.connect(args.addr, timeout=min(10.0, args.timeout), name="probe", **tls_options(args, tls))
    except (links.LinksError, OSError) as e:
        print(f"links mux probe: cannot connect to {args.addr}: {e}", file=sys.stderr)
        return 1
    with mux:
        results = _probe(mux, args, seed, deadline)
    seconds = time.monotonic() - started
    failed = [(i, why) for i, why in enumerate(results) if why is not None]
    total = args.streams * args.messages
    if failed:
        for i, why in failed[:10]:
            print(f"stream {i + 1}: {why}", flush=True)
        print(f"FAILED: {len(failed)} of {args.streams} streams did not echo back what was sent ({seconds:.1f} s)", flush=True)
        return 1
    print(f"OK: {args.streams} streams, {total} frames echoed byte for byte and in order ({seconds:.1f} s)", flush=True)
    return 0


def _probe(mux: Mux, args: argparse.Namespace, seed: int, deadline: float) -> list[str | None]:
    """Each stream on a thread of its own, all at once: None per stream that checked out."""
    results: list[str | None] = [None] * args.streams
    start = threading.Barrier(args.streams)

    def one(i: int) -> None:
        stream_seed = seed * 1_000_003 + i
        # Kept as digests: a hundred streams of a hundred 256 KiB frames would not fit in memory.
        expect = _Expect([(len(f), _digest(f)) for f in _frames(stream_seed, args.messages, args.max_size)])
        try:
            left = max(0.1, deadline - time.monotonic())
            ch = mux.open(protocol=lambda: _Probed(expect), callback=expect, timeout=left)
            sender = ch.into_sender_with_spawned_recver()
            start.wait(timeout=max(0.1, deadline - time.monotonic()))
            for frame in _frames(stream_seed, args.messages, args.max_size):
                left = deadline - time.monotonic()
                if left <= 0 or sender.send(frame, timeout=left) is not links.SendStatus.COMPLETED:
                    results[i] = "timed out sending"
                    return
            if not expect.done.wait(max(0.0, deadline - time.monotonic())):
                results[i] = f"timed out: {expect.got} of {args.messages} echoes"
            elif expect.mismatch is not None:
                results[i] = expect.mismatch
            elif expect.got < args.messages:
                results[i] = f"the channel ended after {expect.got} of {args.messages} echoes"
            sender.close()
        except threading.BrokenBarrierError:
            results[i] = "not started: the streams did not all open"
        except links.LinksError as e:
            start.abort()  # the probe has failed: streams still waiting to start need not wait on
            results[i] = f"{type(e).__name__}: {e}"

    threads = [threading.Thread(target=one, args=(i,), name=f"probe-{i + 1}") for i in range(args.streams)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return results
