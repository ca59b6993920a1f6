"""The ``links`` command's child processes, run as a user types the command (installed).

* ``links bench`` and ``links serve soupbintcp --workers N`` start children that import the
  same ``links`` as the command, even from a folder that holds another ``links/`` (the parent
  of a clone, say), which ``python -m links`` in a child would import instead.
* A worker that dies is reported, and the server stops with exit status 1.
* With ``--workers``, one progress line for the whole server (two processes drawing on one
  terminal would overwrite each other's line).
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
from contextlib import contextmanager

import psutil
import pytest
from helpers_pty import read_until, terminal

LINKS = shutil.which("links", path=os.path.dirname(sys.executable))
CREDENTIALS = ["--username", "user", "--password", "secret"]
TIMEOUT = 30


@pytest.fixture(params=["broken", "namespace"])
def decoy(request, tmp_path):
    """A folder holding a ``links/`` that is not links: one that fails to import, or a plain
    directory (as a clone's parent holds), which Python imports as an empty namespace package."""
    (tmp_path / "links").mkdir()
    if request.param == "broken":
        (tmp_path / "links" / "__init__.py").write_text("raise ImportError('the decoy links was imported')\n")
    return tmp_path


@contextmanager
def server(*extra, cwd=None, stderr=None):
    """``links serve soupbintcp`` on a free port: yields (process, "127.0.0.1:PORT")."""
    proc = subprocess.Popen(
        [LINKS, "serve", "soupbintcp", "--port", "0", *CREDENTIALS, *extra],
        stdout=subprocess.PIPE, stderr=stderr, text=True, cwd=cwd,
    )  # fmt: skip
    try:
        first = proc.stdout.readline()
        m = re.fullmatch(r"listening on (127\.0\.0\.1:\d+)\n", first)
        assert m, first
        yield proc, m[1]
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(TIMEOUT)
        proc.stdout.close()


def send(addr: str, count: int) -> None:
    done = subprocess.run(
        [LINKS, "connect", "soupbintcp", addr, *CREDENTIALS, "--count", str(count), "--quiet", "--log-level", "error"],
        capture_output=True, text=True, timeout=TIMEOUT,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr


@pytest.mark.timeout(120)
def test_links_bench_children_import_the_commands_links_whatever_the_current_directory(decoy):
    out = decoy / "rounds.json"
    done = subprocess.run(
        [LINKS, "bench", "--workloads", "w1", "--rounds", "1", "--scale", "0.01", "--json", str(out)],
        capture_output=True, text=True, encoding="utf-8", timeout=110, cwd=decoy,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    assert "result: OK" in done.stdout
    assert out.exists()


@pytest.mark.timeout(60)
def test_serve_workers_import_the_commands_links_whatever_the_current_directory(decoy, tmp_path):
    err = tmp_path / "serve.err"
    with err.open("w") as err_file, server("--workers", "2", cwd=decoy, stderr=err_file) as (proc, addr):
        for _ in range(6):  # the kernel spreads these over both workers' listeners
            send(addr, 20)
        proc.send_signal(signal.SIGINT)
        assert proc.wait(TIMEOUT) == 0
    log = err.read_text()
    assert "Traceback" not in log
    assert len(re.findall(r"\] svc\.bound\s", log)) == 2  # both processes listened
    # One summary, for the whole server: the workers' tallies are in it.
    assert re.findall(r"^served .*", log, re.M) == ["served 120 messages, sent 120 (2 workers)"]


@pytest.mark.timeout(60)
def test_a_worker_that_dies_is_reported_and_the_server_exits_non_zero(tmp_path):
    err = tmp_path / "serve.err"
    with err.open("w") as err_file, server("--workers", "3", stderr=err_file) as (proc, addr):
        workers = psutil.Process(proc.pid).children()
        assert len(workers) == 2
        victim = workers[0]
        victim.kill()
        assert proc.wait(TIMEOUT) == 1
        for worker in workers[1:]:  # the others were stopped, not left behind
            worker.wait(TIMEOUT)
    log = err.read_text()
    assert re.search(rf"^links serve soupbintcp: worker \d of 3 \(pid {victim.pid}\) was killed by signal 9; stopping",
                     log, re.M), log  # fmt: skip


@pytest.mark.timeout(60)
def test_workers_share_one_progress_line_that_counts_them_all():
    with terminal() as (tty, pty_master), server("--workers", "2", "--log-level", "error", stderr=tty) as (proc, addr):
        for _ in range(6):
            send(addr, 50)
        # Redrawn every half second: wait until a line has counted every message.
        text = read_until(pty_master, re.compile(r"300 in \([\d,]+/s\)  300 out"), TIMEOUT)
        proc.send_signal(signal.SIGINT)
        assert proc.wait(TIMEOUT) == 0
    lines = [part.strip() for part in re.split(r"[\r\n]", text) if re.search(r"\d+ in \(", part)]
    assert lines, text
    for line in lines:
        assert re.fullmatch(r"2 workers  \d+ connections  [\d,]+ in \([\d,]+/s\)  [\d,]+ out \([\d,]+/s\)", line), line
    counts = [int(re.search(r"([\d,]+) in", line)[1].replace(",", "")) for line in lines]
    assert counts == sorted(counts)  # one tally that only grows, not two alternating
