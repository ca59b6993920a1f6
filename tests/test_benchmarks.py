"""Every benchmark script still runs, at tiny sizes, and prints whole tables.

Speed is never asserted here (tiny runs measure nothing): these catch a benchmark broken by a
change in links, a failed measurement, a nan, a column name printed twice or a row that does
not fit its header, before a full run. Scripts that pin a server and a client to CPUs 0 and
1 with ``taskset`` need both, and ``taskset``.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"
PINNABLE = {0, 1} <= os.sched_getaffinity(0) and shutil.which("taskset") is not None

# (script, tiny arguments, whether it pins processes to CPUs 0 and 1 with taskset)
RUNS = [
    ("bench_echo_server.py", ["--rounds", "1", "--count", "200"], True),
    ("bench_links_vs_sockets.py", ["--rounds", "1", "--messages", "200", "--round-trips", "20"], False),
    ("bench_peers.py", ["--rounds", "1", "--scale", "0.001", "--peers", "plain,asyncio", "--json", "{tmp}/peers.json"], False),
    ("bench_receive_path.py", ["--rounds", "1", "--reads", "2"], False),
    ("bench_recv_path.py", ["--rounds", "1", "--count", "200"], False),
    ("bench_ref_lock.py", ["--rounds", "1", "--scale", "0.001"], False),
    ("bench_scale_out.py", ["--rounds", "1", "--clients", "2", "--count", "100", "--warm", "10", "--generator", "links"], False),
    ("bench_send_floor.py", ["--rounds", "1", "--count", "500"], True),
    ("bench_send_path.py", ["--rounds", "1", "--count", "200"], False),
    ("bench_soupbintcp.py", ["--rounds", "1", "--messages", "200", "--round-trips", "20"], False),
]


BAD_CELL = re.compile(r"^—$|FAILED|\b(nan|inf)\b", re.IGNORECASE)


def run(script: str, args: list[str]) -> str:
    """Its stdout; on a hang, the script and every process it started are killed."""
    process = subprocess.Popen([sys.executable, str(BENCHMARKS / script), *args], stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True, start_new_session=True)  # fmt: skip
    try:
        out, err = process.communicate(timeout=90)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        out, err = process.communicate()
        pytest.fail(f"{script} ran past 90 s:\n{err[-2000:]}")
    assert process.returncode == 0, err[-2000:]
    assert "failed measurement" not in out, out
    return out


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
def test_the_benchmark_runs_and_prints_a_whole_table(script, args, pinned, tmp_path):
    if pinned and not PINNABLE:
        pytest.skip("pins its processes to CPUs 0 and 1 with taskset")
    found = tables(run(script, [arg.format(tmp=tmp_path) for arg in args]))
    assert found, "no table printed"
    for header, *rows in found:
        assert len(set(header)) == len(header), f"a column name twice: {header}"
        assert rows, f"a table with no rows: {header}"
        for row in rows:
            assert len(row) == len(header), f"{row} under {header}"
            # A failed or missing measurement prints as FAILED or a dash, a broken one as nan.
            assert not any(BAD_CELL.search(cell) for cell in row), row


def test_the_idle_connections_benchmark_reports_memory_per_connection():
    out = run("bench_idle_connections.py", ["--connections", "20", "--idle-seconds", "0.1"])
    match = re.search(r"rss per connection\s+([\d.]+) KiB", out)
    assert match and float(match.group(1)) > 0, out
