"""What a links echo server costs per round trip against the least Python that does the job.

W2 (ping-pong, 100-byte messages, one in flight) with the client fixed, a plain blocking
socket pinned to CPU 1, and the server varied, pinned to CPU 0:

* ``links``: a ``Svc`` with its receiver spawned into the poll thread, the protocol's
  ``send_reply`` echoing each message (what ``bench_peers.py`` measures as links' W2 server);
* ``epoll``: the least a poll-thread server can do: one thread, ``select.epoll`` on a
  nonblocking socket, ``recv_into`` a kept buffer, cut frames, ``send`` each reply;
* ``plain``: a thread that sleeps in a blocking ``recv_into`` (bench_peers.py's plain server).

``--tree PATH`` (repeatable) adds a links server run from another checkout (``links@PATH``),
to compare two versions of links in the same run.

The figures are the client's median round trip and the server process's CPU time per round
trip (user and system, from psutil). The server sleeps between messages, so its Python runs
with cold caches and costs far more than a hot loop would say (``bench_recv_path.py``). The
kinds are interleaved every round; the table gives medians and the median of the per-round
ratios to ``plain``.

Run: python benchmarks/bench_echo_server.py [--rounds 8] [--count 20000] [--tree PATH]
"""

from __future__ import annotations

import argparse
import os
import select
import socket
import statistics
import struct
import subprocess
import sys
import time

HEADER = struct.Struct("!I")
PAYLOAD = b"x" * 100
KINDS = ("links", "epoll", "plain")


def _links_server(port_out) -> None:
    import logging

    import structlog

    import links

    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))

    class Echo(links.Protocol):
        framer = links.LengthPrefixFramer(header_size=4)
        messenger = links.RawMessenger()

        def send_reply(self, msg: bytes, con: links.Attachment) -> None:
            con.send(msg)

    svc = links.Svc.bind("127.0.0.1:0", protocol=Echo)
    svc.into_sender_with_spawned_recver()
    port_out(svc.local_addr[1])


def _frames(buf: bytearray, end: int, reply) -> int:
    """Reply to every whole frame in ``buf[:end]``; move the rest to the front; return its size."""
    start, unpack = 0, HEADER.unpack_from
    while end - start >= 4:
        (length,) = unpack(buf, start)
        stop = start + 4 + length
        if stop > end:
            break
        reply(bytes(buf[start + 4 : stop]))
        start = stop
    buf[: end - start] = buf[start:end]
    return end - start


def _epoll_server(conn: socket.socket) -> None:
    conn.setblocking(False)
    epoll = select.epoll()
    epoll.register(conn.fileno(), select.EPOLLIN)
    buf, end, pack = bytearray(1 << 16), 0, HEADER.pack
    view = memoryview(buf)

    def reply(msg: bytes) -> None:
        conn.send(pack(len(msg)) + msg)

    while True:
        epoll.poll()
        try:
            got = conn.recv_into(view[end:])
        except BlockingIOError:
            continue
        if not got:
            return
        end = _frames(buf, end + got, reply)


def _plain_server(conn: socket.socket) -> None:
    buf, end, pack = bytearray(1 << 16), 0, HEADER.pack
    view = memoryview(buf)

    def reply(msg: bytes) -> None:
        conn.sendall(pack(len(msg)) + msg)

    while got := conn.recv_into(view[end:]):
        end = _frames(buf, end + got, reply)


def serve(kind: str) -> None:
    """Print the port, serve one connection at a time until stdin closes."""
    import threading

    def port_out(port: int) -> None:
        print(port, flush=True)

    if kind == "links":
        _links_server(port_out)
    else:
        handler = _epoll_server if kind == "epoll" else _plain_server
        listener = socket.create_server(("127.0.0.1", 0))

        def accept() -> None:
            while True:
                conn, _ = listener.accept()
                conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                threading.Thread(target=handler, args=(conn,), daemon=True).start()

        threading.Thread(target=accept, daemon=True).start()
        port_out(listener.getsockname()[1])
    sys.stdin.read()


def ping_pong(port: int, count: int) -> float:
    """``count`` round trips from a plain blocking client; the median in microseconds."""
    sock = socket.create_connection(("127.0.0.1", port))
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    frame, want = HEADER.pack(len(PAYLOAD)) + PAYLOAD, HEADER.size + len(PAYLOAD)
    buf = bytearray(want)
    view, rtts, clock = memoryview(buf), [], time.perf_counter_ns
    with sock:
        for _ in range(count):
            t0 = clock()
            sock.sendall(frame)
            got = 0
            while got < want:
                n = sock.recv_into(view[got:])
                if not n:
                    raise RuntimeError("the server closed the connection")
                got += n
            rtts.append(clock() - t0)
        if buf[HEADER.size :] != PAYLOAD:
            raise RuntimeError("the echo came back changed")
    return statistics.median(rtts) / 1000


def measure(kind: str, count: int) -> tuple[float, float, float]:
    """(p50 µs, server user µs, server system µs) per round trip."""
    import psutil

    name, _, tree = kind.partition("@")
    env = dict(os.environ, PYTHONPATH=tree) if tree else None
    server = subprocess.Popen(["taskset", "-c", "0", sys.executable, os.path.abspath(__file__), "--serve", name],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env)  # fmt: skip
    try:
        port = int(server.stdout.readline())
        ping_pong(port, count // 10)  # warm-up, on a connection of its own
        process = psutil.Process(server.pid)
        before = process.cpu_times()
        p50 = ping_pong(port, count)
        after = process.cpu_times()
    finally:
        server.stdin.close()
        server.wait(30)
    return p50, (after.user - before.user) / count * 1e6, (after.system - before.system) / count * 1e6


def main() -> None:
    if sys.argv[1:2] == ["--serve"]:
        return serve(sys.argv[2])
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--count", type=int, default=20_000)
    parser.add_argument("--tree", action="append", default=[], help="another links checkout to run as a server")
    args = parser.parse_args()
    os.sched_setaffinity(0, {1})  # the client: the server runs on CPU 0
    kinds = list(KINDS) + [f"links@{os.path.abspath(tree)}" for tree in args.tree]
    results: dict[str, list[tuple[float, float, float]]] = {kind: [] for kind in kinds}
    for r in range(args.rounds):
        for kind in kinds[r % len(kinds) :] + kinds[: r % len(kinds)]:  # a different kind goes first each round
            results[kind].append(measure(kind, args.count))
            p50, user, system = results[kind][-1]
            print(f"round {r + 1}/{args.rounds} {kind:9s} p50 {p50:6.1f} µs, server CPU {user + system:5.1f} µs", file=sys.stderr)
    print(f"\n{args.rounds} rounds x {args.count:,} round trips; server on CPU 0, plain client on CPU 1\n")
    print("| server | p50 µs | × plain | server CPU µs/round trip (user + system) | × plain |")
    print("|---|---:|---:|---:|---:|")
    plain = results["plain"]
    for kind in kinds:
        rows = results[kind]
        p50 = statistics.median(row[0] for row in rows)
        user, system = (statistics.median(row[i] for row in rows) for i in (1, 2))
        p50_ratio = statistics.median(a[0] / b[0] for a, b in zip(rows, plain))
        cpu_ratio = statistics.median((a[1] + a[2]) / (b[1] + b[2]) for a, b in zip(rows, plain))
        print(f"| {kind} | {p50:.1f} | {p50_ratio:.2f} | {user + system:.1f} ({user:.1f} + {system:.1f}) | {cpu_ratio:.2f} |")


if __name__ == "__main__":
    main()
