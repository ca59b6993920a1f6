"""``links serve soupbintcp`` and ``links connect soupbintcp`` as a user runs them: real
subprocesses, real sockets, stopped with SIGINT."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
from contextlib import contextmanager

import pytest

LINKS = [sys.executable, "-m", "links"]
CREDENTIALS = ["--username", "user", "--password", "secret"]
TIMEOUT = 20


@contextmanager
def server(tmp_path, *extra):
    """``links serve soupbintcp`` on a free port: yields (process, "127.0.0.1:PORT", stderr file)."""
    err = tmp_path / "serve.err"
    with err.open("w") as err_file:
        proc = subprocess.Popen(
            [*LINKS, "serve", "soupbintcp", "--port", "0", *CREDENTIALS, *extra],
            stdout=subprocess.PIPE, stderr=err_file, text=True,
        )  # fmt: skip
    try:
        first = proc.stdout.readline()
        m = re.fullmatch(r"listening on (127\.0\.0\.1:\d+)\n", first)
        assert m, (first, err.read_text())
        yield proc, m[1], err
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(TIMEOUT)
        proc.stdout.close()


def events(log: str, event: str) -> int:
    """How many log lines are ``event`` itself (not just mention it as a reason)."""
    return len(re.findall(rf"\] {re.escape(event)}\s", log))


def stop(proc) -> int:
    proc.send_signal(signal.SIGINT)
    return proc.wait(TIMEOUT)


def run_connect(addr, *extra, stdin=None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*LINKS, "connect", "soupbintcp", addr, *extra], input=stdin, capture_output=True, text=True, timeout=TIMEOUT
    )


def test_connect_sends_count_messages_and_prints_every_echo_then_serve_stops_cleanly(tmp_path):
    with server(tmp_path) as (proc, addr, err):
        done = run_connect(addr, *CREDENTIALS, "--count", "100")
        assert done.returncode == 0, done.stderr
        assert done.stdout.splitlines() == [f"{i} msg {i}" for i in range(1, 101)]
        assert "soupbintcp.login_accepted" in done.stderr
        assert re.search(r"sent 100 in [\d.]+s \([\d,]+/s\), received 100 in", done.stderr), done.stderr

        # Lines from stdin continue the user's stream where it stands.
        typed = run_connect(addr, *CREDENTIALS, stdin="hello\nworld\n")
        assert typed.returncode == 0, typed.stderr
        assert typed.stdout.splitlines() == ["101 hello", "102 world"]

        assert stop(proc) == 0
    log = err.read_text()
    assert events(log, "soupbintcp.logout") == 2  # both clients logged out on end of input
    assert "svc.closed" in log
    assert "served 102 messages, sent 102" in log


def test_connect_reports_a_rejected_login(tmp_path):
    with server(tmp_path) as (proc, addr, err):
        done = run_connect(addr, "--username", "user", "--password", "wrong", "--count", "1")
        assert done.returncode == 1
        assert "login rejected: not authorized (reason 'A')" in done.stderr
        assert done.stdout == ""
        assert stop(proc) == 0


def test_connect_reports_a_server_that_is_not_there():
    with __import__("socket").create_server(("127.0.0.1", 0)) as silent:
        addr = f"127.0.0.1:{silent.getsockname()[1]}"
        done = run_connect(addr, *CREDENTIALS, "--count", "1", "--timeout", "0.3")
    assert done.returncode == 1
    assert "did not complete within 0.3s" in done.stderr


def test_ctrl_c_logs_the_client_out_and_stopping_the_server_ends_the_session(tmp_path):
    with server(tmp_path) as (proc, addr, err):
        idle = subprocess.Popen(
            [*LINKS, "connect", "soupbintcp", addr, *CREDENTIALS], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        with idle:
            for line in idle.stderr:  # logged in once it says so
                if "soupbintcp.login_accepted" in line:
                    break
            idle.send_signal(signal.SIGINT)
            assert idle.wait(TIMEOUT) == 0

        waiting = subprocess.Popen(
            [*LINKS, "connect", "soupbintcp", addr, *CREDENTIALS], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        with waiting:
            for line in waiting.stderr:
                if "soupbintcp.login_accepted" in line:
                    break
            assert stop(proc) == 0  # End of Session reaches the waiting client
            rest = waiting.stderr.read()
            assert waiting.wait(TIMEOUT) == 1
            assert "soupbintcp.end_of_session" in rest
            assert "the server ended the session" in rest
    assert events(err.read_text(), "soupbintcp.logout") == 1


@pytest.mark.parametrize(
    "option", [["--workers", "0"], ["--max-connections", "-1"], ["--heartbeat", "nan"], ["--login-timeout", "0"],
     ["--login-throttle", "0"], ["--login-throttle", "nan"]]
)
def test_options_that_cannot_work_are_usage_errors(option):
    args = ["serve", "soupbintcp", "--username", "u", "--password", "p", *option]
    done = subprocess.run([*LINKS, *args], capture_output=True, text=True, timeout=TIMEOUT)
    assert done.returncode == 2
    assert "must be positive" in done.stderr


@pytest.mark.parametrize("args", [["serve", "soupbintcp", "--port", "0"], ["connect", "soupbintcp"], ["serve"]])
def test_missing_arguments_are_usage_errors(args):
    done = subprocess.run([*LINKS, *args], capture_output=True, text=True, timeout=TIMEOUT)
    assert done.returncode == 2
    assert "required" in done.stderr


def test_workers_share_the_port_and_all_stop_on_ctrl_c(tmp_path):
    with server(tmp_path, "--workers", "2") as (proc, addr, err):
        for _ in range(6):  # the kernel spreads these over both workers' listeners
            done = run_connect(addr, *CREDENTIALS, "--count", "20", "--quiet")
            assert done.returncode == 0, done.stderr
        assert stop(proc) == 0
    log = err.read_text()
    # Every worker bound the same port and, interrupted, closed cleanly and reported its
    # tally to the first process, which prints one summary for them all.
    assert events(log, "svc.bound") == 2
    assert re.findall(r"^served .*", log, re.M) == ["served 120 messages, sent 120 (2 workers)"]
