"""What a links echo server costs per round trip against the least Python that does the job.

W2 (ping-pong, 100-byte messages, one in flight) with the client fixed, a plain blocking
socket pinned to CPU 1, and the server varied, pinned to CPU 0:

* ``links``: a ``Svc`` with its receiver spawned into the poll thread, the protocol's
  ``send_reply`` echoing each message (what ``system/vs_peers.py`` measures as links' W2 server);
* ``plain``: ``system/vs_peers.py``'s plain echo server: a thread that sleeps in a blocking
  ``recv_into`` into a kept buffer, cuts frames and ``sendall``s each reply;
* ``epoll``: the same loop on a nonblocking socket that waits in ``select.epoll`` before each
  read: about the least Python a poll-thread server can run.

``links`` is whatever ``import links`` finds; ``--tree PATH`` (repeatable) adds a links
server run from another checkout (``links@PATH``, checked), to compare two versions of links
in the same run.

The figures are the client's median round trip (every echo checked against its numbered
message) and the server process's CPU time per round trip (``getrusage`` in the server: the
total is the kernel's exact runtime, its split into user and system is the kernel's
estimate). The server sleeps between messages, so its Python runs
with cold caches and costs far more than a hot loop would say (``recv_path.py``). The
kinds are interleaved every round; the table gives medians and the median of the per-round
ratios to ``plain``.

Run: python benchmarks/micro/echo_server.py [--rounds 8] [--count 20000] [--tree PATH]
"""

from __future__ import annotations

import argparse
import os
import resource
import select
import socket
import statistics
import subprocess
import sys
import threading
import time

from links.bench import HEADER, read_frames

PAYLOAD = b"x" * 100
KINDS = ("links", "epoll", "plain")


def _links_server(port_out) -> None:
    # Only what every version of links has: ``--tree`` runs this against older checkouts.
    import logging

    import structlog

    import links

    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))

    class Echo(links.Protocol):
        framer = links.LengthPrefixFramer(header_size=4)
        messenger = links.RawMessenger()

        def send_reply(self, msg: bytes, con: object) -> None:
            con.send(msg)  # type: ignore[attr-defined]

    svc = links.Svc.bind("127.0.0.1:0", protocol=Echo)
    svc.into_sender_with_spawned_recver()
    port_out(svc.local_addr[1])


class _Polled:
    """A nonblocking socket whose ``recv_into`` first waits in ``epoll``: what a poll thread does."""

    def __init__(self, conn: socket.socket) -> None:
        conn.setblocking(False)
        self.conn, self.epoll = conn, select.epoll()
        self.epoll.register(conn.fileno(), select.EPOLLIN)

    def recv_into(self, view: memoryview) -> int:
        while True:
            self.epoll.poll()
            try:
                return self.conn.recv_into(view)
            except BlockingIOError:
                continue


def _echo(conn: socket.socket, polled: bool) -> None:
    """``system/vs_peers.py``'s plain echo server (the same read loop), optionally waiting in epoll."""
    pack = HEADER.pack

    def reply(msg: bytes) -> None:
        conn.sendall(pack(len(msg)) + msg)  # one message in flight: there is always room

    read_frames(_Polled(conn) if polled else conn, reply, len(PAYLOAD))


def serve(kind: str) -> None:
    """Print the port and which links this is, then serve (each connection on a thread of its
    own), answering each line on stdin with this process's CPU seconds, until stdin closes."""
    def port_out(port: int) -> None:
        import links

        print(port, os.path.dirname(os.path.dirname(links.__file__)), flush=True)

    if kind == "links":
        _links_server(port_out)
    else:
        listener = socket.create_server(("127.0.0.1", 0))

        def accept() -> None:
            while True:
                conn, _ = listener.accept()
                conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                threading.Thread(target=_echo, args=(conn, kind == "epoll"), daemon=True).start()

        threading.Thread(target=accept, daemon=True).start()
        port_out(listener.getsockname()[1])
    for _ in sys.stdin:
        # getrusage, not psutil's 10 ms ticks: the total is the kernel's exact runtime.
        usage = resource.getrusage(resource.RUSAGE_SELF)
        print(usage.ru_utime, usage.ru_stime, flush=True)


def ping_pong(port: int, count: int) -> float:
    """``count`` round trips from a plain blocking client, each message numbered and its echo
    checked; the median in microseconds."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)  # a lost echo fails, never hangs
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    want = HEADER.size + len(PAYLOAD)
    frames = [HEADER.pack(len(PAYLOAD)) + b"%08d" % i + PAYLOAD[8:] for i in range(count)]
    buf = bytearray(want)
    view, rtts, clock = memoryview(buf), [], time.perf_counter_ns
    with sock:
        for frame in frames:
            t0 = clock()
            sock.sendall(frame)
            got = 0
            while got < want:
                n = sock.recv_into(view[got:])
                if not n:
                    raise RuntimeError("the server closed the connection")
                got += n
            rtts.append(clock() - t0)
            if buf != frame:
                raise RuntimeError(f"the echo of {frame[4:12].decode()} came back as {bytes(buf)!r}")
    return statistics.median(rtts) / 1000


def measure(kind: str, count: int) -> tuple[float, float, float]:
    """(p50 µs, server user µs, server system µs) per round trip."""
    name, _, tree = kind.partition("@")
    env = dict(os.environ, PYTHONPATH=tree) if tree else None
    server = subprocess.Popen(["taskset", "-c", "0", sys.executable, os.path.abspath(__file__), "--serve", name],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env)  # fmt: skip

    def cpu() -> list[float]:
        server.stdin.write("\n")
        server.stdin.flush()
        return [float(s) for s in server.stdout.readline().split()]

    try:
        port, where = server.stdout.readline().split()
        if tree and where != tree:  # an editable install answers for a tree without links/
            raise RuntimeError(f"{kind}: the server imported links from {where}")
        ping_pong(int(port), count // 10)  # warm-up, on a connection of its own
        before = cpu()
        p50 = ping_pong(int(port), count)
        after = cpu()
    finally:
        server.stdin.close()  # its end: the server returns
        try:
            server.wait(30)
        except subprocess.TimeoutExpired:
            server.kill()
            raise
    user, system = ((a - b) / count * 1e6 for a, b in zip(after, before))
    return p50, user, system


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
    print("| server | p50 µs | p50 × plain | server CPU µs/round trip (user + system) | CPU × plain |")
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
