"""How close a thread-safe sender can get to a plain loop on W1: clients side by side, one server.

W1 (one-way, 100-byte messages, one ``send`` syscall each) with the server fixed, a links
``Svc`` with its receiver spawned and a counting callback, pinned to CPU 0, and the client
varied, pinned to CPU 1:

* ``links``: ``Clt.send`` per message;
* ``stripped``: the least a thread-safe links sender can do: take the connection's write
  lock, frame the payload with the protocol's framer, ``send`` on links' own socket (this
  reaches into links' internals on purpose, to find the floor of any such design);
* ``plain``: ``sendall(pack(len) + payload)`` on a plain blocking socket.

Each client sends ``--count`` messages; the rate is the client's (the server's receipt of the
last one is checked). The kinds are interleaved every round; the table gives medians and the
median of the per-round ratios to ``plain``.

Run: python benchmarks/bench_send_floor.py [--rounds 5] [--count 300000]
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import socket
import statistics
import struct
import subprocess
import sys
import threading
import time

PAYLOAD = b"x" * 100
HEADER = struct.Struct("!I")
KINDS = ("links", "stripped", "plain")


def _links_quiet():
    import structlog

    import links

    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))

    class Raw(links.Protocol):
        framer = links.LengthPrefixFramer(header_size=4)
        messenger = links.RawMessenger()

    return links, Raw


def serve(count: int) -> None:
    """A links server: print the port, then "done" once ``count`` messages arrived."""
    links, raw = _links_quiet()
    done, seen = threading.Event(), [0]

    class Counting(links.Callback):
        def on_recv(self, con_id: object, msg: bytes) -> None:
            seen[0] += 1
            if seen[0] == count:
                done.set()

    with links.Svc.bind("127.0.0.1:0", protocol=raw, callback=Counting()) as svc:
        svc.into_sender_with_spawned_recver()
        print(svc.local_addr[1], flush=True)
        print("done" if done.wait(120) else f"only {seen[0]}", flush=True)
    links.shutdown()


def client(kind: str, port: int, count: int) -> None:
    """Send ``count`` messages; print the rate as JSON."""
    if kind == "plain":
        sock = socket.create_connection(("127.0.0.1", port))
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sendall, pack = sock.sendall, HEADER.pack
        t0 = time.perf_counter()
        for _ in range(count):
            sendall(pack(len(PAYLOAD)) + PAYLOAD)
    else:
        links, raw = _links_quiet()
        clt = links.Clt.connect(f"127.0.0.1:{port}", protocol=raw, timeout=10)
        if kind == "links":
            send = clt.send
        else:
            con = clt._con  # internals: see the module docstring
            lock, encode = con.write_lock, con.attachment.link.framer.encode
            raw_send, flags = con.attachment.transport.sock.send, socket.MSG_DONTWAIT

            def send(msg: bytes) -> None:
                lock.acquire()
                try:
                    frame = encode(msg)
                    if raw_send(frame, flags) != len(frame):
                        raise RuntimeError("a partial send: the floor client does not finish frames")
                finally:
                    lock.release()

        t0 = time.perf_counter()
        for _ in range(count):
            send(PAYLOAD)
    print(json.dumps({"rate": count / (time.perf_counter() - t0)}), flush=True)


def measure(kind: str, count: int) -> float:
    here = os.path.abspath(__file__)
    server = subprocess.Popen(["taskset", "-c", "0", sys.executable, here, "--serve", str(count)],
                              stdout=subprocess.PIPE, text=True)  # fmt: skip
    try:
        port = server.stdout.readline().strip()
        out = subprocess.run(["taskset", "-c", "1", sys.executable, here, "--client", kind, port, str(count)],
                             capture_output=True, text=True, timeout=120, check=True).stdout  # fmt: skip
        if server.stdout.readline().strip() != "done":
            raise RuntimeError(f"{kind}: the server did not receive every message")
        return json.loads(out)["rate"]
    except BaseException:
        server.kill()  # the client failed: the server would wait for its messages for minutes
        raise
    finally:
        server.wait(30)


def main() -> None:
    if sys.argv[1:2] == ["--serve"]:
        return serve(int(sys.argv[2]))
    if sys.argv[1:2] == ["--client"]:
        return client(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]))
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--count", type=int, default=300_000)
    args = parser.parse_args()
    rates: dict[str, list[float]] = {kind: [] for kind in KINDS}
    for r in range(args.rounds):
        for kind in KINDS[r % 3 :] + KINDS[: r % 3]:  # a different kind goes first each round
            rates[kind].append(measure(kind, args.count))
            print(f"round {r + 1}/{args.rounds} {kind:9s} {rates[kind][-1]:>10,.0f} msgs/s", file=sys.stderr)
    print(f"\n{args.rounds} rounds x {args.count:,} messages; links server on CPU 0, client on CPU 1\n")
    print("| client | msgs/s (median) | × plain (median of per-round ratios) |\n|---|---:|---:|")
    for kind in KINDS:
        ratio = statistics.median(a / b for a, b in zip(rates[kind], rates["plain"]))
        print(f"| {kind} | {statistics.median(rates[kind]):,.0f} | {ratio:.2f} |")


if __name__ == "__main__":
    main()
