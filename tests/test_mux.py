"""Channels over one TCP connection (``links.mux``), on real loopback sockets."""

from __future__ import annotations

import threading


import pytest
from helpers import Json

import links
from links.mux import Mux

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


# -- the pool per address -------------------------------------------------------------------


def test_connect_shares_one_tcp_connection_per_address_and_counts_its_holders(echo_svc, poll, timer, logs):
    svc, _ = echo_svc
    a = dial(svc, poll, timer)
    b = dial(svc, poll, timer)
    assert a.con_id == b.con_id
    ch = b.open(protocol=Json, timeout=WAIT)
    a.close()
    b.close()  # the channel still holds the connection
    ch.send({"still": "up"})
    assert ch.recv(timeout=WAIT) == {"still": "up"}
    assert svc.gate.in_use == 1  # one TCP connection, accepted before the echo came
    physical = a.con_id
    ch.close()  # the last holder: the connection closes
    logs.expect("clt.disconnected", con_id=str(physical))
    c = dial(svc, poll, timer)  # a new one is dialed
    assert c.con_id != physical
    c.close()


def test_other_options_make_another_connection(echo_svc, poll, timer, logs):
    svc, _ = echo_svc
    with dial(svc, poll, timer) as a, dial(svc, poll, timer, name="other") as b:
        assert a.con_id != b.con_id
        logs.expect("svc.accepted", count=2)


def test_idle_timeout_keeps_the_connection_for_a_while_then_closes_it(echo_svc, poll, timer, logs):
    svc, _ = echo_svc
    a = dial(svc, poll, timer, idle_timeout=0.3)
    physical = a.con_id
    a.close()
    b = dial(svc, poll, timer, idle_timeout=0.3)  # within the idle time: the same connection
    assert b.con_id == physical
    b.close()
    logs.expect("clt.disconnected", con_id=str(physical))
    with dial(svc, poll, timer, idle_timeout=0.3) as c:
        assert c.con_id != physical


def test_a_closed_handle_opens_nothing(echo_svc, poll, timer):
    svc, _ = echo_svc
    mux = dial(svc, poll, timer)
    mux.close()
    mux.close()  # idempotent
    with pytest.raises(links.ClosedError):
        mux.open(protocol=Json)


# -- TLS, refs, reconnect -------------------------------------------------------------------


def test_channels_over_mutual_tls_know_the_peer(poll, timer):
    trustme = pytest.importorskip("trustme")
    import ssl

    ca = trustme.CA()
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("localhost", "127.0.0.1").configure_cert(server_ctx)
    server_ctx.verify_mode = ssl.CERT_REQUIRED
    ca.configure_trust(server_ctx)
    client_ctx = ssl.create_default_context()
    ca.configure_trust(client_ctx)
    ca.issue_cert("client@example.com").configure_cert(client_ctx)
    seen = []

    class Who(Echo):
        def on_connect(self, con):
            seen.append(con.peer_certificate)

    with links.Svc.bind("127.0.0.1:0", protocol=Who, poll_handler=poll, timer=timer, mux=True, tls=server_ctx) as svc:
        svc.into_sender_with_spawned_recver()
        with dial(svc, poll, timer, tls=client_ctx, tls_server_name="localhost") as mux:
            a, b = mux.open(protocol=Json, timeout=WAIT), mux.open(protocol=Json, timeout=WAIT)
            for ch in (a, b):
                ch.send({"over": "tls"})
                assert ch.recv(timeout=WAIT) == {"over": "tls"}
                assert ch.peer_certificate is not None  # the server's, through the TCP connection
            assert len(seen) == 2
            assert all(("email", "client@example.com") in dict(c["subjectAltName"]).items() or
                       any(v == "client@example.com" for _, v in c["subjectAltName"]) for c in seen)


