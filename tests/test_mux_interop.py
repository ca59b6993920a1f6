"""``links.mux`` against the reference yamux implementation: HashiCorp's, in Go.

``tests/interop/yamux_peer.go`` is ``links mux echo`` and ``links mux probe`` written on
``github.com/hashicorp/yamux``; it is built once per session (offline, in GOPATH mode, from the
Go sources Debian installs under /usr/share/gocode). The ``links`` side runs as a user types
it (the installed command) or, where a test needs the library, in this process. Skipped where
no ``go`` or no yamux source is installed (Debian: ``apt-get install golang-go
golang-github-hashicorp-yamux-dev``).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from helpers import Child

import links

GO = shutil.which("go")
GOPATH = Path("/usr/share/gocode")  # where Debian's golang-*-dev packages put Go sources
YAMUX = GOPATH / "src" / "github.com" / "hashicorp" / "yamux"
SOURCE = Path(__file__).resolve().parent / "interop" / "yamux_peer.go"
LINKS = shutil.which("links", path=os.path.dirname(sys.executable))
WAIT = 20.0
pytestmark = [
    pytest.mark.skipif(GO is None, reason="no go here (Debian: apt-get install golang-go)"),
    pytest.mark.skipif(not YAMUX.is_dir(), reason=f"no {YAMUX} (Debian: golang-github-hashicorp-yamux-dev)"),
    pytest.mark.timeout(60),
]


@pytest.fixture(scope="session")
def peer(tmp_path_factory) -> str:
    """The Go peer, built once: the path of its binary."""
    out = tmp_path_factory.mktemp("yamux_peer")
    # GOPATH mode, the toolchain at hand: nothing is downloaded.
    env = {**os.environ, "GO111MODULE": "off", "GOPATH": str(GOPATH), "GOCACHE": str(out / "cache"), "GOFLAGS": "",
           "GOTOOLCHAIN": "local"}  # fmt: skip
    binary = out / "yamux_peer"
    build = [GO, "build", "-o", str(binary), str(SOURCE)]
    done = subprocess.run(build, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return str(binary)


def go_echo(peer: str, *extra: str) -> tuple[Child, str]:
    """The Go echo server, and its address once it listens."""
    child = Child([peer, "echo", "-port", "0", *extra], timeout=WAIT)
    port = child.wait_line(r"\d+$")[0]
    return child, f"127.0.0.1:{port}"


def links_echo() -> tuple[Child, str]:
    """``links mux echo`` as typed, and its address once it listens."""
    child = Child([LINKS, "mux", "echo", "--port", "0"], timeout=WAIT)
    return child, child.wait_line(r"mux echo listening on (127\.0\.0\.1:\d+)$")[1]


def complaints(lines: list[str]) -> list[str]:
    """Log lines of links at warning or above, and yamux's own errors and warnings."""
    return [line for line in lines if "[warning" in line or "[error" in line or "[ERR]" in line or "[WARN]" in line]


@pytest.mark.parametrize("max_size", [256 * 1024, 1024 * 1024], ids=["256KiB", "1MiB"])
def test_links_mux_probe_against_the_go_echo_server(peer, max_size):
    # Frames of up to the whole initial window, and four times it: a frame then crosses only as
    # each side's window updates come back, in both directions.
    server, addr = go_echo(peer)
    with server:
        probe = subprocess.run(
            [LINKS, "mux", "probe", addr, "--streams", "8", "--messages", "8", "--max-size", str(max_size),
             "--seed", "1"],
            capture_output=True, text=True, timeout=WAIT,
        )  # fmt: skip
        assert probe.returncode == 0, probe.stdout + probe.stderr
        assert probe.stdout.splitlines()[-1].startswith("OK: 8 streams, 64 frames echoed byte for byte and in order")
        assert server.proc.poll() is None
    assert not complaints(server.err), server.err


def test_the_go_probe_against_links_mux_echo(peer):
    server, addr = links_echo()
    with server:
        probe = subprocess.run(
            [peer, "probe", "-addr", addr, "-streams", "16", "-messages", "10", "-max-size", str(1 << 20),
             "-seed", "2"],
            capture_output=True, text=True, timeout=WAIT,
        )  # fmt: skip
        assert probe.returncode == 0, probe.stdout + probe.stderr
        assert probe.stdout.startswith("OK: 16 streams, 160 frames echoed byte for byte and in order")
        # Each Go stream ended with its FIN (after its last echo): links saw every channel end so.
        ended = server.wait_line(r".*clt\.disconnected .*con_id=Acceptor\(mux-echo#\d+@.*reason=peer_closed", 16, "err")
        assert server.stop() == 0
    assert ended and not complaints(server.err), server.err
    channels = {line.split("#")[1].split("@")[0] for line in server.err if "clt.disconnected" in line and "#" in line}
    assert channels == {str(i) for i in range(1, 33, 2)}  # the client's 16 odd ids, each once


def test_go_keepalive_pings_are_answered_and_the_session_stays_up(peer):
    # The Go side PINGs every 50 ms and gives up the session if an answer takes 200 ms; it
    # waits for 10 answers, counted off the wire (a bounded wait, measured on its clock).
    server, addr = links_echo()
    with server:
        probe = subprocess.run(
            [peer, "probe", "-addr", addr, "-streams", "2", "-messages", "5", "-max-size", "1000",
             "-keepalive", "50ms", "-pongs", "10", "-timeout", "10s"],
            capture_output=True, text=True, timeout=WAIT,
        )  # fmt: skip
        assert probe.returncode == 0, probe.stdout + probe.stderr
        assert "keepalive: 10 PINGs answered, one every 50ms; the session is up" in probe.stdout
        assert server.stop() == 0
    assert not complaints(server.err), server.err


class Frames(links.Protocol):
    framer = links.LengthPrefixFramer(header_size=4, byteorder="big", max_frame_size=4 + (2 << 20))
    messenger = links.RawMessenger()


def test_streams_both_ways_between_a_links_client_and_a_go_server(peer, poll, timer):
    # The Go server opens a stream to the links client (frames of up to 1 MiB, echoed by a
    # thread of the test that owns the channel) while the client opens its own to the server.
    server, addr = go_echo(peer, "-open", "6", "-max-size", str(1 << 20), "-seed", "3")
    echoed: list[int] = []
    taken = threading.Event()
    echoers: list[threading.Thread] = []

    def echo(channel: links.Clt) -> None:
        with channel:
            for msg in channel:  # until the Go side closes the stream
                channel.send(msg, timeout=WAIT)
                echoed.append(len(msg))

    def accept(channel: links.Clt) -> None:  # poll thread: hand the channel to a thread
        echoers.append(threading.Thread(target=echo, args=(channel,), name="echo-go-stream"))
        echoers[-1].start()
        taken.set()

    mux = links.mux.connect(addr, protocol=Frames, accept=accept, poll_handler=poll, timer=timer, timeout=WAIT)
    with server, mux:
        ours = [mux.open(protocol=Frames, timeout=WAIT) for _ in range(3)]
        for i, channel in enumerate(ours):
            for n in range(5):
                channel.send(b"%d:%d" % (i, n) * 1000, timeout=WAIT)
        for i, channel in enumerate(ours):
            assert [channel.recv(timeout=WAIT) for _ in range(5)] == [b"%d:%d" % (i, n) * 1000 for n in range(5)]
            channel.close()
        assert server.wait_line(r"opened: (.*)")[1] == "OK: 6 frames echoed"
        assert taken.is_set()
        for thread in echoers:
            thread.join(WAIT)
        assert len(echoed) == 6 and not echoers[0].is_alive()
    assert not complaints(server.err), server.err
