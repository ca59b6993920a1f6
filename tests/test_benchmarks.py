"""Every benchmark script still runs, at tiny sizes, and prints whole tables.

Speed is never asserted here (tiny runs measure nothing): these catch a benchmark broken by a
change in links, a failed measurement, a nan, a column name printed twice or a row that does
not fit its header, before a full run. Every script in ``benchmarks/system`` and
``benchmarks/micro`` has its run here (a test checks the list), and every peer of
``system/vs_peers.py`` and of ``system/rpc.py`` whose library is installed runs through it. Scripts that pin a server and a client to CPUs 0 and
1 with ``taskset`` need both, and ``taskset``.
"""

from __future__ import annotations

import importlib.util
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


def installed(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


# Every peer of system/vs_peers.py that can run here: the optional libraries of the others
# (``pip install -e '.[bench]'``) are not test dependencies.
PEERS = ["plain", "asyncio"] + [name for name, lib in (("uvloop", "uvloop"), ("zmq", "zmq"), ("twisted", "twisted"))
                                if installed(lib)] + (["c"] if shutil.which("gcc") or shutil.which("cc") else [])  # fmt: skip
# The peers of ``vs_peers.py --tls`` that can run here (Twisted's TLS needs pyOpenSSL and service_identity).
TLS_PEERS = ["plain", "asyncio"] + (["uvloop"] if installed("uvloop") else []) + (
    ["twisted"] if all(map(installed, ("twisted", "OpenSSL", "service_identity"))) else [])  # fmt: skip

# (script, tiny arguments, whether it pins processes to CPUs 0 and 1 with taskset)
RUNS = [
    ("micro/echo_server.py", ["--rounds", "1", "--count", "200"], True),
    ("micro/recv_path.py", ["--rounds", "1", "--reads", "2", "--count", "200"], False),
    ("micro/rpc_path.py", ["--rounds", "1", "--batch", "50"], False),
    ("micro/ref_lock.py", ["--rounds", "1", "--scale", "0.001"], False),
    ("micro/send_path.py", ["--rounds", "1", "--count", "200"], False),
    ("system/scale_out.py", ["--rounds", "1", "--clients", "2", "--count", "100", "--warm", "10", "--generator", "links"], False),
    ("system/mux.py", ["--rounds", "1", "--scale", "0.001", "--channels", "50", "--placement", "split", "--json", "{tmp}/mux.json"], False),
    ("system/aio.py", ["--rounds", "1", "--scale", "0.001", "--json", "{tmp}/aio.json"], False),
    ("system/rpc.py", ["--rounds", "1", "--scale", "0.001", "--in-flight", "100", "--json", "{tmp}/rpc.json"], False),
    ("system/soupbintcp.py", ["--rounds", "1", "--messages", "200", "--round-trips", "20"], False),
    ("system/vs_peers.py", ["--rounds", "1", "--scale", "0.001", "--peers", ",".join(PEERS), "--json", "{tmp}/peers.json"], False),
    ("system/vs_peers.py", ["--tls", "--rounds", "1", "--scale", "0.001", "--placement", "split", "--peers", ",".join(TLS_PEERS), "--json", "{tmp}/tls.json"], False),
]
# Scripts with a test of their own below (they print no table).
OWN_TEST = {"system/idle_connections.py"}


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
@pytest.mark.parametrize(("script", "args", "pinned"), RUNS, ids=[f"{s} --tls" if "--tls" in a else s for s, a, _ in RUNS])
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


def test_every_benchmark_script_has_a_smoke_run():
    """A script added to benchmarks/ without a tiny run here would break unseen."""
    scripts = {p.relative_to(BENCHMARKS).as_posix() for p in BENCHMARKS.glob("*/*.py")}
    assert scripts == {script for script, _, _ in RUNS} | OWN_TEST


def test_the_readme_says_what_each_script_is_for():
    """benchmarks/README.md names every script; the READMEs cite no script that is gone."""
    readme = (BENCHMARKS / "README.md").read_text()
    for script in sorted(p.relative_to(BENCHMARKS).as_posix() for p in BENCHMARKS.glob("*/*.py")):
        assert f"`{script}`" in readme, f"{script} is not in benchmarks/README.md"
    for text in (readme, (BENCHMARKS.parent / "README.md").read_text()):
        for cited in re.findall(r"(?:benchmarks/)?((?:system|micro)/\w+\.py|bench_\w+\.py)", text):
            assert (BENCHMARKS / cited).is_file(), f"a README cites {cited}, which is not in benchmarks/"


def test_every_peer_module_is_registered():
    """The peers package runs each of its modules through system/vs_peers.py (above), the
    ones whose library is installed; a module it does not register would never run. (``_*.py``:
    code its peers share, not a peer.)"""
    peers = BENCHMARKS / "system" / "peers"
    modules = {p for p in peers.glob("*.py") if not p.name.startswith("_")}
    registered = re.findall(r'HERE / "(\w+\.py)"', (peers / "__init__.py").read_text())
    assert modules == {peers / name for name in registered}


def test_the_idle_connections_benchmark_reports_memory_per_connection():
    out = run("system/idle_connections.py", ["--connections", "20", "--idle-seconds", "0.1"])
    match = re.search(r"rss per connection\s+([\d.]+) KiB", out)
    assert match and float(match.group(1)) > 0, out
