"""links against plain blocking Python sockets, side by side in one process run.

Workloads (100-byte payloads behind a 4-byte big-endian length prefix, on 127.0.0.1):

* W1 one-way: the client sends N messages as fast as it can; the clock stops when the
  server has counted the last one.
  - links: ``Clt.send()`` into a ``Svc`` whose receiver is spawned into the poll thread,
    with a counting callback;
  - plain: ``sendall()`` of a freshly built frame into a server thread that reads with
    ``recv_into`` into one buffer, cuts frames with ``struct``, copies each payload out
    and counts it.
* W2 ping-pong: the client sends one message and waits for its echo; each round trip is
  timed (p50 / p99).
  - links: a ``Svc`` spawned into the poll thread echoing from ``Protocol.send_reply``; the
    client calls ``send`` then ``recv``;
  - plain: a server thread echoing with blocking ``recv_into`` / ``sendall``; the client
    does the same.

Both sides keep their connections open for the whole run. Each round runs one block of
each workload on each side, alternating which side goes first; the table reports the median
over rounds and the median of the per-round ratios. Absolute numbers on a shared machine
are noise; the ratio links/plain measured in the same run is what to read. Both sides use
two threads (client + server/poll) and TCP_NODELAY.

``--profile`` adds one W1 links block profiled with ``cProfile`` on the sending thread and
on the poll thread itself (enabled there through ``PollHandler.call_soon``), and the Python
cost per message of the send and receive paths on a null socket (no kernel, no GIL
sharing), links against the plain loop.

Run: python benchmarks/bench_links_vs_sockets.py [--rounds 30] [--messages 20000] [--round-trips 2000]
"""

from __future__ import annotations

import argparse
import cProfile
import io
import logging
import pstats
import socket
import statistics
import struct
import sys
import threading
import time
from collections.abc import Callable

import structlog

import links
from links.bench._child import read_frames, recv_exact  # the same plain loop links bench uses

# Connection events would go to stdout by structlog's default; a benchmark wants warnings only.
structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))

HEADER = struct.Struct("!I")


class Raw(links.Protocol):
    framer = links.LengthPrefixFramer(header_size=4)
    messenger = links.RawMessenger()


class RawEcho(Raw):
    def send_reply(self, msg, con):
        con.send(msg)  # one message in flight: there is always room, this never waits


class Count(links.Callback):
    """Counts received messages on the poll thread; sets ``done`` when ``target`` is reached."""

    def __init__(self) -> None:
        self.count = 0
        self.target = -1
        self.done = threading.Event()

    def on_recv(self, con_id, msg) -> None:
        self.count += 1
        if self.count == self.target:
            self.done.set()

    def expect(self, more: int) -> threading.Event:
        """Arm for ``more`` messages after those counted so far (call between blocks only)."""
        self.done = threading.Event()
        self.target = self.count + more
        return self.done


# Each side keeps its connections open for the whole run, and blocks of work alternate
# between them: a noisy phase on a shared machine then hits both sides alike.


class LinksSide:
    """W1: a client sending into a spawned, counting service. W2: send+recv against an echo."""

    name = "links"

    def __init__(self) -> None:
        self.poll = links.PollHandler("bench-poll")
        self.timer = links.Timer(name="bench-timer")
        rt = {"poll_handler": self.poll, "timer": self.timer}
        self.count = Count()
        self.svc1 = links.Svc.bind("127.0.0.1:0", protocol=Raw, callback=self.count, **rt)
        self.svc1.into_sender_with_spawned_recver()
        self.svc2 = links.Svc.bind("127.0.0.1:0", protocol=RawEcho, **rt)
        self.svc2.into_sender_with_spawned_recver()
        self.clt1 = links.Clt.connect(f"127.0.0.1:{self.svc1.local_addr[1]}", protocol=Raw, **rt)
        self.clt2 = links.Clt.connect(f"127.0.0.1:{self.svc2.local_addr[1]}", protocol=Raw, **rt)

    def one_way(self, n: int, payload: bytes, profile: cProfile.Profile | None = None) -> float:
        """Seconds from the first send until the service counted the ``n``-th message."""
        done = self.count.expect(n)
        send = self.clt1.send
        t0 = time.perf_counter()
        if profile is not None:
            profile.enable()
        for _ in range(n):
            send(payload)
        if profile is not None:
            profile.disable()
        if not done.wait(60):
            raise RuntimeError("links W1: not every message arrived")
        return time.perf_counter() - t0

    def ping_pong(self, n: int, payload: bytes) -> list[float]:
        """Round-trip times in microseconds."""
        send, recv, clock = self.clt2.send, self.clt2.recv, time.perf_counter_ns
        rtts = []
        for _ in range(n):
            t0 = clock()
            send(payload)
            recv()
            rtts.append((clock() - t0) / 1000)
        return rtts

    def profile_one_way(self, n: int, payload: bytes) -> tuple[cProfile.Profile, cProfile.Profile]:
        """One W1 block profiled on both threads: (the sending thread, the poll thread)."""
        sending, polling = cProfile.Profile(), cProfile.Profile()
        self.poll.call_soon(polling.enable)  # runs on the poll thread, so it profiles that thread
        self.poll.sync()
        self.one_way(n, payload, sending)
        self.poll.call_soon(polling.disable)
        self.poll.sync()
        return sending, polling

    def close(self) -> None:
        for closable in (self.clt1, self.clt2, self.svc1, self.svc2, self.poll, self.timer):
            closable.close() if hasattr(closable, "close") else closable.shutdown()


