"""Memory and CPU of idle connections: N connections held by one process and one poll thread.

The service (this process) accepts N connections from a client process that then sits idle,
and reports the growth of this process's RSS per connection and the CPU it burns while they
idle. Kernel socket buffers are not process memory and do not count.

    python benchmarks/system/idle_connections.py --connections 10000
"""

from __future__ import annotations

import argparse
import gc
import resource
import subprocess
import sys
import time

import psutil
import structlog

import links

CLIENT = """
import resource, socket, sys
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
socks = [socket.create_connection(("127.0.0.1", {port})) for _ in range({n})]
print("connected", flush=True)
sys.stdin.read()
"""


class Quiet(links.Protocol):
    framer = links.LengthPrefixFramer(4)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--connections", type=int, default=10_000)
    parser.add_argument("--idle-seconds", type=float, default=3.0)
    args = parser.parse_args()
    structlog.configure(logger_factory=structlog.ReturnLoggerFactory())  # no per-connection log lines
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    n, proc = args.connections, psutil.Process()
    # Idle on purpose (the clients never send): no first-message deadline.
    svc = links.Svc.bind("127.0.0.1:0", protocol=Quiet, max_connections=n + 10, handshake_timeout=None, backlog=4096)
    sender = svc.into_sender_with_spawned_recver()
    links.default_poll_handler().sync()
    gc.collect()
    base = proc.memory_info().rss
    client = subprocess.Popen(
        [sys.executable, "-c", CLIENT.format(port=svc.local_addr[1], n=n)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        assert client.stdout is not None and client.stdout.readline().strip() == "connected"
        deadline = time.monotonic() + 120
        while len(sender) < n and time.monotonic() < deadline:
            time.sleep(0.1)  # waiting for the accept backlog to drain: a benchmark, not a test
        links.default_poll_handler().sync()
        gc.collect()
        per_connection = (proc.memory_info().rss - base) / max(len(sender), 1)
        before = proc.cpu_times()
        time.sleep(args.idle_seconds)
        after = proc.cpu_times()
        # Each time pair subtracted on its own: summing first can leave a float residue below 0.
        cpu = ((after.user - before.user) + (after.system - before.system)) / args.idle_seconds
        print(f"connections        {len(sender)}")
        print(f"rss per connection {per_connection / 1024:.1f} KiB")
        print(f"idle cpu           {cpu * 100:.2f} % of one core over {args.idle_seconds:g} s")
    finally:
        if client.stdin is not None:
            client.stdin.close()
        client.wait()
        svc.close()
        links.shutdown()


if __name__ == "__main__":
    main()
