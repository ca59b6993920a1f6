"""Hostile SoupBinTCP peers: garbage, oversize lengths, unknown or misplaced packets, malformed
logins, a login flood past ``max_connections``. Each closes the offending connection only, with
a logged reason; a healthy client on the same poll thread keeps its session."""

from __future__ import annotations

import socket
from contextlib import ExitStack

import pytest
from test_soupbintcp_session import WAIT, client, connect, echo_server, take, watch_logs

import links
from links.soupbintcp import LoginAccepted, UnsequencedData

MAX_FRAME = 1024


def login_bytes(username: str, password: str = "secret") -> bytes:
    return b"\x00\x2fL" + username.encode().ljust(6) + password.encode().ljust(10) + b" " * 10 + b"0".rjust(20)


def open_logged_in(server, username: str) -> socket.socket:
    raw = socket.create_connection(server.svc.local_addr, timeout=WAIT)
    raw.sendall(login_bytes(username))
    expected = b"\x00\x1fA" + b"DAY1      " + b"1".rjust(20)
    got = b""
    while len(got) < len(expected):
        got += raw.recv(len(expected) - len(got))
    assert got == expected
    return raw


def assert_closed_by_peer(raw: socket.socket) -> None:
    raw.settimeout(WAIT)
    try:
        while raw.recv(4096):
            pass  # what the server said before closing (Login Rejected, heartbeats)
    except ConnectionResetError:
        pass  # closed with our bytes unread: a reset is a close too


def assert_healthy(clt: links.Clt, payload: bytes) -> None:
    clt.send(UnsequencedData(payload))
    assert take(clt, 1)[0].payload == payload
    assert clt.is_connected()


HOSTILE = {
    # name: (logs in first?, bytes, event, reason fragment)
    "garbage": (False, b"\x00\x05hello", "frame.decode_failed", "unknown packet type 'h'"),
    "http request": (False, b"GET / HTTP/1.1\r\n\r\n", "frame.too_large", None),
    "oversize length": (True, b"\xff\xffU" + b"x" * 100, "frame.too_large", None),
    "empty packet": (True, b"\x00\x00", "frame.decode_failed", "empty packet"),
    "unknown type": (True, b"\x00\x03Xab", "frame.decode_failed", "unknown packet type 'X'"),
    "length disagrees with type": (True, b"\x00\x05Rabcd", "frame.decode_failed", "must carry 0 bytes"),
    "malformed login": (False, login_bytes("evil")[:-20] + b"not a number at all!", "frame.decode_failed",
                        "sequence field is not a number"),
    "short login": (False, b"\x00\x10L" + b"x" * 15, "frame.decode_failed", "must carry 46 bytes"),
    "data before login": (False, b"\x00\x02Ux", "frame.decode_failed", "not allowed while logging in"),
    "server packet from a client": (True, b"\x00\x02JA", "frame.decode_failed", "client does not send 'J'"),
    "second login": (True, login_bytes("evil"), "frame.decode_failed", "'L' (LoginRequest) is not allowed"),
}  # fmt: skip


@pytest.mark.parametrize("name", HOSTILE)
def test_hostile_bytes_close_only_that_connection(poll, timer, name):
    logs_in, hostile, event, reason = HOSTILE[name]
    anyone = {"username": None, "password": None, "authenticate": lambda u, p: True}
    with watch_logs() as logs, echo_server(poll, timer, max_frame_size=MAX_FRAME, **anyone) as server:
        with connect(server, poll, timer) as healthy:
            assert healthy.recv(timeout=WAIT) == LoginAccepted("DAY1", 1)
            assert_healthy(healthy, b"before")
            raw = open_logged_in(server, "evil") if logs_in else socket.create_connection(server.svc.local_addr)
            with raw:
                raw.sendall(hostile)
                assert_closed_by_peer(raw)
            found = logs.wait(event)
            assert found, logs.entries
            if reason:
                assert reason in found["error"]
            assert_healthy(healthy, b"after")
            assert len(server.sender) == 1


def test_a_login_flood_past_max_connections_leaves_a_healthy_session_alone(poll, timer):
    flood = 20
    good_password = {"username": None, "password": None, "authenticate": lambda u, p: p == "secret"}
    with (
        watch_logs() as logs,
        echo_server(poll, timer, max_connections=4, **good_password) as server,
        ExitStack() as raws,
    ):
        with connect(server, poll, timer) as healthy:
            assert healthy.recv(timeout=WAIT) == LoginAccepted("DAY1", 1)
            flooders = [raws.enter_context(socket.create_connection(server.svc.local_addr)) for _ in range(flood)]
            # Three slots are left beside the healthy client: all the others are turned away at the gate.
            assert logs.wait_count("svc.rejected", flood - 3)
            assert_healthy(healthy, b"during")
            for raw in flooders:
                try:
                    raw.sendall(login_bytes("user", "guess"))
                except OSError:
                    pass  # turned away already
            for raw in flooders:
                assert_closed_by_peer(raw)
            assert logs.wait_count("soupbintcp.login_rejected", 3)
            assert_healthy(healthy, b"after")
            # Every slot the flood took was given back: another good client gets in.
            with connect(server, poll, timer, client(username="other")) as late:
                assert late.is_connected()
            assert_healthy(healthy, b"still")
