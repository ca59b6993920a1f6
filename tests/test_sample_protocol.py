"""The sample protocol over real loopback sockets: login, Ping/Pong, login deadline, heartbeats."""

from __future__ import annotations

import socket
import time

import pytest
from structlog.testing import capture_logs

import links
from links.testing import (
    FakeClock,
    Heartbeat,
    Login,
    LoginAccepted,
    LoginFailed,
    LoginRejected,
    Ping,
    Pong,
    SampleClient,
    SampleMessenger,
    SampleServer,
)


def _addr(svc: links.Svc) -> str:
    return f"127.0.0.1:{svc.local_addr[1]}"


def _spawned_svc(poll, timer, protocol=SampleServer, callback=None, max_connections=4) -> links.Svc:
    svc = links.Svc.bind(
        "127.0.0.1:0", protocol=protocol, callback=callback, max_connections=max_connections,
        poll_handler=poll, timer=timer,
    )  # fmt: skip
    svc.into_sender_with_spawned_recver()
    return svc


def _ping_pong(clt: links.Clt, seqs) -> None:
    for seq in seqs:
        assert clt.send(Ping(seq), timeout=5.0) is links.SendStatus.COMPLETED
        assert clt.recv(timeout=5.0) == Pong(seq)


# -- messages ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "msg", [Ping(3), Pong(4), Login("u", "p"), LoginAccepted("u"), LoginRejected("no"), Heartbeat()]
)
def test_messenger_round_trips_every_message(msg):
    messenger = SampleMessenger()
    assert messenger.deserialize(memoryview(bytes(messenger.serialize(msg)))) == msg


@pytest.mark.parametrize("payload", [b"[1]", b'{"seq": 1}', b'{"type": "Nope"}', b'{"type": "Ping", "x": 1}', b"\xff"])
def test_messenger_rejects_bad_payloads_with_decode_error(payload):
    with pytest.raises(links.DecodeError):
        SampleMessenger().deserialize(payload)


def test_login_repr_hides_the_password():
    assert "secret" not in repr(Login("user", "secret"))


# -- login and Ping/Pong ---------------------------------------------------------------------


def test_login_accepted_then_ping_pong_through_a_spawned_service(poll, timer):
    store = links.StoreCallback()
    with _spawned_svc(poll, timer, callback=store) as svc:
        with links.Clt.connect(_addr(svc), protocol=SampleClient, poll_handler=poll, timer=timer) as clt:
            assert clt.is_connected()
            assert clt.recv(timeout=5.0) == LoginAccepted("user")  # kept from the handshake
            _ping_pong(clt, range(5))
        assert [m for m in store.recv_msgs() if isinstance(m, Ping)] == [Ping(i) for i in range(5)]


def test_bad_password_fails_connect_and_releases_the_gate_slot(poll, timer):
    with _spawned_svc(poll, timer, max_connections=1) as svc:
        with pytest.raises(LoginFailed) as e:
            wrong = lambda: SampleClient("user", "wrong")  # noqa: E731
            links.Clt.connect(_addr(svc), protocol=wrong, poll_handler=poll, timer=timer)
        assert e.value.reason == "bad username or password"
        assert poll.sync()  # the server's reply and close ran in one poll-thread pass
        assert svc.gate.in_use == 0
        with links.Clt.connect(_addr(svc), protocol=SampleClient, poll_handler=poll, timer=timer) as clt:
            assert clt.is_connected()  # the only slot was free again


class _NoLogin(links.Protocol):
    """Speaks the sample messages but skips the login."""

    framer = SampleClient.framer
    messenger = SampleMessenger()


def test_a_message_before_login_is_rejected_and_disconnected(poll, timer):
    with _spawned_svc(poll, timer) as svc:
        with links.Clt.connect(_addr(svc), protocol=_NoLogin, poll_handler=poll, timer=timer) as clt:
            clt.send(Ping(1))
            assert clt.recv(timeout=5.0) == LoginRejected("log in first")
            with pytest.raises(links.BrokenError) as e:
                clt.recv(timeout=5.0)
            assert e.value.reason == "peer_closed"


