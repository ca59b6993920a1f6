"""TLS as a layer of the stack (``links._tls``), over real loopback handshakes.

Certificates come from ``trustme`` (a throwaway CA per test module); nothing in the
repository holds a private key.
"""

from __future__ import annotations

import json
import socket
import ssl
import threading

import pytest
from helpers import Json, watch_logs

from links.testing._proxy import FaultProxy

import links

trustme = pytest.importorskip("trustme")

WAIT = 5.0


@pytest.fixture(scope="module")
def ca():
    return trustme.CA()


@pytest.fixture(scope="module")
def server_ctx(ca):
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("localhost", "127.0.0.1").configure_cert(ctx)
    return ctx


@pytest.fixture(scope="module")
def client_ctx(ca):
    ctx = ssl.create_default_context()
    ca.configure_trust(ctx)
    return ctx


@pytest.fixture
def service(server_ctx, poll, timer):
    store = links.StoreCallback()
    with links.Svc.bind(
        "127.0.0.1:0", protocol=Json, callback=store, poll_handler=poll, timer=timer, tls=server_ctx
    ) as svc:  # fmt: skip
        sender = svc.into_sender_with_spawned_recver()
        yield svc, sender, store


def connect(svc, client_ctx, poll, timer, **kwargs) -> links.Clt:
    return links.Clt.connect(
        f"127.0.0.1:{svc.local_addr[1]}", protocol=Json, poll_handler=poll, timer=timer, timeout=WAIT,
        tls=client_ctx, **kwargs,
    )  # fmt: skip


@pytest.mark.timeout(20)
def test_messages_round_trip_over_a_real_tls_handshake(service, client_ctx, poll, timer):
    svc, sender, store = service
    with connect(svc, client_ctx, poll, timer) as clt:
        assert clt.send({"n": 1}) is links.SendStatus.COMPLETED
        assert store.wait_recv_count(1, WAIT)
        assert sender.send({"reply": 2}, timeout=WAIT) is links.SendStatus.COMPLETED
        assert clt.recv(timeout=WAIT) == {"reply": 2}
        assert clt._con.attachment.transport.handshaken  # the bytes really went as TLS records


@pytest.mark.timeout(20)
def test_a_links_client_talks_to_the_standard_librarys_tls_server(server_ctx, client_ctx, poll, timer):
    """Another TLS endpoint (a blocking ``ssl.SSLSocket``) reads what links wrote."""
    with socket.create_server(("127.0.0.1", 0)) as listener:
        seen: list[bytes] = []

        def serve() -> None:
            sock, _ = listener.accept()
            with server_ctx.wrap_socket(sock, server_side=True) as tls:
                tls.settimeout(WAIT)
                seen.append(tls.recv(1024))
                tls.sendall(b"\x00\x00\x00\x0b" + b'{"ok": "y"}')

        thread = threading.Thread(target=serve)
        thread.start()
        with links.Clt.connect(
            f"localhost:{listener.getsockname()[1]}", protocol=Json, poll_handler=poll, timer=timer, timeout=WAIT,
            tls=client_ctx,
        ) as clt:  # fmt: skip
            clt.send({"secret": "plaintext"})
            assert clt.recv(timeout=WAIT) == {"ok": "y"}
        thread.join(WAIT)
    assert seen == [b'\x00\x00\x00\x16{"secret":"plaintext"}']


@pytest.mark.timeout(30)
def test_one_mebibyte_frames_both_ways(server_ctx, client_ctx, poll, timer):
    big = links.LengthPrefixFramer(header_size=4, max_frame_size=4 << 20)

    class Big(links.Protocol):
        framer = big
        messenger = links.RawMessenger()

    payload = bytes(range(256)) * 4096  # 1 MiB
    with links.Svc.bind("127.0.0.1:0", protocol=Big, poll_handler=poll, timer=timer, tls=server_ctx) as svc:
        accepted: list[links.Clt | None] = []  # the server's handshake runs in accept(), meanwhile
        accepting = threading.Thread(target=lambda: accepted.append(svc.accept(timeout=WAIT)))
        accepting.start()
        with links.Clt.connect(
            f"127.0.0.1:{svc.local_addr[1]}", protocol=Big, poll_handler=poll, timer=timer, timeout=WAIT, tls=client_ctx
        ) as clt:  # fmt: skip
            accepting.join(WAIT)
            (server,) = accepted
            assert server is not None
            with server:
                for _ in range(3):
                    assert clt.send(payload, timeout=WAIT) is links.SendStatus.COMPLETED
                for _ in range(3):
                    assert server.recv(timeout=WAIT) == payload
                server.send(payload, timeout=WAIT)
                assert clt.recv(timeout=WAIT) == payload


