"""Hostile TLS peers against the read path (``TlsTransport.holds_input``: what a read can
produce without the socket): nothing they send, or leave unsent, makes the poll thread or a
caller that borrowed the reading (``links._lease``) read on without new bytes, and nothing a
read left inside the TLS layer waits for bytes that may never come.

* A record in pieces (half of it, or one byte per write) is read when its bytes come, not
  looked for in between; the message is delivered once the record is whole.
* An end read with the last record (close_notify, a record that does not decrypt) ends the
  connection after that record is delivered, though the peer sends nothing more.

The peers are raw sockets, TLS over memory BIOs, so the test decides which bytes of a record go
out, and when. A spin shows as reads counted in the thousands where a handful is due.
"""

from __future__ import annotations

import socket
import ssl
import threading
from collections.abc import Callable

import msgpack
import pytest

import links
import links.rpc
from helpers import Json
from helpers_tls import tls_contexts
from links._tls import TlsTransport

WAIT = 5.0
SYNCS = 20  # poll.sync() round trips while a spin would show: each costs two or three passes


class RawTls:
    """One end of a TLS connection over a raw socket: records are made here and written (or
    not) by the test, whole or in pieces."""

    def __init__(self, sock: socket.socket, context: ssl.SSLContext, server_side: bool) -> None:
        self.sock = sock
        sock.settimeout(WAIT)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.incoming, self.outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
        hostname = None if server_side else "localhost"
        self.tls = context.wrap_bio(self.incoming, self.outgoing, server_side=server_side, server_hostname=hostname)

    def handshake(self) -> RawTls:
        while True:
            try:
                self.tls.do_handshake()
            except ssl.SSLWantReadError:
                self.flush()
                self._fill()
            else:
                self.flush()  # the last flight (a server's session tickets)
                return self

    def record(self, plaintext: bytes) -> bytes:
        """``plaintext`` as the bytes of its TLS record(s), not written."""
        self.tls.write(plaintext)
        return self.outgoing.read()

    def read(self) -> bytes:
        """The next plaintext the peer sent, waiting for it."""
        while True:
            try:
                return self.tls.read(1 << 16)
            except ssl.SSLWantReadError:
                self._fill()

    def flush(self) -> None:
        if self.outgoing.pending:
            self.sock.sendall(self.outgoing.read())

    def _fill(self) -> None:
        data = self.sock.recv(1 << 16)
        if not data:
            raise ConnectionError("the peer closed")
        self.incoming.write(data)

    def close(self) -> None:
        self.sock.close()


class Counter:
    """Counts calls of something other threads make; waitable."""

    def __init__(self) -> None:
        self.cond = threading.Condition()
        self.count = 0

    def wrap(self, fn: Callable) -> Callable:
        def counted(*args, **kwargs):
            with self.cond:
                self.count += 1
                self.cond.notify_all()
            return fn(*args, **kwargs)

        return counted

    def wait_beyond(self, count: int, timeout: float = WAIT) -> bool:
        with self.cond:
            return self.cond.wait_for(lambda: self.count > count, timeout)


@pytest.fixture
def tls_reads(monkeypatch) -> Counter:
    """Every read of a links TLS transport (the poll thread's and a borrower's alike)."""
    counter = Counter()
    monkeypatch.setattr(TlsTransport, "_receive", counter.wrap(TlsTransport._receive))
    return counter


def frame(msg: dict) -> bytes:
    body = bytes(Json.messenger.serialize(msg))
    return len(body).to_bytes(4, "big") + body


#: How long a test looks for a spin that should not be there: a spinning thread makes thousands
#: of reads in it, an idle one none (so the verdict never depends on the machine's speed).
WINDOW = 0.2


def idle_reads(counter: Counter, poll: links.PollHandler) -> int:
    """Reads counted while the poll thread makes ``SYNCS`` round trips, then for ``WINDOW``
    (or until a hundred more), while no byte comes."""
    before = counter.count
    for _ in range(SYNCS):
        assert poll.sync(WAIT), "the poll thread did not come back to its commands"
    counter.wait_beyond(before + 100, WINDOW)
    return counter.count - before


# -- TLS records in pieces, read by the poll thread --------------------------------------------


@pytest.fixture
def tls_service(poll, timer):
    server_ctx, client_ctx = tls_contexts()
    store = links.StoreCallback()
    with links.Svc.bind("127.0.0.1:0", protocol=Json, callback=store, poll_handler=poll, timer=timer, tls=server_ctx) as svc:
        svc.into_sender_with_spawned_recver()
        sock = socket.create_connection(("127.0.0.1", svc.local_addr[1]), timeout=WAIT)
        peer = RawTls(sock, client_ctx, server_side=False)
        with sock:
            peer.handshake()
            yield peer, store


