"""``links rpc serve`` and ``links rpc call`` against programs that are not links.

1. The bytes on the wire, by hand: requests and responses written out byte by byte from the
   msgpack-rpc specification (request ``[0, msgid, method, params]``, response ``[1, msgid,
   error, result]``, notification ``[2, method, params]``) and from the msgpack format, on raw
   sockets, so the envelope is pinned even where no other implementation is installed.
2. A peer in Go, ``tests/interop/msgpack_rpc_peer.go``, on github.com/ugorji/go/codec (its
   msgpack codec, and its msgpack-rpc codec for Go's ``net/rpc``): the Go client against
   ``links rpc serve``, and ``links rpc call`` against the Go server. Built once per session
   (offline, GOPATH mode, from the sources Debian installs under /usr/share/gocode); skipped
   where no ``go`` or no codec source is installed (Debian: ``apt-get install golang-go
   golang-github-ugorji-go-codec-dev``).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import Child

LINKS = shutil.which("links", path=os.path.dirname(sys.executable))
GO = shutil.which("go")
GOPATH = Path("/usr/share/gocode")  # where Debian's golang-*-dev packages put Go sources
CODEC = GOPATH / "src" / "github.com" / "ugorji" / "go" / "codec"
SOURCE = Path(__file__).resolve().parent / "interop" / "msgpack_rpc_peer.go"
WAIT = 20.0
pytestmark = pytest.mark.timeout(60)


@pytest.fixture(scope="module")
def links_server():
    """``links rpc serve`` as typed: its address."""
    child = Child([LINKS, "rpc", "serve", "--port", "0", "--log-level", "warning"], timeout=WAIT)
    with child:
        addr = child.wait_line(r"rpc serve listening on (127\.0\.0\.1:\d+)$")[1]
        yield addr
        assert child.stop() == 0
    assert not [line for line in child.err if "Traceback" in line or "error" in line], child.err


def dial(addr: str) -> socket.socket:
    host, port = addr.rsplit(":", 1)
    sock = socket.create_connection((host, int(port)), timeout=WAIT)
    return sock


def read_exact(sock: socket.socket, n: int) -> bytes:
    out = b""
    while len(out) < n:
        chunk = sock.recv(n - len(out))
        assert chunk, f"the connection ended after {out!r}"
        out += chunk
    return out


# -- 1. the bytes on the wire ------------------------------------------------------------------

# fixarray of 4 (0x94), positive fixints, fixstr (0xa0 | length), nil (0xc0)
ADD_2_3 = bytes([0x94, 0x00, 0x01, 0xA3]) + b"add" + bytes([0x92, 0x02, 0x03])  # [0, 1, "add", [2, 3]]
FIVE = bytes([0x94, 0x01, 0x01, 0xC0, 0x05])  # [1, 1, nil, 5]


def test_a_hand_encoded_request_gets_the_response_bytes_the_spec_gives(links_server):
    with dial(links_server) as sock:
        sock.sendall(ADD_2_3)
        assert read_exact(sock, len(FIVE)) == FIVE
        # msgid 200 is a uint 8 (0xcc 0xc8); "echo" of a bin 8 of 3 bytes comes back as the same bin
        sock.sendall(bytes([0x94, 0x00, 0xCC, 0xC8, 0xA4]) + b"echo" + bytes([0x91, 0xC4, 0x03]) + b"\x00\xff\x10")
        assert read_exact(sock, 10) == bytes([0x94, 0x01, 0xCC, 0xC8, 0xC0, 0xC4, 0x03]) + b"\x00\xff\x10"


def test_a_notification_gets_no_response(links_server):
    with dial(links_server) as sock:
        # [2, "echo", ["x"]] (no reply), then a request: the first bytes back are its response
        sock.sendall(bytes([0x93, 0x02, 0xA4]) + b"echo" + bytes([0x91, 0xA1]) + b"x" + ADD_2_3)
        assert read_exact(sock, len(FIVE)) == FIVE


def test_requests_sent_together_are_answered_by_msgid_as_each_completes(links_server):
    with dial(links_server) as sock:
        # [0, 7, "sleep", [3600]] then [0, 8, "echo", ["x"]] in one write: the echo's response
        # comes first, the sleeper's is an hour away (the connection closes before it).
        sleep = bytes([0x94, 0x00, 0x07, 0xA5]) + b"sleep" + bytes([0x91, 0xCD, 0x0E, 0x10])
        echo = bytes([0x94, 0x00, 0x08, 0xA4]) + b"echo" + bytes([0x91, 0xA1]) + b"x"
        sock.sendall(sleep + echo)
        assert read_exact(sock, 6) == bytes([0x94, 0x01, 0x08, 0xC0, 0xA1]) + b"x"


def test_an_error_reply_carries_type_and_message_as_one_string_and_nil_as_its_result(links_server):
    with dial(links_server) as sock:
        sock.sendall(bytes([0x94, 0x00, 0x05, 0xA4]) + b"fail" + bytes([0x91, 0xA4]) + b"boom")
        # [1, 5, "Failed: boom", nil]: the error one fixstr of 12 bytes, "TypeName: message"
        assert read_exact(sock, 17) == bytes([0x94, 0x01, 0x05, 0xAC]) + b"Failed: boom" + bytes([0xC0])


def test_call_sends_the_request_bytes_the_spec_gives_and_prints_the_result():
    with socket.create_server(("127.0.0.1", 0)) as listener:
        addr = f"127.0.0.1:{listener.getsockname()[1]}"
        caller = Child([LINKS, "rpc", "call", addr, "add", "2", "3"], timeout=WAIT)
        with caller:
            peer, _ = listener.accept()
            with peer:
                peer.settimeout(WAIT)
                request = read_exact(peer, 3)
                assert request[:2] == bytes([0x94, 0x00]), request  # an array of 4: a request
                msgid = request[2]
                assert msgid < 0x80, request  # a positive fixint (links counts from a small number)
                assert read_exact(peer, 6) == bytes([0xA3]) + b"add" + bytes([0x92, 0x02]) and read_exact(peer, 1) == b"\x03"
                peer.sendall(bytes([0x94, 0x01, msgid, 0xC0, 0x2A]))  # [1, msgid, nil, 42]
                assert caller.proc.wait(WAIT) == 0, caller.err
        assert caller.out == ["42"]


def test_call_prints_an_error_reply_from_another_server_as_it_came():
    with socket.create_server(("127.0.0.1", 0)) as listener:
        addr = f"127.0.0.1:{listener.getsockname()[1]}"
        caller = Child([LINKS, "rpc", "call", addr, "echo", "1"], timeout=WAIT)
        with caller:
            peer, _ = listener.accept()
            with peer:
                peer.settimeout(WAIT)
                request = read_exact(peer, 3)
                read_exact(peer, 7)  # "echo" [1]
                peer.sendall(bytes([0x94, 0x01, request[2], 0xA8]) + b"no disk!" + bytes([0xC0]))
                assert caller.proc.wait(WAIT) == 1
        assert caller.out == [] and caller.err == ["links rpc call: error reply: no disk!"]


# -- 2. a peer in Go ---------------------------------------------------------------------------


@pytest.fixture(scope="session")
def go_peer(tmp_path_factory) -> str:
    """The Go peer, built once: the path of its binary."""
    if GO is None:
        pytest.skip("no go here (Debian: apt-get install golang-go)")
    if not CODEC.is_dir():
        pytest.skip(f"no {CODEC} (Debian: golang-github-ugorji-go-codec-dev)")
    out = tmp_path_factory.mktemp("msgpack_rpc_peer")
    # GOPATH mode, the toolchain at hand: nothing is downloaded.
    env = {**os.environ, "GO111MODULE": "off", "GOPATH": str(GOPATH), "GOCACHE": str(out / "cache"), "GOFLAGS": "",
           "GOTOOLCHAIN": "local"}  # fmt: skip
    binary = out / "msgpack_rpc_peer"
    done = subprocess.run([GO, "build", "-o", str(binary), str(SOURCE)], env=env, capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stderr
    return str(binary)


def go_call(peer: str, addr: str, method: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([peer, "call", "-addr", addr, "-method", method, *args], capture_output=True, text=True, timeout=WAIT)


@pytest.mark.parametrize(
    ("method", "args", "printed"),
    [("add", ["2", "3"], "5"), ("echo", ['{"a":[1,"x",2.5,null]}'], '{"a":[1,"x",2.5,null]}'), ("sleep", ["0.01"], "0.01")],
)  # fmt: skip
def test_the_go_client_calls_links_rpc_serve(go_peer, links_server, method, args, printed):
    done = go_call(go_peer, links_server, method, *args)
    assert (done.returncode, done.stdout, done.stderr) == (0, printed + "\n", "")


@pytest.mark.parametrize("method", ["add", "echo"])
def test_the_go_client_pipelines_200_calls_on_one_connection(go_peer, links_server, method):
    done = go_call(go_peer, links_server, method, "-concurrent", "200", "7" if method == "add" else '"x"')
    assert (done.returncode, done.stdout) == (0, "concurrent: OK 200\n"), done.stdout + done.stderr


def test_the_go_client_gets_links_error_replies(go_peer, links_server):
    # links' error is one string, "Type: message": what the codec's client reads (as Go's error).
    done = go_call(go_peer, links_server, "fail", '"the disk is full"')
    assert (done.returncode, done.stdout) == (1, "")
    assert done.stderr == "error: Failed: the disk is full\n"
    unknown = go_call(go_peer, links_server, "nosuch")
    assert (unknown.returncode, unknown.stderr) == (1, "error: NoSuchMethod: no method 'nosuch'\n")


@pytest.fixture(scope="module")
def go_server(go_peer):
    child = Child([go_peer, "serve", "-port", "0"], timeout=WAIT)
    with child:
        port = child.wait_line(r"\d+$")[0]
        yield f"127.0.0.1:{port}"


def links_call(addr: str, method: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([LINKS, "rpc", "call", addr, method, *args], capture_output=True, text=True, timeout=WAIT)


@pytest.mark.parametrize(
    ("method", "args", "printed"),
    [("add", ["2", "3"], "5"), ("add", ["-7", "1000000"], "999993"),
     ("echo", ['{"a": [1, "x", 2.5, null]}'], '{"a": [1, "x", 2.5, null]}'), ("echo", ['"héllo"'], '"héllo"')],
)  # fmt: skip
def test_links_rpc_call_calls_the_go_server(go_server, method, args, printed):
    done = links_call(go_server, method, *args)
    assert (done.returncode, done.stdout, done.stderr) == (0, printed + "\n", "")


@pytest.mark.parametrize(("method", "args", "says"), [("fail", ['"boom"'], "boom"), ("nosuch", [], "no such method: nosuch")])
def test_links_rpc_call_shows_the_go_servers_error_replies(go_server, method, args, says):
    done = links_call(go_server, method, *args)
    assert (done.returncode, done.stdout) == (1, "")
    assert done.stderr.splitlines() == [f"links rpc call: error reply: {says}"]