@pytest.mark.timeout(20)
def test_a_server_certificate_from_another_ca_is_refused(service, poll, timer):
    svc, _, _ = service
    stranger = ssl.create_default_context()
    trustme.CA().configure_trust(stranger)
    with pytest.raises(links.TLSError) as raised:
        connect(svc, stranger, poll, timer)
    assert raised.value.reason == "tls.handshake_failed" and "certificate" in str(raised.value)


@pytest.mark.timeout(20)
def test_the_wrong_server_name_is_refused(service, client_ctx, poll, timer):
    svc, _, _ = service
    with pytest.raises(links.TLSError, match="(?i)hostname|match"):
        connect(svc, client_ctx, poll, timer, tls_server_name="example.org")


@pytest.mark.timeout(20)
def test_a_plaintext_client_costs_only_its_own_connection(service, client_ctx, poll, timer):
    svc, sender, _ = service
    with watch_logs() as logs, socket.create_connection(svc.local_addr, timeout=WAIT) as plain:
        plain.sendall(b"\x00\x00\x00\x0b{\"n\": 1}xx" * 10)
        logs.expect("tls.handshake_failed")
        assert plain.recv(4096) is not None  # an alert, then EOF: it is closed
        assert svc.gate.in_use == 0
        with connect(svc, client_ctx, poll, timer) as clt:  # everyone else carries on
            assert sender.send({"still": "here"}, timeout=WAIT) is links.SendStatus.COMPLETED
            assert clt.recv(timeout=WAIT) == {"still": "here"}


@pytest.mark.timeout(20)
def test_a_handshake_that_stalls_is_cut_at_the_deadline(server_ctx, poll, timer):
    with watch_logs() as logs, links.Svc.bind(
        "127.0.0.1:0", protocol=Json, poll_handler=poll, timer=timer, tls=server_ctx, handshake_timeout=0.3
    ) as svc:  # fmt: skip
        svc.into_sender_with_spawned_recver()
        with socket.create_connection(svc.local_addr, timeout=WAIT) as silent:
            silent.sendall(b"\x16\x03\x01")  # the start of a ClientHello, and nothing more
            event = logs.expect("tls.handshake_timeout")
            assert event["handshake_timeout"] == 0.3
            silent.settimeout(WAIT)
            assert silent.recv(1) == b""
            assert svc.gate.in_use == 0


