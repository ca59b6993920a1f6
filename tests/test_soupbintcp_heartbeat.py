"""SoupBinTCP heartbeats and silence: exactly, on a fake clock, then on real sockets and the
real timer thread with small intervals."""

from __future__ import annotations

import time

import pytest
from test_soupbintcp_session import WAIT, client, connect, echo_server, logged_in, watch_logs

import links
from links.soupbintcp import ClientHeartbeat, CltProtocol, Debug, LoginAccepted, SequencedData, ServerHeartbeat
from links.testing import FakeClock


@pytest.fixture
def fake():
    clock = FakeClock()
    return clock, links.Timer(clock=clock, thread=False)


def test_client_heartbeats_only_when_idle_and_detects_a_silent_server(poll, timer, fake):
    clock, fake_timer = fake
    with watch_logs() as logs, echo_server(poll, timer, heartbeat_interval=None) as server:
        config = CltProtocol(username="user", password="secret", heartbeat_interval=1.0, idle_timeout=15.0)
        clt = links.Clt.connect(server.addr, protocol=config, timer=fake_timer, poll_handler=poll, timeout=WAIT)
        with clt:
            assert clt.recv(timeout=WAIT) == LoginAccepted("DAY1", 1)
            clock.advance(1.0)
            assert fake_timer.run_due() == 1  # nothing sent for 1 s: R
            clock.advance(0.5)
            clt.send(Debug("one"))
            clock.advance(0.5)
            fake_timer.run_due()  # sent 0.5 s ago: no R
            clt.send(Debug("two"))
            clock.advance(1.0)
            fake_timer.run_due()  # nothing for 1 s: R
            clt.send(Debug("three"))
            assert server.store.find_recv(lambda m: m == Debug("three"), timeout=WAIT)
            assert server.store.recv_msgs()[1:] == [
                ClientHeartbeat(), Debug("one"), Debug("two"), ClientHeartbeat(), Debug("three"),
            ]  # fmt: skip

            # The server said nothing since Login Accepted at t=0.
            clock.advance(11.9)  # t=14.9
            assert clt.is_connected()
            clock.advance(0.1)  # t=15: silent for idle_timeout
            assert not clt.is_connected()  # at once, before any timer task runs
            fake_timer.run_due()
            clock.advance(1.0)  # the next tick closes the connection
            fake_timer.run_due()
            with pytest.raises(links.BrokenError, match="soupbintcp.idle_timeout"):
                clt.recv(timeout=WAIT)
            assert logs.wait("soupbintcp.idle_timeout", idle_timeout=15.0)
            assert logs.wait("clt.disconnected", reason="peer_closed")  # the server saw us leave


def test_server_heartbeats_only_when_idle_and_disconnects_a_silent_client(poll, timer, fake):
    clock, fake_timer = fake
    with watch_logs() as logs, echo_server(poll, fake_timer, heartbeat_interval=1.0, idle_timeout=15.0) as server:
        with connect(server, poll, timer, client(heartbeat_interval=None)) as clt:
            assert clt.recv(timeout=WAIT) == LoginAccepted("DAY1", 1)
            con_id = logged_in(server)
            clock.advance(1.0)
            fake_timer.run_due()
            assert clt.recv(timeout=WAIT) == ServerHeartbeat()
            clock.advance(0.5)
            server.sender.send_to(con_id, SequencedData(b"data"))
            clock.advance(0.5)
            fake_timer.run_due()  # sent 0.5 s ago: no H
            server.sender.send_to(con_id, Debug("mark"))
            assert clt.recv(timeout=WAIT) == SequencedData(b"data")
            assert clt.recv(timeout=WAIT) == Debug("mark")  # nothing in between
            clock.advance(1.0)
            fake_timer.run_due()
            assert clt.recv(timeout=WAIT) == ServerHeartbeat()

            # The client said nothing since its Login Request at t=0.
            assert server.sender.is_connected()
            clock.advance(12.0)  # t=15
            assert not server.sender.is_connected()  # no live, logged-in connection left
            fake_timer.run_due()
            with pytest.raises(links.BrokenError, match="peer closed"):
                clt.recv(timeout=WAIT)
            assert logs.wait("soupbintcp.idle_timeout", con_id=str(con_id), idle_timeout=15.0)
            assert logs.wait("clt.disconnected", con_id=str(con_id), reason="soupbintcp.idle_timeout")


# -- real sockets, real timer thread --------------------------------------------------------------


def test_heartbeats_keep_a_quiet_session_alive_past_the_idle_timeout(poll, timer):
    beats = links.StoreCallback()
    fast = {"heartbeat_interval": 0.02, "idle_timeout": 0.3}
    with echo_server(poll, timer, **fast) as server:
        with connect(server, poll, timer, client(**fast), callback=beats) as clt:
            clt.into_sender_with_spawned_recver()
            # Twenty heartbeats, at least 0.02 s apart, outlast the idle timeout (0.3 s).
            started = time.monotonic()
            for _ in range(20):
                assert beats.find_recv(lambda m: m == ServerHeartbeat(), timeout=WAIT)
                beats.clear()
            assert time.monotonic() - started > 0.3
            assert server.store.find_recv(lambda m: m == ClientHeartbeat(), timeout=WAIT)
            assert clt.is_connected()
            assert server.sender.is_connected()


def test_client_gives_up_on_a_silent_server(poll, timer):
    with echo_server(poll, timer, heartbeat_interval=None) as server:
        with connect(server, poll, timer, client(heartbeat_interval=0.02, idle_timeout=0.2)) as clt:
            assert clt.recv(timeout=WAIT) == LoginAccepted("DAY1", 1)
            started = time.monotonic()
            with pytest.raises(links.BrokenError, match="soupbintcp.idle_timeout"):
                clt.recv(timeout=WAIT)
            assert 0.1 < time.monotonic() - started < 2.0
            assert not clt.is_connected()


def test_server_gives_up_on_a_silent_client(poll, timer):
    with echo_server(poll, timer, heartbeat_interval=0.02, idle_timeout=0.2) as server:
        with connect(server, poll, timer, client(heartbeat_interval=None)) as clt:
            started = time.monotonic()
            with pytest.raises(links.BrokenError, match="peer closed"):
                while True:  # heartbeats from the server, then its close
                    assert clt.recv(timeout=WAIT) in (LoginAccepted("DAY1", 1), ServerHeartbeat())
            assert 0.1 < time.monotonic() - started < 2.0