def _listener() -> socket.socket:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(1)
    return sock


def _connected_pair(serve: Callable[[socket.socket], None]) -> tuple[socket.socket, threading.Thread]:
    """A client socket and the server thread running ``serve`` on its accepted peer."""
    with _listener() as listener:
        client = socket.create_connection(listener.getsockname())
        conn, _ = listener.accept()
    for sock in (client, conn):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def run() -> None:
        with conn:
            serve(conn)

    thread = threading.Thread(target=run, name="plain-server")
    thread.start()
    return client, thread


class PlainSide:
    """The same two workloads with blocking sockets and one server thread per connection."""

    name = "plain"

    def __init__(self) -> None:
        self.count = Count()
        self.sock1, self.thread1 = _connected_pair(
            lambda conn: read_frames(conn, lambda msg: self.count.on_recv(None, msg), 1 << 16)
        )
        self.sock2, self.thread2 = _connected_pair(
            lambda conn: read_frames(conn, lambda msg: conn.sendall(HEADER.pack(len(msg)) + msg), 1 << 16)
        )
        self.header, self.body = memoryview(bytearray(4)), memoryview(bytearray(1 << 16))

    def one_way(self, n: int, payload: bytes) -> float:
        done = self.count.expect(n)
        sendall, pack = self.sock1.sendall, HEADER.pack
        t0 = time.perf_counter()
        for _ in range(n):
            sendall(pack(len(payload)) + payload)  # build each frame, as a real sender would
        if not done.wait(60):
            raise RuntimeError("plain W1: not every message arrived")
        return time.perf_counter() - t0

    def ping_pong(self, n: int, payload: bytes) -> list[float]:
        sendall, pack, clock = self.sock2.sendall, HEADER.pack, time.perf_counter_ns
        header, body = self.header, self.body
        rtts = []
        for _ in range(n):
            t0 = clock()
            sendall(pack(len(payload)) + payload)
            recv_exact(self.sock2, header)
            (length,) = HEADER.unpack(header)
            recv_exact(self.sock2, body[:length])
            bytes(body[:length])
            rtts.append((clock() - t0) / 1000)
        return rtts

    def close(self) -> None:
        for sock, thread in ((self.sock1, self.thread1), (self.sock2, self.thread2)):
            sock.shutdown(socket.SHUT_WR)  # the server thread sees EOF and ends
            thread.join()
            sock.close()


# -- Python cost per message, without the kernel -------------------------------------------


class NullSocket:
    """Takes every byte at once and never blocks: what remains to time is the Python around ``send``."""

    def send(self, data: bytes, flags: int = 0) -> int:
        return len(data)

    def fileno(self) -> int:
        return -1

    def getsockname(self) -> tuple[str, int]:
        return ("127.0.0.1", 1)

    def getpeername(self) -> tuple[str, int]:
        return ("127.0.0.1", 2)

    def setblocking(self, flag: bool) -> None:
        pass

    def shutdown(self, how: int) -> None:
        pass

    def close(self) -> None:
        pass


def python_costs(payload: bytes, n: int = 200_000) -> list[tuple[str, float]]:
    """Nanoseconds per message of the send and receive paths' own Python (best of 5)."""

    def best(loop: Callable[[], None]) -> float:
        return min(_timed(loop) for _ in range(5)) / n * 1e9

    def null_clt() -> links.Clt:
        return links.Clt.from_socket(NullSocket(), links.Role.INITIATOR, protocol=Raw)

    clt, (_, sender), ref = null_clt(), null_clt().split(), links.Ref(null_clt().split()[1])
    sink, pack = NullSocket(), HEADER.pack
    frames = (pack(len(payload)) + payload) * n

    def links_cut() -> None:
        link = links.Link(Raw())
        link.receive_data(frames)
        next_message, need = link.next_message, links.NEED_DATA
        while next_message() is not need:
            pass

    def plain_cut() -> None:
        read_frames(_Replay(frames), lambda msg: None, 1 << 16)

    def sending(send: Callable[[bytes], object]) -> Callable[[], None]:
        def loop() -> None:
            for _ in range(n):
                send(payload)

        return loop

    rows = [
        (f"send: {name}", best(sending(f)))
        for name, f in (("Clt.send", clt.send), ("CltSender.send", sender.send), ("Ref.send", ref.send),
                        ("plain pack + sock.send", lambda p: sink.send(pack(len(p)) + p)))
    ]  # fmt: skip
    rows += [("receive: Link.next_message (cut + copy out)", best(links_cut))]
    rows += [("receive: plain loop (cut + copy out)", best(plain_cut))]
    for closable in (clt, sender, ref):
        closable.close()
    return rows


