"""Channels over one TCP connection (``links.mux``), on real loopback sockets."""

from __future__ import annotations

import json
import socket
import struct
import threading

import pytest
from helpers import Json, waiting_call

import links
from links.mux import Carrier, Mux
from links.mux import _wire as wire

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


class Touchy(Echo):
    """``Echo``, but a message ``{"boom": ...}`` makes its hook raise (a bug in the handler)."""

    def send_reply(self, msg, con):
        if "boom" in msg:
            raise RuntimeError("a bug in the handler")
        con.send(msg)


def test_a_hook_that_raises_on_a_channel_read_by_the_poll_thread_ends_that_channel_alone(poll, timer, logs):
    # The service reads a channel fed by its TCP connection's read right away, inside that
    # read: a failure there is the channel's, as in a pass of its own.
    with links.Svc.bind("127.0.0.1:0", protocol=Touchy, poll_handler=poll, timer=timer, mux=True) as svc:
        svc.into_sender_with_spawned_recver()
        with dial(svc, poll, timer) as mux:
            a, b = mux.open(protocol=Json, timeout=WAIT), mux.open(protocol=Json, timeout=WAIT)
            for ch in (a, b):
                ch.send({"hi": 1})
                assert ch.recv(timeout=WAIT) == {"hi": 1}
            a.send({"boom": 1})
            b.send({"after": 1})  # may come in the same read as a's
            logs.expect("poll.handler_failed", kind="recver", error="RuntimeError('a bug in the handler')")
            with pytest.raises(links.BrokenError):
                a.recv(timeout=WAIT)
            assert b.recv(timeout=WAIT) == {"after": 1}
            b.send({"later": 2})
            assert b.recv(timeout=WAIT) == {"later": 2}
            assert svc.gate.in_use == 1  # the TCP connection under them carries on
            a.close()
            b.close()


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
        poll.sync()  # the pool lets it go just after that line, on the poll thread
        assert a_on_server not in svc.con_ids() and len(svc) == 1
        b.send({"x": 3})
        assert b.recv(timeout=WAIT) == {"x": 3}
        b.close()


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
            a.close()
            b.close()


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


def test_channels_over_a_resumable_session_are_refused_on_both_sides_before_any_socket(poll, timer):
    import links.session

    with pytest.raises(TypeError, match="session"):
        links.Svc.bind("127.0.0.1:0", protocol=Json, mux=True, session=links.session.Resumable(), poll_handler=poll, timer=timer)
    with pytest.raises(TypeError, match="session"):
        links.mux.connect("127.0.0.1:1", session=links.session.Resumable(), poll_handler=poll, timer=timer)


def test_a_service_on_user_threads_accepts_channels(poll, timer):
    with links.Svc.bind("127.0.0.1:0", protocol=Json, poll_handler=poll, timer=timer, mux=True) as svc:
        assert svc.accept(timeout=0) is None
        with dial(svc, poll, timer) as mux:
            a, b = mux.open(protocol=Json, timeout=WAIT), mux.open(protocol=Json, timeout=WAIT)
            first, second = svc.accept(timeout=WAIT), svc.accept(timeout=WAIT)
            assert {first.con_id.name, second.con_id.name} == {f"svc#{a.con_id.name.split('#')[1]}", f"svc#{b.con_id.name.split('#')[1]}"}
            a.send({"to": "server"})
            by_a = first if first.con_id.name.endswith(a.con_id.name.split("#")[1]) else second
            assert by_a.recv(timeout=WAIT) == {"to": "server"}
            by_a.send({"to": "client"})
            assert a.recv(timeout=WAIT) == {"to": "client"}
            c = mux.open(protocol=Json, timeout=WAIT)
            assert svc.accept_into_pool(timeout=WAIT) is not None
            c.send({"pooled": True})
            assert svc.recv(timeout=WAIT) == {"pooled": True}
            for ch in (a, b, c, first, second):
                ch.close()
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

@pytest.mark.parametrize("then", ["nothing", "shutdown"])
def test_what_a_channel_was_told_completed_arrives_when_the_last_holder_lets_go_at_once(timer, then):
    """The service reads nothing until the client has closed its channel and its last handle
    (and, with "shutdown", stopped its poll thread at once, as ``links.shutdown()`` at exit
    does): the channel still owes what the service's window did not let through, and the
    pooled connection must stay open until that is delivered and read (as a TCP connection
    closed after sending delivers it)."""
    reading = threading.Event()

    class Held(links.CounterCallback):
        def on_recv(self, con_id, msg):
            reading.wait(WAIT)
            super().on_recv(con_id, msg)

    counted = Held()
    with links.PollHandler("test-svc-poll") as svc_poll, links.PollHandler("test-client-poll") as client_poll, links.Svc.bind(
        "127.0.0.1:0", protocol=Json, callback=counted, poll_handler=svc_poll, timer=timer, mux=True
    ) as svc:  # fmt: skip
        svc.mux.settings.window = wire.INITIAL_WINDOW  # what the client may have in flight: the rest is owed
        svc.into_sender_with_spawned_recver()
        mux = dial(svc, client_poll, timer)
        ch = mux.open(protocol=Json, timeout=WAIT)
        batch = [{"pad": "x" * 100}] * 100
        for _ in range(35):  # about 400 KB: past the 256 KiB window, and within what a channel may owe
            assert ch.send_many(batch, timeout=WAIT) is links.SendStatus.COMPLETED
        mux.close()  # the channel still holds the connection
        ch.close()  # the last holder
        reading.set()
        if then == "shutdown":
            client_poll.shutdown(timeout=2 * WAIT)
        assert counted.wait_recv(3500, timeout=WAIT), counted.recv_count