@pytest.mark.timeout(20)
def test_mutual_tls_refuses_a_client_without_a_certificate_and_names_one_with(ca, client_ctx, poll, timer):
    required = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("localhost", "127.0.0.1").configure_cert(required)
    required.verify_mode = ssl.CERT_REQUIRED
    ca.configure_trust(required)
    seen: list[object] = []

    class WhoIsIt(Json):
        def on_connect(self, con):
            seen.append(con.peer_certificate)

    with watch_logs() as logs, links.Svc.bind(
        "127.0.0.1:0", protocol=WhoIsIt, poll_handler=poll, timer=timer, tls=required
    ) as svc:  # fmt: skip
        svc.into_sender_with_spawned_recver()
        anonymous = None
        try:
            anonymous = links.Clt.connect(
                f"127.0.0.1:{svc.local_addr[1]}", protocol=Json, poll_handler=poll, timer=timer, timeout=WAIT, tls=client_ctx
            )  # fmt: skip
            # TLS 1.3: the client finishes first; the server's refusal arrives after.
            with pytest.raises(links.BrokenError):
                anonymous.recv(timeout=WAIT)
        except links.TLSError:
            pass
        finally:
            if anonymous is not None:
                anonymous.close()
        logs.expect("tls.handshake_failed")
        identified = ssl.create_default_context()
        ca.configure_trust(identified)
        ca.issue_cert("trader-7@example.com").configure_cert(identified)
        with links.Clt.connect(
            f"127.0.0.1:{svc.local_addr[1]}", protocol=Json, poll_handler=poll, timer=timer, timeout=WAIT, tls=identified
        ) as clt:  # fmt: skip
            clt.send({"n": 1})
            accepted = logs.expect("svc.accepted")
            assert accepted["peer_names"] == "email:trader-7@example.com"  # the logs name who came in
            assert clt.peer_certificate is not None  # and the client sees the server's
        (cert,) = seen  # the protocol's hook saw the client's verified certificate
        assert ("email", "trader-7@example.com") in cert["subjectAltName"]
        # A client certificate from another CA is refused like none at all.
        stranger = ssl.create_default_context()
        ca.configure_trust(stranger)
        trustme.CA().issue_cert("mallory@example.com").configure_cert(stranger)
        try:
            with links.Clt.connect(
                f"127.0.0.1:{svc.local_addr[1]}", protocol=Json, poll_handler=poll, timer=timer, timeout=WAIT,
                tls=stranger,
            ) as impostor:  # fmt: skip
                with pytest.raises(links.BrokenError):
                    impostor.recv(timeout=WAIT)
        except links.TLSError:
            pass
        logs.expect("tls.handshake_failed", count=2)
    assert len(seen) == 1


@pytest.mark.timeout(30)
def test_reconnect_redials_with_a_new_tls_handshake(service, client_ctx, poll, timer):
    svc, sender, store = service
    with watch_logs() as logs, FaultProxy(svc.local_addr) as proxy, links.Clt.connect(
        f"127.0.0.1:{proxy.addr[1]}", protocol=Json, poll_handler=poll, timer=timer, timeout=WAIT, tls=client_ctx,
        tls_server_name="localhost", reconnect=links.Backoff(initial=0.01, maximum=0.05),
    ) as clt:  # fmt: skip
        clt_sender = clt.into_sender_with_spawned_recver()  # the poll thread sees each cut
        clt_sender.send({"n": 1})
        assert store.wait_recv_count(1, WAIT)
        for cut in range(1, 4):
            assert proxy.reset() >= 1
            logs.expect("clt.reconnected", count=cut)
            assert clt_sender.send({"n": cut + 1}, timeout=WAIT) is links.SendStatus.COMPLETED
            assert store.wait_recv_count(cut + 1, WAIT)
        assert [m["n"] for m in store.recv_msgs()] == [1, 2, 3, 4]
        assert proxy.stats().accepted == 4  # each through its own TLS handshake
        # ...which resumed the previous connection's TLS session (the server's ticket).
        assert clt._con.attachment.transport.resumed


@pytest.mark.timeout(60)
def test_sessions_deliver_exactly_once_across_cuts_over_tls(server_ctx, client_ctx, poll, timer):
    from links.session import Resumable

    settings = {"heartbeat_interval": 0.05, "dead_after": 40}
    received = links.StoreCallback()
    with links.Svc.bind(
        "127.0.0.1:0", protocol=Json, callback=received, poll_handler=poll, timer=timer, tls=server_ctx,
        session=Resumable(**settings),
    ) as svc, FaultProxy(svc.local_addr) as proxy:  # fmt: skip
        svc.into_sender_with_spawned_recver()
        with watch_logs() as logs, links.Clt.connect(
            f"127.0.0.1:{proxy.addr[1]}", protocol=Json, poll_handler=poll, timer=timer, timeout=WAIT,
            tls=client_ctx, tls_server_name="localhost", session=Resumable(**settings),
            reconnect=links.Backoff(initial=0.005, maximum=0.02),
        ) as clt:  # fmt: skip
            total = 300
            for n in range(total):
                clt.send({"n": n}, timeout=WAIT)
                if n % 60 == 59:
                    proxy.reset()  # cut in mid-stream: some of what was sent is in flight
            assert received.wait_recv_count(total, 20)
            assert [m["n"] for m in received.recv_msgs()] == list(range(total))  # none lost, none twice
            assert logs.matching("session.resumed")