def test_half_a_tls_record_is_read_once_then_waited_for(tls_service, tls_reads, poll):
    peer, store = tls_service
    first = peer.record(frame({"n": 1}))
    peer.sock.sendall(first)
    assert store.wait_recv_count(1, WAIT)  # the handshake is complete on the server by now
    assert poll.sync(WAIT)
    record = peer.record(frame({"n": 2, "pad": "x" * 200}))
    before = tls_reads.count
    peer.sock.sendall(record[: len(record) // 2])
    assert tls_reads.wait_beyond(before)  # the half was read
    assert poll.sync(WAIT)
    assert idle_reads(tls_reads, poll) <= 2  # not read again and again until the rest comes
    peer.sock.sendall(record[len(record) // 2 :])
    assert store.wait_recv_count(2, WAIT)
    assert [r.msg for r in store.records] == [{"n": 1}, {"n": 2, "pad": "x" * 200}]


def test_a_tls_record_trickled_one_byte_per_write_costs_a_read_or_two_a_byte(tls_service, tls_reads, poll):
    peer, store = tls_service
    records = peer.record(frame({"n": 1})) + peer.record(frame({"n": 2, "pad": "y" * 100}))
    before = tls_reads.count
    for i in range(len(records)):
        peer.sock.sendall(records[i : i + 1])
    assert store.wait_recv_count(2, WAIT)
    assert [r.msg for r in store.records] == [{"n": 1}, {"n": 2, "pad": "y" * 100}]
    assert tls_reads.count - before <= 2 * len(records) + 4
    assert idle_reads(tls_reads, poll) <= 1


def test_a_close_notify_read_with_the_last_record_ends_the_connection(tls_service, poll):
    # Both in one read: the record is delivered first, and the end it came with must not wait
    # for bytes that may never come (a peer that waits for our close_notify sends nothing more).
    peer, store = tls_service
    data = peer.record(frame({"n": 1}))
    with pytest.raises(ssl.SSLWantReadError):
        peer.tls.unwrap()  # close_notify, then it would wait for ours
    peer.sock.sendall(data + peer.outgoing.read())
    assert store.wait_recv_count(1, WAIT)
    while True:  # the server answers with its close_notify, then closes: no more than that
        data = peer.sock.recv(1 << 16)
        if not data:
            break
        peer.incoming.write(data)
    peer.tls.unwrap()  # the server's close_notify came
    assert [r.msg for r in store.records] == [{"n": 1}]


def test_a_bad_record_read_with_a_good_one_ends_the_connection(tls_service, poll, logs):
    peer, store = tls_service
    forged = b"\x17\x03\x03\x00\x20" + bytes(32)  # application data that does not decrypt
    peer.sock.sendall(peer.record(frame({"n": 1})) + forged)
    assert store.wait_recv_count(1, WAIT)  # what came before it is delivered
    lost = logs.expect("clt.disconnected")
    assert lost["reason"] == "tls.bad_record", lost


def test_a_close_notify_alone_is_a_clean_end_not_a_truncation(tls_service, poll, logs):
    peer, store = tls_service
    peer.sock.sendall(peer.record(frame({"n": 1})))
    assert store.wait_recv_count(1, WAIT)
    with pytest.raises(ssl.SSLWantReadError):
        peer.tls.unwrap()
    peer.flush()  # close_notify, and the socket stays open: the server's end must come from it
    lost = logs.expect("clt.disconnected")
    assert lost["reason"] == "peer_closed", lost


# -- TLS records in pieces, read by a borrowing caller ----------------------------------------


def test_a_borrowing_caller_waits_for_the_rest_of_its_tls_reply(tls_reads, poll, timer):
    server_ctx, client_ctx = tls_contexts()
    with socket.create_server(("127.0.0.1", 0)) as listener:
        accepted: dict[str, RawTls] = {}

        def accept() -> None:
            sock, _ = listener.accept()
            accepted["peer"] = RawTls(sock, server_ctx, server_side=True).handshake()

        acceptor = threading.Thread(target=accept)
        acceptor.start()
        rpc = links.rpc.connect(
            f"127.0.0.1:{listener.getsockname()[1]}", poll_handler=poll, timer=timer, timeout=WAIT, tls=client_ctx
        )  # fmt: skip
        acceptor.join(WAIT)
        peer = accepted["peer"]
        with rpc, peer.sock:
            result: list = []
            caller = threading.Thread(target=lambda: result.append(rpc.call("double", 21, timeout=WAIT)))
            caller.start()
            unpacker = msgpack.Unpacker()
            while not (requests := list(unpacker)):
                unpacker.feed(peer.read())
            ((_, msgid, method, params),) = requests
            record = peer.record(msgpack.packb([1, msgid, None, 2 * params[0]]))
            assert poll.sync(WAIT)
            before = tls_reads.count
            peer.sock.sendall(record[: len(record) // 2])
            assert tls_reads.wait_beyond(before)  # the half was read (by the caller, or the poll thread)
            assert idle_reads(tls_reads, poll) <= 2  # neither reads on without bytes
            peer.sock.sendall(record[len(record) // 2 :])
            caller.join(WAIT)
            assert result == [42]
