"""Hostile msgpack-rpc peers as raw sockets. Bytes that break the msgpack stream (a reserved
byte, nesting past msgpack's bound, a value past max_frame_size, however declared) close that
connection alone; a well-framed value that is no msgpack-rpc message, or over a limit, or a
reply nobody asked for, is logged and the connection stays. The poll thread never waits on a
client that does not read its replies."""

from __future__ import annotations

import socket
from contextlib import contextmanager

import msgpack
import pytest

import links
import links.rpc

WAIT = 5.0
MAX_FRAME = 4096


@contextmanager
def service(poll, timer, **kwargs):
    server = links.rpc.Server({"echo": lambda x: x, "add": lambda a, b: a + b}, max_frame_size=MAX_FRAME, max_depth=8)
    with links.rpc.serve("127.0.0.1:0", server, poll_handler=poll, timer=timer, **kwargs) as svc:
        yield svc


@contextmanager
def raw(svc):
    sock = socket.create_connection(svc.local_addr, timeout=WAIT)
    try:
        yield sock
    finally:
        sock.close()


def read_values(sock: socket.socket, n: int) -> list:
    unpacker = msgpack.Unpacker(raw=False)
    out: list = []
    while len(out) < n:
        data = sock.recv(65536)
        assert data, f"closed after {out}"
        unpacker.feed(data)
        out.extend(unpacker)
    return out


def closed_by_peer(sock: socket.socket) -> bool:
    try:
        while data := sock.recv(65536):
            del data
    except ConnectionResetError:
        pass
    return True


def still_served(svc, poll, timer) -> None:
    with links.rpc.connect(f"127.0.0.1:{svc.local_addr[1]}", poll_handler=poll, timer=timer, timeout=WAIT) as rpc:
        assert rpc.call("add", 1, 2, timeout=WAIT) == 3


@pytest.mark.parametrize(
    ("garbage", "event"),
    [(b"\xc1", "frame.decode_failed"), (b"\x91" * 2000 + b"\xc0", "frame.decode_failed"),
     (b"\xdb\x00\x00\x20\x00" + b"x" * (MAX_FRAME + 10), "frame.too_large"),
     (b"\xdd\xff\xff\xff\xff" + b"\xc0" * MAX_FRAME, "frame.too_large")],
    ids=["reserved byte", "nesting past 1024", "string past max_frame_size", "array32 bomb"],
)  # fmt: skip
def test_a_broken_stream_closes_that_connection_alone(logs, poll, timer, garbage, event):
    with service(poll, timer) as svc, raw(svc) as sock:
        sock.sendall(msgpack.packb([0, 1, "echo", ["before"]]) + garbage)
        assert read_values(sock, 1) == [[1, 1, None, "before"]]  # what came first was answered
        assert closed_by_peer(sock)
        logs.expect(event)
        still_served(svc, poll, timer)


@pytest.mark.parametrize(
    ("value", "event", "answer"),
    [([0, 7, 5, []], "rpc.bad_envelope", [1, 7, "BadRequest: method must be a string, not 5", None]),
     ([0, 8, "echo", "not an array"], "rpc.bad_envelope", None), ([9, 9], "rpc.bad_envelope", None),
     ("just a string", "rpc.bad_envelope", None), ([1, 4242, None, 1], "rpc.unknown_reply", None),
     ([0, 9, "echo", [[[[[[[[[[1]]]]]]]]]]], "rpc.bad_message", None)],
    ids=["method not a string", "params not an array", "unknown kind", "not an array", "unknown reply", "too deep"],
)  # fmt: skip
def test_a_well_framed_bad_message_is_logged_and_the_connection_stays(logs, poll, timer, value, event, answer):
    with service(poll, timer) as svc, raw(svc) as sock:
        sock.sendall(msgpack.packb(value) + msgpack.packb([0, 2, "add", [2, 2]]))
        replies = read_values(sock, 2 if answer else 1)
        assert replies[-1] == [1, 2, None, 4]
        if answer:
            assert replies[0] == answer
        entry = logs.expect(event)
        assert {"con_id", "error", "count"} <= entry.keys() and entry["con_id"].startswith("Acceptor(")
        if event == "rpc.unknown_reply":
            assert entry["msgid"] == 4242