def stdlib_server(server_ctx, then):
    """A blocking ``ssl.SSLSocket`` server on its own thread: ``then(tls)`` after the handshake."""
    listener = socket.create_server(("127.0.0.1", 0))
    result: list[object] = []

    def serve() -> None:
        with listener:
            sock, _ = listener.accept()
            tls = server_ctx.wrap_socket(sock, server_side=True, suppress_ragged_eofs=False)
            tls.settimeout(WAIT)
            try:
                result.append(then(tls))
            except Exception as e:  # noqa: BLE001 - the test asserts on it
                result.append(e)

    thread = threading.Thread(target=serve)
    thread.start()
    return listener.getsockname()[1], thread, result


@pytest.mark.timeout(20)
def test_a_clean_close_sends_close_notify(server_ctx, client_ctx, poll, timer):
    port, thread, result = stdlib_server(server_ctx, lambda tls: tls.recv(1024))
    clt = links.Clt.connect(f"localhost:{port}", protocol=Json, poll_handler=poll, timer=timer, timeout=WAIT, tls=client_ctx)
    clt.close()
    thread.join(WAIT)
    assert result == [b""]  # a clean TLS end; a bare FIN would raise SSLEOFError there


@pytest.mark.timeout(20)
def test_a_peer_that_stops_without_close_notify_is_reported_as_a_truncation(server_ctx, client_ctx, poll, timer):
    def abrupt(tls):
        tls.sendall(b'\x00\x00\x00\x08{"n": 1}')
        socket.socket(fileno=tls.detach()).close()  # the TCP connection ends; TLS never said so

    port, thread, _ = stdlib_server(server_ctx, abrupt)
    with links.Clt.connect(
        f"localhost:{port}", protocol=Json, poll_handler=poll, timer=timer, timeout=WAIT, tls=client_ctx
    ) as clt:  # fmt: skip
        assert clt.recv(timeout=WAIT) == {"n": 1}  # what came before the end is delivered
        with pytest.raises(links.BrokenError) as raised:
            clt.recv(timeout=WAIT)
        assert raised.value.reason == "tls.truncated"
    thread.join(WAIT)


@pytest.mark.timeout(20)
def test_garbage_after_the_handshake_is_a_typed_error(server_ctx, client_ctx, poll, timer):
    def garbage(tls):
        raw = socket.socket(fileno=tls.detach())
        raw.sendall(b"\x17\x03\x03\x00\x20" + b"\xee" * 32)  # an application-data record that does not decrypt
        raw.recv(1024)  # wait for the client to give up
        raw.close()

    port, thread, _ = stdlib_server(server_ctx, garbage)
    with watch_logs() as logs, links.Clt.connect(
        f"localhost:{port}", protocol=Json, poll_handler=poll, timer=timer, timeout=WAIT, tls=client_ctx
    ) as clt:  # fmt: skip
        with pytest.raises(links.TLSError) as raised:
            clt.recv(timeout=WAIT)
        assert raised.value.reason == "tls.bad_record"
        logs.expect("clt.disconnected", reason="tls.bad_record")
    thread.join(WAIT)


@pytest.mark.timeout(20)
def test_a_handshake_trickled_byte_by_byte_is_still_cut_at_the_deadline(server_ctx, client_ctx, poll, timer):
    hello = bytearray()
    outgoing = ssl.MemoryBIO()
    client = client_ctx.wrap_bio(ssl.MemoryBIO(), outgoing, server_hostname="localhost")
    with pytest.raises(ssl.SSLWantReadError):
        client.do_handshake()
    hello += outgoing.read()  # a real ClientHello, to be sent one byte at a time
    with watch_logs() as logs, links.Svc.bind(
        "127.0.0.1:0", protocol=Json, poll_handler=poll, timer=timer, tls=server_ctx, handshake_timeout=0.5
    ) as svc:  # fmt: skip
        svc.into_sender_with_spawned_recver()
        with socket.create_connection(svc.local_addr, timeout=WAIT) as slow:
            cut = threading.Event()

            def trickle() -> None:
                for byte in hello[:-1]:
                    if cut.wait(0.05):
                        return
                    try:
                        slow.send(bytes([byte]))
                    except OSError:
                        return

            sender = threading.Thread(target=trickle)
            sender.start()
            event = logs.expect("tls.handshake_timeout")
            cut.set()
            sender.join(WAIT)
            assert event["handshake_timeout"] == 0.5
            assert svc.gate.in_use == 0