class _Replay:
    """A socket whose ``recv_into`` hands out one prepared byte string, then EOF."""

    def __init__(self, data: bytes) -> None:
        self.data, self.at = memoryview(data), 0

    def recv_into(self, view: memoryview) -> int:
        n = min(len(view), len(self.data) - self.at)
        view[:n] = self.data[self.at : self.at + n]
        self.at += n
        return n


def _timed(fn: Callable[[], None]) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


# -- the harness -----------------------------------------------------------------------------


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=30, help="interleaved rounds (default 30)")
    parser.add_argument("--messages", type=int, default=20_000, help="W1 messages per block (default 20000)")
    parser.add_argument("--round-trips", type=int, default=2_000, help="W2 round trips per block (default 2000)")
    parser.add_argument("--size", type=int, default=100, help="payload bytes (default 100)")
    parser.add_argument("--profile", action="store_true", help="also profile one W1 links block (both threads)")
    args = parser.parse_args(argv)
    payload = bytes(i % 256 for i in range(args.size))

    started = time.perf_counter()
    sides = {"links": LinksSide(), "plain": PlainSide()}
    results: dict[str, dict[str, list[float]]] = {m: {"links": [], "plain": []} for m in ("w1", "p50", "p99")}
    try:
        # Warm-up: first blocks pay for imports, buffer growth and cold caches.
        for side in sides.values():
            side.one_way(args.messages // 4, payload)
            side.ping_pong(args.round_trips // 4, payload)
        for r in range(args.rounds):
            order = ["links", "plain"] if r % 2 == 0 else ["plain", "links"]
            for name in order:
                results["w1"][name].append(args.messages / sides[name].one_way(args.messages, payload))
            for name in order:
                rtts = sides[name].ping_pong(args.round_trips, payload)
                results["p50"][name].append(percentile(rtts, 50))
                results["p99"][name].append(percentile(rtts, 99))
            print(
                f"round {r + 1}/{args.rounds}: W1 links {results['w1']['links'][-1]:,.0f} "
                f"plain {results['w1']['plain'][-1]:,.0f} msgs/s; W2 p50 links {results['p50']['links'][-1]:.1f} "
                f"plain {results['p50']['plain'][-1]:.1f} µs",
                file=sys.stderr,
            )
        profiles = sides["links"].profile_one_way(args.messages, payload) if args.profile else ()
    finally:
        for side in sides.values():
            side.close()

    med = statistics.median
    print(
        f"\n{args.rounds} interleaved rounds, {args.size}-byte payloads, 4-byte length prefix; "
        f"W1 {args.messages:,} messages/block, W2 {args.round_trips:,} round trips/block; "
        f"{time.perf_counter() - started:.0f} s total.\n"
        "Values: median over rounds. Ratio: median of the per-round links/plain ratios (range in brackets).\n"
    )
    print("| workload | unit | links | plain | links/plain | ratio range |")
    print("|---|---|---:|---:|---:|---|")
    for metric, label, unit in (("w1", "W1 one-way throughput", "msgs/s"), ("p50", "W2 round trip p50", "µs"),
                                ("p99", "W2 round trip p99", "µs")):  # fmt: skip
        a, b = results[metric]["links"], results[metric]["plain"]
        ratios = [x / y for x, y in zip(a, b)]
        fmt = "{:,.0f}" if unit == "msgs/s" else "{:.1f}"
        print(
            f"| {label} | {unit} | {fmt.format(med(a))} | {fmt.format(med(b))} | {med(ratios):.2f} "
            f"| {min(ratios):.2f}–{max(ratios):.2f} |"
        )

    if args.profile:
        print("\nPython cost per message without the kernel (null socket, one thread, best of 5):\n")
        print("| path | ns/msg |")
        print("|---|---:|")
        for label, ns in python_costs(payload):
            print(f"| {label} | {ns:,.0f} |")
    for thread, prof in zip(("sending thread", "poll thread"), profiles):
        out = io.StringIO()
        pstats.Stats(prof, stream=out).sort_stats("tottime").print_stats(12)
        print(f"\n{thread} profile, one W1 links block (sorted by own time):\n{out.getvalue()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
