"""A close on purpose ends a session on both sides at once; only a cut leaves it waiting.

The session protocol's BYE (``links.session._wire``): a side that closes says BYE after every
frame it numbered; the peer ends its side at once and answers with its own BYE. The server's
session is then gone (no ``detached_ttl`` wait), and a client whose server ended the session
does not redial a session that no longer exists.
"""

from __future__ import annotations

import socket

import pytest
from helpers import Json, waiting_call, watch_logs

import links
from links.session import Resumable, Session, SessionState
from links.session import _wire as wire

WAIT = 5.0
TTL = 60.0  # far beyond every wait below: whatever ends a session here, it is not the TTL


@pytest.fixture
def service(poll, timer):
    store = links.StoreCallback()
    with links.Svc.bind(
        "127.0.0.1:0", protocol=Json, callback=store, poll_handler=poll, timer=timer,
        session=Resumable(detached_ttl=TTL),
    ) as svc:  # fmt: skip
        svc.into_sender_with_spawned_recver()
        yield svc, store


def client(svc, poll, timer, **kwargs) -> links.Clt:
    return links.Clt.connect(
        f"127.0.0.1:{svc.local_addr[1]}", protocol=Json, poll_handler=poll, timer=timer, timeout=WAIT,
        session=Resumable(detached_ttl=TTL), **kwargs,
    )  # fmt: skip


# -- the engine (Sans-I/O) ---------------------------------------------------------------------


def attached_pair() -> tuple[Session, Session]:
    a, b = Session(), Session()
    a.attach(0)
    b.attach(0)
    return a, b


def test_bye_ends_both_engines_and_acknowledges_what_each_received():
    a, b = attached_pair()
    frames = [a.wrap(b"one"), a.wrap(b"two")]
    for frame in frames:
        assert b.receive(memoryview(frame)) is not None
    bye = a.goodbye()
    assert a.state is SessionState.LOST and a.ended_by == "local"
    assert a.goodbye() == b""  # said once
    assert b.receive(memoryview(bye)) is None
    assert b.state is SessionState.LOST and b.ended_by == "peer"
    answer = b.goodbye()
    assert wire.decode(memoryview(answer)) == wire.Bye(2)  # "I have both of your frames"
    a.receive(memoryview(answer))
    assert a.acknowledged and b.acknowledged
    assert len(a.replay) == 0  # the answer acknowledged everything a sent


def test_a_detached_session_has_no_goodbye_to_say():
    a, _ = attached_pair()
    a.detach(0.0)
    assert a.goodbye() == b""
    assert a.state is SessionState.DETACHED  # a cut: it waits for a resume


def test_data_the_peer_sent_before_reading_our_bye_is_dropped_not_an_error():
    a, b = attached_pair()
    a.goodbye()
    late = b.wrap(b"sent before b read the BYE")
    assert a.receive(memoryview(late)) is None
    assert a.late_frames_dropped == 1


def test_a_second_bye_is_a_protocol_error():
    a, b = attached_pair()
    b.receive(memoryview(a.goodbye()))
    with pytest.raises(links.ProtocolError):
        b.receive(memoryview(wire.encode_bye(0)))


def test_bye_claiming_frames_never_sent_is_a_protocol_error():
    a, _ = attached_pair()
    with pytest.raises(links.ProtocolError):
        a.receive(memoryview(wire.encode_bye(5)))


# -- over real sockets -------------------------------------------------------------------------


@pytest.mark.timeout(20)
def test_a_client_close_ends_the_servers_session_at_once(service, poll, timer):
    svc, store = service
    with watch_logs() as logs:
        clt = client(svc, poll, timer)
        for i in range(3):
            clt.send({"n": i}, timeout=WAIT)
        clt.close()
        ended = logs.expect("session.ended", by="peer")
        assert ended["unacked"] == 0
        logs.expect("session.ended", by="local")
        # The server logs it last, once its pool, gate and registry let the session go.
        assert len(svc.registry.sessions) == 0 and len(svc) == 0 and svc.gate.in_use == 0
    # Every message sent before the close arrived, and the session ended, never detached.
    assert [m["n"] for m in store.recv_msgs()] == [0, 1, 2]
    assert not logs.matching("session.detached")


@pytest.mark.timeout(20)
def test_a_server_close_ends_a_spawned_clients_session_and_it_does_not_redial(service, poll, timer):
    svc, store = service
    with watch_logs() as logs, client(svc, poll, timer, reconnect=links.Backoff(initial=0.01, maximum=0.05)) as clt:
        sender = clt.into_sender_with_spawned_recver()
        served(svc, store, sender)
        svc.close()
        logs.expect("session.ended", by="peer", con_id=str(sender.con_id))
        with pytest.raises(links.BrokenError) as raised:
            sender.send({"n": 1}, timeout=WAIT)
        assert raised.value.reason == "peer_closed" and "ended the session" in str(raised.value)
        assert not logs.matching("clt.reconnecting") and not logs.matching("session.rejected")


@pytest.mark.timeout(20)
def test_a_server_close_ends_the_session_of_a_client_reading_on_its_own_thread(service, poll, timer):
    svc, store = service
    with watch_logs() as logs, client(svc, poll, timer, reconnect=links.Backoff(initial=0.01, maximum=0.05)) as clt:
        served(svc, store, clt)
        reading, raised = waiting_call(lambda: clt.recv(timeout=WAIT))
        svc.close()
        reading.join(WAIT)
        assert not reading.is_alive()
        assert [type(e) for e in raised] == [links.BrokenError] and raised[0].reason == "peer_closed"
        assert logs.matching("session.ended", by="peer")
        assert not logs.matching("clt.reconnecting")


def served(svc: links.Svc, store: links.StoreCallback, sender) -> None:
    """Once a message got through, the server's connection is in its pool (svc.close closes it)."""
    sender.send({"n": 0}, timeout=WAIT)
    assert store.wait_recv_count(1, WAIT) and len(svc) == 1


@pytest.mark.timeout(20)
def test_a_cut_still_leaves_the_session_waiting_for_a_resume(service, poll, timer):
    svc, _ = service
    with watch_logs() as logs, client(svc, poll, timer, reconnect=links.Backoff(initial=0.01, maximum=0.05)) as clt:
        clt.send({"n": 1}, timeout=WAIT)
        assert len(svc.registry.sessions) == 1
        clt._con.attachment.drop("cut")  # as a network fault would: no BYE
        logs.expect("session.resumed")
        assert not logs.matching("session.ended")
        assert len(svc.registry.sessions) == 1


@pytest.mark.timeout(20)
def test_a_raw_peer_saying_bye_is_answered_and_its_slot_freed(service):
    svc, _ = service
    with watch_logs() as logs, socket.create_connection(svc.local_addr, timeout=WAIT) as peer:
        peer.sendall(wire.encode_hello(wire.NO_KEY, 0))
        welcome = peer.recv(4096)
        assert isinstance(wire.decode(memoryview(welcome)), wire.Welcome)
        peer.sendall(wire.encode_bye(0))
        answer = b""
        while len(answer) < 13:
            chunk = peer.recv(4096)
            if not chunk:
                break
            answer += chunk
        assert wire.decode(memoryview(answer[:13])) == wire.Bye(0)
        assert peer.recv(4096) == b""  # then the server closes
        logs.expect("session.ended", by="peer")
        assert len(svc.registry.sessions) == 0 and svc.gate.in_use == 0