@pytest.mark.timeout(20)
def test_an_expired_server_certificate_is_refused(ca, client_ctx, poll, timer):
    import datetime

    expired = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert(
        "localhost", "127.0.0.1", not_after=datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(days=1),
    ).configure_cert(expired)  # fmt: skip
    with links.Svc.bind("127.0.0.1:0", protocol=Json, poll_handler=poll, timer=timer, tls=expired) as svc:
        svc.into_sender_with_spawned_recver()
        with pytest.raises(links.TLSError, match="expired"):
            links.Clt.connect(
                f"127.0.0.1:{svc.local_addr[1]}", protocol=Json, poll_handler=poll, timer=timer, timeout=WAIT, tls=client_ctx
            )  # fmt: skip


@pytest.mark.timeout(20)
def test_from_socket_runs_the_tls_handshake_for_either_role(server_ctx, client_ctx, poll, timer):
    a, b = socket.socketpair()
    made: list[links.Clt] = []
    server_side = threading.Thread(target=lambda: made.append(links.Clt.from_socket(
        b, links.Role.ACCEPTOR, protocol=Json, poll_handler=poll, timer=timer, tls=server_ctx, handshake_timeout=WAIT,
    )))  # fmt: skip
    server_side.start()
    with links.Clt.from_socket(
        a, links.Role.INITIATOR, protocol=Json, poll_handler=poll, timer=timer, tls=client_ctx,
        tls_server_name="localhost", handshake_timeout=WAIT,
    ) as clt:  # fmt: skip
        server_side.join(WAIT)
        (server,) = made
        with server:
            clt.send({"over": "tls"})
            assert server.recv(timeout=WAIT) == {"over": "tls"}
            assert server._con.attachment.transport.handshaken


@pytest.mark.timeout(30)
def test_a_peer_that_stops_reading_never_makes_a_send_wait_and_loses_nothing(server_ctx, client_ctx, poll, timer):
    """Over TLS, send(timeout=0) into a full socket is taken (owed) or refused at once; once
    the peer reads again, the poll thread finishes what is owed and every frame arrives whole
    and in order: the ciphertext a short write leaves is held and written first."""
    with socket.create_server(("127.0.0.1", 0)) as listener:
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        go = threading.Event()
        got: list[int] = []

        def serve() -> None:
            sock, _ = listener.accept()
            with server_ctx.wrap_socket(sock, server_side=True) as tls:
                tls.settimeout(WAIT)
                go.wait(WAIT)  # not reading meanwhile
                stream = tls.makefile("rb")
                while True:
                    header = stream.read(4)
                    if len(header) < 4:
                        return
                    got.append(json.loads(stream.read(int.from_bytes(header, "big")))["n"])

        thread = threading.Thread(target=serve)
        thread.start()
        with links.Clt.connect(
            f"localhost:{listener.getsockname()[1]}", protocol=Json, poll_handler=poll, timer=timer, timeout=WAIT,
            tls=client_ctx, max_outbound=64 * 1024,
        ) as clt:  # fmt: skip
            # The peer reads nothing until this loop ends: a send that waited for it would
            # never return (the test's timeout fails it), so ending at all proves none waited.
            taken = 0
            while clt.send({"n": taken, "pad": "x" * 1000}, timeout=0) is not links.SendStatus.WOULD_BLOCK:
                taken += 1
            assert taken > 64  # the socket and max_outbound took a good deal first
            go.set()
            clt.send({"n": taken, "pad": ""}, timeout=WAIT)  # waits for room now, and gets it
            clt.close()
        thread.join(WAIT)
    assert got == list(range(taken + 1))