def test_a_channel_splits_into_refs_shared_by_threads(echo_svc, poll, timer):
    svc, _ = echo_svc
    with dial(svc, poll, timer) as mux:
        recver, sender = mux.open(protocol=Json, timeout=WAIT).split_ref()
        done = []

        def send(n: int) -> None:
            clone = sender.clone()
            for i in range(50):
                with clone.locked() as s:
                    s.send({"t": n, "i": i})

        threads = [threading.Thread(target=send, args=(n,)) for n in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(WAIT)
        with recver.locked() as r:
            for _ in range(200):
                done.append(r.recv(timeout=WAIT))
        for n in range(4):
            assert [m["i"] for m in done if m["t"] == n] == list(range(50))
        with sender.locked() as s:
            s.close()


def test_a_cut_ends_every_channel_and_reconnect_brings_new_ones(echo_svc, poll, timer):
    from links.testing._proxy import FaultProxy

    svc, _ = echo_svc
    with FaultProxy(svc.local_addr) as proxy:
        mux = links.mux.connect(f"127.0.0.1:{proxy.addr[1]}", poll_handler=poll, timer=timer, timeout=WAIT,
                                reconnect=links.Backoff(initial=0.01, maximum=0.05))  # fmt: skip
        with mux:
            a = mux.open(protocol=Json, timeout=WAIT)
            a.send({"n": 1})
            assert a.recv(timeout=WAIT) == {"n": 1}
            proxy.reset()
            with pytest.raises(links.BrokenError) as e:
                a.recv(timeout=WAIT)
            assert e.value.reason == "mux.connection_lost"
            b = mux.open(protocol=Json, timeout=WAIT)  # on the redialed connection
            b.send({"n": 2})
            assert b.recv(timeout=WAIT) == {"n": 2}
            b.close()
            a.close()


def test_either_side_opens_channels(echo_svc, poll, timer, logs):
    svc, _ = echo_svc
    taken = []
    with dial(svc, poll, timer, protocol=Echo, accept=lambda clt: taken.append(clt.into_sender_with_spawned_recver())) as mux:
        ch = mux.open(protocol=Json, timeout=WAIT)
        ch.send({"first": True})
        assert ch.recv(timeout=WAIT) == {"first": True}
        (pooled,) = svc.con_ids()
        towards_client = svc.open_channel(pooled, protocol=Json, timeout=WAIT)
        assert towards_client.con_id.local == pooled.local and towards_client.con_id.peer == pooled.peer
        assert int(towards_client.con_id.name.split("#")[1]) % 2 == 0  # the server's stream ids are even
        towards_client.send({"from": "server"})
        assert towards_client.recv(timeout=WAIT) == {"from": "server"}  # echoed by the client's Echo
        assert len(taken) == 1
        towards_client.close()
        ch.close()
    physical = links.ConId(links.Role.ACCEPTOR, svc.name, pooled.local, pooled.peer)
    logs.expect("clt.disconnected", con_id=str(physical))
    with pytest.raises(links.BrokenError) as e:
        svc.open_channel(pooled, protocol=Json, timeout=WAIT)
    assert e.value.reason == "unknown_connection"


def test_a_client_without_a_protocol_for_them_refuses_peer_channels(echo_svc, poll, timer):
    svc, _ = echo_svc
    with dial(svc, poll, timer) as mux:
        ch = mux.open(protocol=Json, timeout=WAIT)
        ch.send({"x": 1})
        ch.recv(timeout=WAIT)
        (pooled,) = svc.con_ids()
        refused = svc.open_channel(pooled, protocol=Json, timeout=WAIT)  # no handshake to wait for: opened
        with pytest.raises(links.BrokenError) as e:
            refused.recv(timeout=WAIT)
        assert e.value.reason == "mux.stream_reset"
        ch.close()


def test_channels_the_peer_opens_take_the_limits_given_to_the_connection(echo_svc, poll, timer):
    # As on a service: a client serving its server's channels bounds what each may owe.
    svc, _ = echo_svc
    taken, arrived = [], threading.Event()

    def accept(clt):
        taken.append(clt)
        arrived.set()

    with dial(svc, poll, timer, protocol=Json, accept=accept, max_outbound=0) as mux:
        ch = mux.open(protocol=Json, timeout=WAIT)
        ch.send({"x": 1})
        assert ch.recv(timeout=WAIT) == {"x": 1}
        (pooled,) = svc.con_ids()
        towards_client = svc.open_channel(pooled, protocol=Json, timeout=WAIT)  # read below only
        assert arrived.wait(WAIT)
        (peer_channel,) = taken
        chunk = {"pad": "x" * 60_000}
        for _ in range(5):  # 300 KB: the 256 KiB window is full, the rest is owed
            assert peer_channel.send(chunk, timeout=0) is links.SendStatus.COMPLETED
        # max_outbound=0: nothing more is taken while bytes are owed (the default would take it).
        assert peer_channel.send(chunk, timeout=0) is links.SendStatus.WOULD_BLOCK
        for _ in range(5):
            assert towards_client.recv(timeout=WAIT) == chunk  # reading opens the window again
        assert peer_channel.send({"last": True}, timeout=WAIT) is links.SendStatus.COMPLETED
        assert towards_client.recv(timeout=WAIT) == {"last": True}
        for c in (peer_channel, towards_client, ch):
            c.close()