def test_a_service_closed_right_after_sending_on_a_channel_delivers_what_it_completed(poll, timer):
    """The service sends past the client's window, closes the channel and itself at once: what
    the channel was told was COMPLETED still reaches the client, which reads it afterwards (as a
    closed TCP connection's)."""
    with links.Svc.bind("127.0.0.1:0", protocol=Json, poll_handler=poll, timer=timer, mux=True) as svc:
        with dial(svc, poll, timer, window=wire.INITIAL_WINDOW) as mux:
            ch = mux.open(protocol=Json, timeout=WAIT)
            ch.send({"hello": True})
            served = svc.accept(timeout=WAIT)
            assert served.recv(timeout=WAIT) == {"hello": True}
            batch = [{"pad": "x" * 100}] * 100
            for _ in range(35):  # about 400 KB: past the 256 KiB window, and within what a channel may owe
                assert served.send_many(batch, timeout=WAIT) is links.SendStatus.COMPLETED
            served.close()
            svc.close()
            got = 0
            with pytest.raises(links.BrokenError):
                while ch.recv(timeout=WAIT) is not None:
                    got += 1
            assert got == 3500
            ch.close()


def test_a_channel_whose_data_and_end_come_in_one_read_ends_once_its_data_is_read(poll, timer, logs):
    """A raw yamux peer opens a stream, sends one message and ends the stream, all in one
    write: the service delivers the message, then ends the channel (as a socket's EOF ends a
    connection) and finishes its own side of the stream (FIN)."""
    store = links.StoreCallback()
    with links.Svc.bind("127.0.0.1:0", protocol=Json, callback=store, poll_handler=poll, timer=timer, mux=True) as svc:
        svc.into_sender_with_spawned_recver()
        with socket.create_connection(("127.0.0.1", svc.local_addr[1]), timeout=WAIT) as raw:
            body = json.dumps({"n": 1}).encode()
            message = struct.pack(">I", len(body)) + body
            raw.sendall(wire.frame(wire.WINDOW_UPDATE, wire.SYN, 1, 0) + wire.frame(wire.DATA, wire.FIN, 1, len(message)) + message)
            assert store.find_recv(lambda m: m == {"n": 1}, timeout=WAIT) == {"n": 1}
            logs.expect("clt.disconnected", reason="peer_closed")  # the channel, not the TCP connection
            assert any(flags & wire.FIN and sid == 1 for _, flags, sid in read_frames(raw, until_fin_on=1))


def read_frames(raw: socket.socket, until_fin_on: int) -> list[tuple[int, int, int]]:
    """(type, flags, stream id) of every frame the peer sends, until it sends FIN on
    ``until_fin_on`` (or the socket's timeout passes)."""
    got, buf = [], b""
    while not any(flags & wire.FIN and sid == until_fin_on for _, flags, sid in got):
        try:
            chunk = raw.recv(65536)
        except TimeoutError:
            break
        if not chunk:
            break
        buf += chunk
        while len(buf) >= wire.HEADER_SIZE:
            _, kind, flags, sid, length = wire.HEADER.unpack_from(buf)
            size = wire.HEADER_SIZE + (length if kind == wire.DATA else 0)
            if len(buf) < size:
                break
            got.append((kind, flags, sid))
            buf = buf[size:]
    return got


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
        # Taken until the window the service granted is full and a message is owed past it;
        # then, max_outbound=0: nothing more is taken while bytes are owed (the default would take it).
        sent = 0
        while peer_channel.send(chunk, timeout=0) is links.SendStatus.COMPLETED:
            sent += 1
            assert sent < 100, "a window's worth and more taken: max_outbound=0 was not applied"
        assert sent > 4  # a window of 256 KiB at least
        for _ in range(sent):
            assert towards_client.recv(timeout=WAIT) == chunk  # reading opens the window again
        assert peer_channel.send({"last": True}, timeout=WAIT) is links.SendStatus.COMPLETED
        assert towards_client.recv(timeout=WAIT) == {"last": True}
        for c in (peer_channel, towards_client, ch):
            c.close()