@pytest.mark.timeout(20)
def test_refs_batches_and_idle_detection_work_over_tls(service, client_ctx, poll, timer):
    svc, sender, store = service
    with watch_logs() as logs, connect(svc, client_ctx, poll, timer, idle_timeout=0.5) as clt:
        ref = links.Ref(clt.into_sender_with_spawned_recver())
        shared = ref.clone()
        assert ref.send_many([{"n": 1}, {"n": 2}], timeout=WAIT) is links.SendStatus.COMPLETED
        threads = [threading.Thread(target=lambda r=r, n=n: r.send({"n": n}, timeout=WAIT)) for r, n in ((ref, 3), (shared, 4))]
        for t in threads:
            t.start()
        for t in threads:
            t.join(WAIT)
        assert store.wait_recv_count(4, WAIT)
        assert sorted(m["n"] for m in store.recv_msgs()) == [1, 2, 3, 4]
        # The server says nothing more: the client's idle check sees the silence through TLS.
        event = logs.expect("clt.idle_timeout")
        assert event["idle_timeout"] == 0.5


class _Tiny(links.Protocol):
    """One byte per frame: as many TLS records as possible in a few kilobytes."""

    framer = links.LengthPrefixFramer(header_size=4)
    messenger = links.RawMessenger()


@pytest.mark.timeout(30)
def test_a_backlog_of_thousands_of_tiny_records_is_all_delivered(server_ctx, client_ctx, poll, timer):
    """The poll thread reads on while TLS holds bytes the socket will not signal again. A fast
    sender's backlog of small records (one read of the socket holds thousands) is delivered
    whole, however many records one readiness event takes (each was once a nested call)."""
    n = 3000
    written = threading.Event()
    got = threading.Event()
    count = [0]

    class Backlogged(links.Callback):
        def on_recv(self, con_id, msg):
            if count[0] == 0:
                written.wait(WAIT)  # the first message holds the poll thread until every record is in the socket
            count[0] += 1
            if count[0] == n:
                got.set()

    with links.Svc.bind("127.0.0.1:0", protocol=_Tiny, callback=Backlogged(), poll_handler=poll, timer=timer,
                        tls=server_ctx) as svc:  # fmt: skip
        svc.into_sender_with_spawned_recver()
        with socket.create_connection(svc.local_addr, timeout=WAIT) as raw:
            with client_ctx.wrap_socket(raw, server_hostname="localhost") as tls:
                for _ in range(n):
                    tls.sendall(b"\x00\x00\x00\x01x")  # one frame, one record
                written.set()
                assert got.wait(WAIT), f"{count[0]} of {n} delivered"


@pytest.mark.timeout(30)
def test_a_peer_parked_in_its_handshake_costs_little_memory(server_ctx, client_ctx, poll, timer):
    """100 raw peers each send all but the last byte of a real ClientHello and wait. Each
    costs the server its TLS object's state, under 80 KiB (it was 113 KiB when every
    connection kept a 64 KiB read buffer of its own), until the handshake deadline."""
    from test_chaos import rss

    outgoing = ssl.MemoryBIO()
    client = client_ctx.wrap_bio(ssl.MemoryBIO(), outgoing, server_hostname="localhost")
    with pytest.raises(ssl.SSLWantReadError):
        client.do_handshake()
    hello = outgoing.read()
    peers = 100
    with links.Svc.bind(
        "127.0.0.1:0", protocol=Json, poll_handler=poll, timer=timer, tls=server_ctx, max_connections=2 * peers
    ) as svc, watch_logs() as logs:  # fmt: skip
        svc.into_sender_with_spawned_recver()
        with socket.create_connection(svc.local_addr) as warm:  # the first handshake's one-off costs
            warm.sendall(hello[:-1])
            logs.expect("poll.handshake.added")
            poll.sync()
            before = rss()
            parked = [socket.create_connection(svc.local_addr) for _ in range(peers)]
            try:
                for sock in parked:
                    sock.sendall(hello[:-1])
                logs.expect("poll.handshake.added", count=peers + 1)
                poll.sync()
                grown = rss() - before
                assert svc.gate.in_use == peers + 1
            finally:
                for sock in parked:
                    sock.close()
    assert grown < peers * 80 * 1024, f"{grown / peers / 1024:.0f} KiB per parked peer"
