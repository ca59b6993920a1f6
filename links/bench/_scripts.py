"""What the scripts in ``benchmarks/`` share beyond the harness: quiet logs, timing, tables.

The micro-benchmarks (``benchmarks/micro/``) time one path of links in a loop against the
least plain Python that does the same job, and print the medians over interleaved rounds
with the per-round ratio to that floor. The helpers here are that loop, that table, and a
connected loopback socket pair to hand to ``Clt.from_socket`` (wrapped in a stub where the
kernel is to be taken out): everything through links' public API, so a script never needs
to reach into a connection's internals.
"""

from __future__ import annotations

import logging
import socket
import statistics
import sys
import time
from collections.abc import Callable, Mapping, Sequence

import structlog

__all__ = ["loopback_pair", "quiet_logs", "ratio_table", "timed"]


def quiet_logs() -> None:
    """Warnings and errors only, on stderr, even in a process that configured logging
    otherwise: a benchmark's stdout is its table. (Unconfigured, links is that quiet already.)
    Call it once, in the process that runs links; importing ``links.bench`` configures nothing.
    """
    structlog.configure(
        wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING),
        logger_factory=structlog.PrintLoggerFactory(sys.stderr),
    )


def timed(call: Callable[[], object], count: int, per_call: int = 1) -> float:
    """Microseconds per message for ``count`` calls of ``call``, each handling ``per_call`` messages."""
    t0 = time.perf_counter()
    for _ in range(count):
        call()
    return (time.perf_counter() - t0) / (count * per_call) * 1e6


def ratio_table(results: Mapping[str, Sequence[float]], base: str, unit: str = "µs/msg") -> list[str]:
    """A markdown table: per variant, the median of its rounds and the median of its per-round
    ratios to ``base`` (on a shared machine, the ratio is the figure to compare across runs)."""
    lines = [f"| variant | {unit} | × {base} (per-round ratio) |", "|---|---:|---:|"]
    for name, values in results.items():
        ratio = statistics.median(v / b for v, b in zip(values, results[base]))
        lines.append(f"| {name} | {statistics.median(values):.3f} | {ratio:.2f} |")
    return lines


def loopback_pair() -> tuple[socket.socket, socket.socket]:
    """Two connected TCP sockets on 127.0.0.1 (client, server), ``TCP_NODELAY`` on both."""
    with socket.create_server(("127.0.0.1", 0)) as listener:
        client = socket.create_connection(listener.getsockname(), timeout=10)
        server, _ = listener.accept()
    client.settimeout(None)
    for sock in (client, server):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return client, server
