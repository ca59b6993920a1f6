"""``links rpc serve`` and ``links rpc call`` with links on both sides, typed as a user types
them (the installed command, real subprocesses, real sockets). Usage mistakes are in
``tests/test_cli_usage.py`` with the other commands'; the bytes on the wire and the Go peer in
``test_rpc_interop.py``."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys

import pytest
from helpers import Child, complaints
from helpers_tls import pki_files

LINKS = shutil.which("links", path=os.path.dirname(sys.executable))
WAIT = 20.0
pytestmark = pytest.mark.timeout(60)


def serve(*extra: str) -> tuple[Child, str]:
    """``links rpc serve`` on a free port, and its address once it listens."""
    child = Child([LINKS, "rpc", "serve", "--port", "0", *extra], timeout=WAIT)
    return child, child.wait_line(r"rpc serve listening on (127\.0\.0\.1:\d+)$")[1]


def call(addr: str, method: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([LINKS, "rpc", "call", addr, method, *args], capture_output=True, text=True, timeout=WAIT)


@pytest.fixture(scope="module")
def server():
    child, addr = serve()
    with child:
        yield addr
        assert child.stop() == 0
    assert not complaints(child.err), child.err


@pytest.mark.parametrize(
    ("method", "args", "printed"),
    [
        ("add", ["2", "3"], "5"),
        ("add", ["0.5", "-2"], "-1.5"),
        ("add", ['"ab"', '"cd"'], '"abcd"'),
        ("echo", ['{"a": [1, "x", null, true], "b": {"c": 2.5}}'], '{"a": [1, "x", null, true], "b": {"c": 2.5}}'),
        ("echo", ['"héllo"'], '"héllo"'),
        ("sleep", ["0"], "0"),
        ("sleep", ["0.05"], "0.05"),
    ],
)  # fmt: skip
def test_a_call_prints_its_result_as_json(server, method, args, printed):
    done = call(server, method, *args)
    assert (done.returncode, done.stderr) == (0, ""), done.stderr
    assert done.stdout == printed + "\n"
    assert json.loads(done.stdout) == json.loads(printed)


@pytest.mark.parametrize(
    ("method", "args", "says"),
    [
        ("fail", ['"the disk is full"'], "the disk is full"),
        ("nosuch", [], "nosuch"),
        ("add", ["1", '"x"'], "TypeError"),
        ("sleep", ["-1"], "seconds must be a number"),
    ],
)  # fmt: skip
def test_an_error_reply_goes_to_stderr_with_status_1(server, method, args, says):
    done = call(server, method, *args)
    assert done.returncode == 1
    assert done.stdout == ""
    [line] = done.stderr.splitlines()
    assert line.startswith("links rpc call: error reply: ") and says in line, line


def test_a_sleeping_call_holds_no_other_call_back(server):
    # The sleeper's reply is an hour of timer away; calls made meanwhile are answered at once.
    sleeper = Child([LINKS, "rpc", "call", server, "sleep", "3600", "--timeout", "3600"])
    with sleeper:
        for i in range(3):
            done = call(server, "echo", str(i))
            assert (done.returncode, done.stdout) == (0, f"{i}\n"), done.stderr
        assert sleeper.proc.poll() is None, sleeper.err  # still waiting for its reply
        sleeper.proc.kill()


def test_a_port_nobody_listens_on_is_one_line_and_status_1():
    with socket.socket() as unused:  # bound, never listening: connections to it are refused
        unused.bind(("127.0.0.1", 0))
        addr = f"127.0.0.1:{unused.getsockname()[1]}"
        done = call(addr, "echo", "1", "--timeout", "1")  # connecting retries a refused port until then
    assert done.returncode == 1
    why = f"could not connect to {addr} within 1.0s: [Errno 111] ECONNREFUSED"
    assert done.stderr.splitlines() == [f"links rpc call: cannot connect to {addr}: {why}"]
    assert done.stdout == ""


def test_a_server_that_never_answers_is_a_timeout_line_and_status_1():
    with socket.create_server(("127.0.0.1", 0)) as listener:
        addr = f"127.0.0.1:{listener.getsockname()[1]}"
        done = call(addr, "echo", "1", "--timeout", "0.5")  # accepted by the kernel, never read
    assert done.returncode == 1
    assert done.stderr.splitlines() == [f"links rpc call: no reply from {addr} within 0.5 s"]


def test_a_server_that_hangs_up_mid_call_is_one_line_and_status_1():
    with socket.create_server(("127.0.0.1", 0)) as listener:
        addr = f"127.0.0.1:{listener.getsockname()[1]}"
        caller = Child([LINKS, "rpc", "call", addr, "echo", "1"])
        with caller:
            peer, _ = listener.accept()
            peer.settimeout(WAIT)
            assert peer.recv(1024)  # the request came: hang up without answering
            peer.close()
            assert caller.proc.wait(WAIT) == 1
    [line] = caller.err
    assert line.startswith(f"links rpc call: {addr}: ") and "Traceback" not in line, caller.err


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_serve_stops_cleanly_on_a_signal(sig):
    child, addr = serve()
    with child:
        assert call(addr, "echo", "1").returncode == 0  # it was serving
        assert child.stop(sig) == 0
    assert "svc.closed" in child.err[-1] and not complaints(child.err), child.err


@pytest.fixture
def pki(tmp_path):
    """A CA and a server certificate for localhost and 127.0.0.1: file paths."""
    return pki_files(tmp_path)


def test_call_and_serve_over_tls(pki):
    child, addr = serve("--tls-cert", pki["cert"], "--tls-key", pki["key"])
    with child:
        done = call(addr, "add", "20", "22", "--tls", "--tls-ca", pki["ca"])
        assert (done.returncode, done.stdout) == (0, "42\n"), done.stderr
        assert child.stop() == 0
