"""Every benchmark script still runs, at tiny sizes, and prints a whole table.

Speed is never asserted here (tiny runs measure nothing): these catch a benchmark broken by a
change in links, or a table that lost a column or filled a cell with nan, before someone
spends ten minutes on a full run. Scripts that pin a server and a client to CPUs 0 and 1
need two CPUs.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"
TWO_CPUS = len(os.sched_getaffinity(0)) >= 2 and {0, 1} <= os.sched_getaffinity(0)

# (script, tiny arguments, whether it pins processes to CPUs 0 and 1)
RUNS = [
    ("bench_echo_server.py", ["--rounds", "1", "--count", "200"], True),
    ("bench_links_vs_sockets.py", ["--rounds", "1", "--messages", "200", "--round-trips", "20"], False),
    ("bench_peers.py", ["--rounds", "1", "--scale", "0.001", "--workloads", "w1,w2", "--peers", "plain,asyncio"], True),
    ("bench_receive_path.py", ["--rounds", "1", "--reads", "2"], False),
    ("bench_recv_path.py", ["--rounds", "1", "--count", "200"], False),
    ("bench_ref_lock.py", ["--rounds", "1", "--scale", "0.001"], False),
    ("bench_scale_out.py", ["--rounds", "1", "--clients", "2", "--count", "100", "--warm", "10", "--generator", "links"], True),
    ("bench_send_floor.py", ["--rounds", "1", "--count", "500"], True),
    ("bench_send_path.py", ["--rounds", "1", "--count", "200"], False),
    ("bench_soupbintcp.py", ["--rounds", "1", "--messages", "200", "--round-trips", "20"], False),
]


def run(script: str, args: list[str]) -> str:
    done = subprocess.run([sys.executable, str(BENCHMARKS / script), *args], capture_output=True, text=True, timeout=90)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


def tables(out: str) -> list[list[list[str]]]:
    """The markdown tables in ``out``: rows of cells, the header first, the rule left out."""
    found: list[list[list[str]]] = []
    previous = ""
    for line in out.splitlines():
        if line.startswith("|"):
            cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
            if not previous.startswith("|"):
                found.append([])
            if not all(re.fullmatch(r"-+:?|:?-+:?", cell) for cell in cells):
                found[-1].append(cells)
        previous = line
    return found


@pytest.mark.timeout(120)
@pytest.mark.parametrize(("script", "args", "pinned"), RUNS, ids=[r[0] for r in RUNS])
def test_the_benchmark_runs_and_prints_a_whole_table(script, args, pinned):
    if pinned and not TWO_CPUS:
        pytest.skip("pins its processes to CPUs 0 and 1")
    found = tables(run(script, args))
    assert found, "no table printed"
    for header, *rows in found:
        assert len(set(header)) == len(header), f"a column name twice: {header}"
        assert rows, f"a table with no rows: {header}"
        for row in rows:
            assert len(row) == len(header), f"{row} under {header}"
            assert not any(re.search(r"\bnan\b", cell, re.IGNORECASE) for cell in row), row


def test_the_idle_connections_benchmark_reports_memory_per_connection():
    out = run("bench_idle_connections.py", ["--connections", "20", "--idle-seconds", "0.1"])
    match = re.search(r"rss per connection\s+([\d.]+) KiB", out)
    assert match and float(match.group(1)) > 0, out