# -- the login deadline ----------------------------------------------------------------------


def test_silent_client_is_disconnected_after_login_timeout(poll, timer):
    login_timeout = 0.2
    server = lambda: SampleServer(login_timeout=login_timeout)  # noqa: E731
    with capture_logs() as logs, _spawned_svc(poll, timer, protocol=server) as svc:
        started = time.monotonic()
        with socket.create_connection(svc.local_addr, timeout=5.0) as raw:
            assert raw.recv(16) == b""  # EOF: the server closed it (a timeout would raise)
        assert time.monotonic() - started >= login_timeout
    assert "sample.login_timeout" in [e["event"] for e in logs]


def test_pending_login_never_blocks_the_poll_thread(poll, timer):
    # The server's deadlines run on a fake clock that only this test moves: a server that
    # waited for the silent client's login on the poll thread would wait forever, and the
    # second client's connect would time out.
    clock = FakeClock()
    with links.Timer(clock=clock, thread=False) as server_timer, capture_logs() as logs:
        svc = _spawned_svc(poll, server_timer, protocol=lambda: SampleServer(login_timeout=1.0))
        with svc, socket.create_connection(svc.local_addr, timeout=5.0) as raw:
            # Accepted in queue order: once this client is logged in, the raw one was
            # accepted too, and its deadline is scheduled.
            with links.Clt.connect(_addr(svc), protocol=SampleClient, poll_handler=poll, timer=timer) as clt:
                assert clt.recv(timeout=5.0) == LoginAccepted("user")
                _ping_pong(clt, range(3))
                assert svc.gate.in_use == 2

                clock.advance(1.0)
                assert server_timer.run_due() == 1  # only the raw client's deadline was left
                assert svc.gate.in_use == 1
                assert raw.recv(16) == b""
                _ping_pong(clt, range(3, 6))  # the logged-in client is untouched
    assert [e["event"] for e in logs].count("sample.login_timeout") == 1


# -- heartbeats ------------------------------------------------------------------------------


def test_heartbeats_arrive_on_both_sides(poll, timer):
    store = links.StoreCallback()
    with _spawned_svc(poll, timer, protocol=lambda: SampleServer(heartbeat_interval=0.02), callback=store) as svc:
        client = lambda: SampleClient(heartbeat_interval=0.02)  # noqa: E731
        with links.Clt.connect(_addr(svc), protocol=client, poll_handler=poll, timer=timer) as clt:
            assert store.find_recv(lambda m: isinstance(m, Heartbeat), timeout=5.0) == Heartbeat()
            deadline = time.monotonic() + 5.0
            msg = None
            while msg != Heartbeat() and time.monotonic() < deadline:
                msg = clt.recv(timeout=deadline - time.monotonic())
            assert msg == Heartbeat()


def test_heartbeats_follow_a_fake_clock(poll, timer):
    clock = FakeClock()
    server_store, client_store = links.StoreCallback(), links.StoreCallback()
    client = lambda: SampleClient(heartbeat_interval=1.0)  # noqa: E731
    client_timer = links.Timer(clock=clock, thread=False)
    with client_timer, _spawned_svc(poll, timer, callback=server_store) as svc:
        with links.Clt.connect(
            _addr(svc), protocol=client, callback=client_store, poll_handler=poll, timer=client_timer
        ):

            def beats() -> int:
                return sum(isinstance(m, Heartbeat) for m in client_store.sent_msgs())

            assert client_timer.run_due() == 0
            clock.advance(0.5)
            assert client_timer.run_due() == 0 and beats() == 0
            for n in (1, 2, 3):
                clock.advance(0.5 if n == 1 else 1.0)
                assert client_timer.run_due() == 1
                assert beats() == n
            assert server_store.wait_recv_count(1 + 3, timeout=5.0)  # the Login, then 3 beats
            assert server_store.recv_msgs()[1:] == [Heartbeat()] * 3
