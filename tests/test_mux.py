"""Channels over one TCP connection (``links.mux``), on real loopback sockets."""

from __future__ import annotations

import socket

import pytest
from helpers import Json, waiting_call

import links
from links.mux import Carrier, Mux

WAIT = 5.0


class Echo(Json):
    """Answers every message with itself, from the poll thread."""

    def send_reply(self, msg, con):
        con.send(msg)


@pytest.fixture
def echo_svc(poll, timer):
    store = links.StoreCallback()
    with links.Svc.bind("127.0.0.1:0", protocol=Echo, callback=store, poll_handler=poll, timer=timer, mux=True) as svc:
        svc.into_sender_with_spawned_recver()
        yield svc, store


def dial(svc, poll, timer, **kwargs) -> Mux:
    return links.mux.connect(f"127.0.0.1:{svc.local_addr[1]}", poll_handler=poll, timer=timer, timeout=WAIT, **kwargs)


def test_channels_are_connections_over_one_tcp_connection(echo_svc, poll, timer):
    svc, store = echo_svc
    with dial(svc, poll, timer) as mux:
        channels = [mux.open(protocol=Json, timeout=WAIT) for _ in range(3)]
        for i, ch in enumerate(channels):
            assert ch.send({"n": i}) is links.SendStatus.COMPLETED
        for i, ch in enumerate(channels):
            assert ch.recv(timeout=WAIT) == {"n": i}
        assert svc.gate.in_use == 1  # one TCP connection
        assert len(svc) == 3  # three channels in the pool
        names = {str(ch.con_id) for ch in channels}
        assert len(names) == 3 and all("#" in name for name in names)
        assert channels[0].con_id.local == channels[1].con_id.local  # the same physical connection
        for ch in channels:
            ch.close()


def test_a_closed_channel_leaves_the_pool_and_the_others_carry_on(echo_svc, poll, timer, logs):
    svc, store = echo_svc
    with dial(svc, poll, timer) as mux:
        a, b = mux.open(protocol=Json, timeout=WAIT), mux.open(protocol=Json, timeout=WAIT)
        for ch, n in ((a, 1), (b, 2)):
            ch.send({"x": n})
            assert ch.recv(timeout=WAIT) == {"x": n}
        assert len(svc) == 2
        a_on_server = next(c for c in svc.con_ids() if c.name.endswith(f"#{a.con_id.name.split('#')[1]}"))
        a.close()
        logs.expect("clt.disconnected", con_id=str(a_on_server))
        assert svc.con_ids() == [c for c in svc.con_ids() if c != a_on_server] and len(svc) == 1
        b.send({"x": 3})
        assert b.recv(timeout=WAIT) == {"x": 3}


def test_spawned_channel_receivers_on_both_sides(echo_svc, poll, timer):
    svc, store = echo_svc
    got = links.StoreCallback()
    with dial(svc, poll, timer) as mux:
        ch = mux.open(protocol=Json, callback=got, timeout=WAIT)
        sender = ch.into_sender_with_spawned_recver()
        for i in range(100):
            sender.send({"i": i})
        assert got.find_recv(lambda m: m == {"i": 99}, timeout=WAIT) == {"i": 99}
        assert got.recv_msgs() == [{"i": i} for i in range(100)]


def test_a_connection_lost_before_it_is_pooled_never_hangs_connect(echo_svc, poll, timer, monkeypatch):
    # A peer may end the connection as soon as it is dialed (a TLS server refusing a plaintext
    # client does), before connect() has put it in the pool: connect() still returns, and
    # opening a channel on it says why it cannot.
    svc, _ = echo_svc
    dial_as_usual = Carrier.connect

    def dial_and_lose(*args, **kwargs):
        carrier = dial_as_usual(*args, **kwargs)
        carrier.close()
        return carrier

    monkeypatch.setattr(Carrier, "connect", dial_and_lose)
    handles = []
    thread, raised = waiting_call(lambda: handles.append(dial(svc, poll, timer)))
    thread.join(WAIT)
    assert not thread.is_alive(), "connect() hung"
    assert not raised and len(handles) == 1
    with handles[0] as mux, pytest.raises(links.ClosedError):
        mux.open(protocol=Json, timeout=WAIT)
    monkeypatch.undo()
    with dial(svc, poll, timer) as mux:  # the lost one left the pool: a new connection
        ch = mux.open(protocol=Json, timeout=WAIT)
        ch.send({"again": True})
        assert ch.recv(timeout=WAIT) == {"again": True}
        ch.close()


def test_open_while_redialing_fails_as_soon_as_the_redials_give_up(poll, timer, logs):
    # open() waits for a connection while the carrier redials; when the redials give up, it
    # must say so then, not when its own (long) timeout ends.
    listener = socket.create_server(("127.0.0.1", 0))
    addr = f"127.0.0.1:{listener.getsockname()[1]}"
    retry = links.Backoff(initial=0.5, maximum=0.5, jitter=0.0, max_attempts=1)
    with listener, links.mux.connect(addr, reconnect=retry, poll_handler=poll, timer=timer, timeout=WAIT) as mux:
        peer, _ = listener.accept()
        listener.close()  # the redial is refused
        peer.close()
        logs.expect("clt.reconnecting")
        thread, raised = waiting_call(lambda: mux.open(protocol=Json, timeout=60.0))
        thread.join(WAIT)
        assert not thread.is_alive(), "open() waited on after the connection was closed for good"
        assert len(raised) == 1 and isinstance(raised[0], links.BrokenError), raised