def test_a_method_name_sent_as_binary_is_taken_as_utf8(poll, timer):
    with service(poll, timer) as svc, raw(svc) as sock:
        sock.sendall(msgpack.packb([0, 3, b"add", [1, 2]], use_bin_type=True) + msgpack.packb([2, b"echo", [1]]))
        assert read_values(sock, 1) == [[1, 3, None, 3]]


def test_bad_utf8_in_a_request_is_undecodable_not_fatal(logs, poll, timer):
    with service(poll, timer) as svc, raw(svc) as sock:
        sock.sendall(b"\x94\x00\x03\xa4echo\x91\xa2\xff\xfe" + msgpack.packb([0, 4, "echo", ["ok"]]))
        assert read_values(sock, 1) == [[1, 4, None, "ok"]]
        logs.expect("rpc.bad_message")


def test_a_flood_of_bad_messages_is_logged_loudly_only_at_first(logs, poll, timer):
    with service(poll, timer) as svc, raw(svc) as sock:
        sock.sendall(msgpack.packb([9]) * 50 + msgpack.packb([0, 1, "add", [1, 1]]))
        assert read_values(sock, 1) == [[1, 1, None, 2]]
        assert len(logs.matching("rpc.bad_envelope", log_level="warning")) == 10
        assert len(logs.matching("rpc.bad_envelope")) == 50


def test_a_client_that_never_reads_its_replies_costs_only_its_own_connection(logs, poll, timer):
    with service(poll, timer, max_outbound=1 << 16, stall_timeout=WAIT * 4) as svc:
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.connect(svc.local_addr)
        try:
            request = msgpack.packb([0, 1, "echo", ["x" * 3000]])
            sock.setblocking(False)
            sent = 0
            while not logs.matching("rpc.replies_dropped") and sent < 20_000:
                try:
                    sock.send(request)
                    sent += 1
                except BlockingIOError:
                    logs.wait("rpc.replies_dropped")
            assert logs.expect("rpc.replies_dropped")["count"] >= 1
            still_served(svc, poll, timer)  # the poll thread never waited on it
        finally:
            sock.close()


# -- a hostile server, seen by a links client -----------------------------------------------------


def test_a_server_sending_replies_of_the_wrong_shape_or_for_no_call(logs, poll, timer):
    with socket.create_server(("127.0.0.1", 0)) as listener:
        rpc = links.rpc.connect(f"127.0.0.1:{listener.getsockname()[1]}", poll_handler=poll, timer=timer, timeout=WAIT)
        conn, _ = listener.accept()
        with conn, rpc:
            future = rpc.call_async("add", 1, 2, timeout=WAIT)
            (request,) = read_values(conn, 1)
            msgid = request[1]
            conn.sendall(
                msgpack.packb([1, "x", None, 1]) + msgpack.packb([1, msgid + 1000, None, 1])
                + msgpack.packb([1, msgid, None, 3])
            )  # fmt: skip
            assert future.result(WAIT) == 3
            logs.expect("rpc.bad_envelope")
            logs.expect("rpc.unknown_reply")
            conn.sendall(msgpack.packb([1, msgid, ["Oops", "twice"], None]))  # a second reply: nobody waits
            logs.expect("rpc.unknown_reply", count=2)
            pending = rpc.call_async("add", 1, 2, timeout=WAIT)
            (request,) = read_values(conn, 1)
            conn.sendall(msgpack.packb([1, request[1], "plain text error", None]))
            with pytest.raises(links.rpc.RemoteError) as e:
                pending.result(WAIT)
            assert (e.value.type, e.value.message) == ("", "plain text error")
            for error, parts in [(["KeyError", "k"], ("KeyError", "k")), ({"code": 3}, ("", "{'code': 3}")),
                                 ("pkg.Mod.Err: bad: worse", ("pkg.Mod.Err", "bad: worse")),
                                 ("not an id: text", ("", "not an id: text"))]:  # fmt: skip
                pending = rpc.call_async("add", 1, 2, timeout=WAIT)
                (request,) = read_values(conn, 1)
                conn.sendall(msgpack.packb([1, request[1], error, None]))
                with pytest.raises(links.rpc.RemoteError) as e:
                    pending.result(WAIT)
                assert (e.value.type, e.value.message) == parts and e.value.error == error
