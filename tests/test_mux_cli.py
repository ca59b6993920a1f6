"""``links mux echo`` and ``links mux probe`` with links on both sides, typed as a user types
them (the installed command, real subprocesses, real sockets). Usage mistakes are in
``tests/test_cli_usage.py`` with the other commands'; the Go peer in ``test_mux_interop.py``."""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import struct
import subprocess
import sys
import threading

import pytest
from helpers import Child, complaints
from helpers_tls import pki_files

LINKS = shutil.which("links", path=os.path.dirname(sys.executable))
WAIT = 20.0
pytestmark = pytest.mark.timeout(60)


def echo(*extra: str) -> tuple[Child, str]:
    """``links mux echo`` on a free port, and its address once it listens."""
    child = Child([LINKS, "mux", "echo", "--port", "0", *extra], timeout=WAIT)
    return child, child.wait_line(r"mux echo listening on (127\.0\.0\.1:\d+)$")[1]


def probe(addr: str, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([LINKS, "mux", "probe", addr, *extra], capture_output=True, text=True, timeout=WAIT)


def test_probe_checks_20_streams_through_echo():
    server, addr = echo()
    with server:
        done = probe(addr, "--streams", "20", "--messages", "20", "--seed", "5")
        assert done.returncode == 0, done.stdout + done.stderr
        first, *_, last = done.stdout.splitlines()
        assert first == f"probe {addr}: 20 streams x 20 frames of 1..262144 bytes, seed 5"
        assert re.fullmatch(r"OK: 20 streams, 400 frames echoed byte for byte and in order \([\d.]+ s\)", last), last
        assert done.stderr == ""
        assert server.stop() == 0
    assert not complaints(server.err), server.err
    assert server.err[-1].endswith("svc=mux-echo") and "svc.closed" in server.err[-1]


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_echo_stops_cleanly_on_a_signal(sig):
    server, addr = echo()
    with server:
        assert probe(addr, "--streams", "2", "--messages", "2").returncode == 0  # it was serving
        assert server.stop(sig) == 0
    assert "svc.closed" in server.err[-1] and not complaints(server.err), server.err


def test_probe_against_a_port_nobody_listens_on_is_one_line_and_status_1():
    with socket.socket() as unused:  # bound, never listening: connections to it are refused
        unused.bind(("127.0.0.1", 0))
        addr = f"127.0.0.1:{unused.getsockname()[1]}"
        done = probe(addr, "--timeout", "1")
    assert done.returncode == 1
    why = f"could not connect to {addr} within 1.0s: [Errno 111] ECONNREFUSED"
    assert done.stderr.splitlines() == [f"links mux probe: cannot connect to {addr}: {why}"]
    assert done.stdout.startswith(f"probe {addr}: ")  # the plan, then nothing


def test_probe_against_a_server_that_drops_it_mid_stream_says_so_at_once():
    # A raw server: it reads until the probe's frame has come, then closes the connection. The
    # probe reports the channel ended at once, whatever its --timeout.
    with socket.create_server(("127.0.0.1", 0)) as listener:
        addr = f"127.0.0.1:{listener.getsockname()[1]}"
        done: list[subprocess.CompletedProcess[str]] = []
        args = ["--streams", "1", "--messages", "1", "--max-size", "1000", "--timeout", "60"]
        prober = threading.Thread(target=lambda: done.append(probe(addr, *args)))
        prober.start()
        try:
            peer, _ = listener.accept()
            with peer:
                peer.settimeout(WAIT)
                received = b""
                while not any(received[at + 1] == 0 for at in _headers(received)):
                    chunk = peer.recv(65536)
                    assert chunk, f"the probe closed first: {received!r}"
                    received += chunk
        finally:
            prober.join(WAIT)
    assert done and done[0].returncode == 1, done
    lines = done[0].stdout.splitlines()
    assert lines[1] == "stream 1: the channel ended after 0 of 1 echoes"
    assert lines[2].startswith("FAILED: 1 of 1 streams did not echo back what was sent")


def _headers(data: bytes) -> list[int]:
    """Where each whole yamux frame header starts in ``data`` (DATA frames carry their payload)."""
    at, starts = 0, []
    while at + 12 <= len(data):
        starts.append(at)
        kind, length = data[at + 1], struct.unpack_from(">I", data, at + 8)[0]
        at += 12 + (length if kind == 0 else 0)
    return starts


def test_echo_survives_peers_that_vanish_with_echoes_owed():
    # Raw yamux peers: each opens three streams, sends frames (the last stream's FIN too) and
    # closes the TCP connection at once. The echoes have nowhere to go: nothing to complain of.
    server, addr = echo()
    host, port = addr.split(":")
    header = struct.Struct(">BBHII").pack
    frame = struct.pack(">I", 5) + b"hello"
    with server:
        for _ in range(10):
            with socket.create_connection((host, int(port))) as peer:
                peer.sendall(b"".join(
                    header(0, 1, 0x1, sid, 0) + header(0, 0, 0x4 if sid == 5 else 0, sid, 3 * len(frame)) + 3 * frame
                    for sid in (1, 3, 5)
                ))  # fmt: skip
        server.wait_line(r".*clt\.disconnected .*con_id=Acceptor\(mux-echo@", 10, "err")  # every TCP connection
        # Served after what the vanished peers left behind (the poll thread took it first).
        assert probe(addr, "--streams", "2", "--messages", "2").returncode == 0
        assert server.stop() == 0
    assert not complaints(server.err), server.err


@pytest.fixture
def pki(tmp_path):
    """A CA and a server certificate for localhost and 127.0.0.1: file paths."""
    return pki_files(tmp_path)


def test_echo_and_probe_over_tls(pki):
    server, addr = echo("--tls-cert", pki["cert"], "--tls-key", pki["key"])
    with server:
        done = probe(addr, "--streams", "5", "--messages", "10", "--tls", "--tls-ca", pki["ca"])
        assert done.returncode == 0, done.stdout + done.stderr
        assert done.stdout.splitlines()[-1].startswith("OK: 5 streams, 50 frames echoed")
        tls = ["--tls", "--tls-ca", pki["ca"], "--tls-server-name", "localhost"]
        named = probe(addr, "--streams", "1", "--messages", "1", *tls)
        assert named.returncode == 0, named.stdout + named.stderr
        # No TLS: the server refuses it in its handshake. The probe says so at once, whatever
        # its --timeout (and the run's own timeout is shorter than that).
        plain = probe(addr, "--streams", "3", "--messages", "1", "--timeout", "60")
        assert plain.returncode == 1 and "FAILED: 3 of 3 streams" in plain.stdout, plain.stdout + plain.stderr
        assert "timed out" not in plain.stdout
        server.wait_line(r".*tls\.handshake_failed", stream="err")
        assert server.stop() == 0
