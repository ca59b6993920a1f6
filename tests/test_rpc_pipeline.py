"""Deep pipelines of ``call_async``: with many calls unanswered, requests are queued for the
poll thread to write together (``Connection.send_later``). Against raw-socket servers: every
request goes out and completes whatever order the replies come in, none is stranded when
replies stop coming, order with notifications holds, close and cut still fail what is pending;
and deep pipelines over TLS and a mux channel complete."""

from __future__ import annotations

import random
import socket
import threading

import msgpack
import pytest

import links
import links.mux
import links.rpc
from links.rpc import CallTimeout

WAIT = 10.0


class RawServer:
    """A msgpack-rpc server on a raw socket, one connection: it records every message it reads,
    in order, and answers requests as ``answer`` says (never, at once, or held and shuffled)."""

    def __init__(self, answer: str = "never", seed: int = 0, total: int = 0) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.answer = answer
        self.total = total  # shuffled: once this many requests are in, every one held is answered
        self.random = random.Random(seed)
        self.seen: list = []
        self.cond = threading.Condition()
        self.conn: socket.socket | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        self.listener.settimeout(WAIT)
        try:
            conn, _ = self.listener.accept()
        except OSError:
            return
        self.conn = conn
        conn.settimeout(WAIT)
        unpacker = msgpack.Unpacker(raw=False)
        held: list = []
        while True:
            try:
                data = conn.recv(65536)
            except OSError:
                return
            if not data:
                return
            unpacker.feed(data)
            msgs = list(unpacker)
            with self.cond:
                self.seen.extend(msgs)
                self.cond.notify_all()
            held.extend(m for m in msgs if m[0] == 0)
            if self.answer == "shuffled" and held:
                # Answer a random part of what is held, in random order; the rest waits.
                self.random.shuffle(held)
                cut = len(held) if len(self.seen) >= self.total else self.random.randint(0, len(held))
                now, held = held[:cut], held[cut:]
                self._reply(conn, now)

    @staticmethod
    def _reply(conn: socket.socket, requests: list) -> None:
        if requests:
            conn.sendall(b"".join(msgpack.packb([1, m[1], None, m[3][0]]) for m in requests))

    def wait_seen(self, n: int) -> bool:
        with self.cond:
            return self.cond.wait_for(lambda: len(self.seen) >= n, WAIT)

    def close(self) -> None:
        self.listener.close()
        if self.conn is not None:
            self.conn.close()
        self.thread.join(WAIT)


@pytest.fixture
def raw_server():
    servers = []

    def make(**kwargs) -> RawServer:
        server = RawServer(**kwargs)
        servers.append(server)
        return server

    yield make
    for server in servers:
        server.close()


def connect(server: RawServer, poll, timer) -> links.rpc.Peer:
    return links.rpc.connect(f"127.0.0.1:{server.port}", poll_handler=poll, timer=timer, timeout=WAIT)


def counting_queued(rpc: links.rpc.Peer) -> list:
    """Count the requests that went the queued way (``send_later`` took them)."""
    taken = [0]
    later = rpc._send_later

    def counted(request):
        ok = later(request)
        taken[0] += ok
        return ok

    rpc._send_later = counted
    return taken


@pytest.mark.parametrize("seed", [1, 2])
def test_5000_calls_in_flight_all_go_out_and_complete_whatever_the_reply_order(raw_server, poll, timer, seed):
    server = raw_server(answer="shuffled", seed=seed, total=5000)
    with connect(server, poll, timer) as rpc:
        queued = counting_queued(rpc)
        futures = [rpc.call_async("echo", i) for i in range(5000)]
        assert queued[0] > 0  # the deep pipeline took the queued way
        assert [f.result(WAIT) for f in futures] == list(range(5000))
        assert len({m[1] for m in server.seen}) == len(server.seen) == 5000  # each request once
        assert rpc.in_flight == 0


def test_queued_requests_go_out_when_no_reply_ever_comes(raw_server, poll, timer):
    server = raw_server(answer="never")
    with connect(server, poll, timer) as rpc:
        queued = counting_queued(rpc)
        futures = [rpc.call_async("echo", i, timeout=1.0) for i in range(300)]
        assert queued[0] > 0
        # Every request reached the server though nothing answered: none was left queued.
        assert server.wait_seen(300)
        assert [m[3][0] for m in server.seen] == list(range(300))
        for future in futures:
            assert isinstance(future.exception(WAIT), CallTimeout)


def test_notifications_and_blocking_calls_keep_their_place_among_queued_requests(raw_server, poll, timer):
    server = raw_server(answer="never")
    with connect(server, poll, timer) as rpc:
        sent = []
        for i in range(400):
            rpc.call_async("echo", i)
            sent.append(("call", i))
            if i % 7 == 3:
                assert rpc.notify("note", i) is links.SendStatus.COMPLETED
                sent.append(("note", i))
            if i % 50 == 49:
                # A call that must wait for room would block here: a zero-timeout try_call
                # goes the plain way, behind whatever is queued.
                assert rpc.try_call("echo", [10_000 + i]) is not None
                sent.append(("call", 10_000 + i))
        assert server.wait_seen(len(sent))
        seen = [("call" if m[0] == 0 else "note", m[3][0] if m[0] == 0 else m[2][0]) for m in server.seen]
        assert seen == sent


def test_close_fails_queued_calls_as_before(raw_server, poll, timer):
    server = raw_server(answer="never")
    rpc = connect(server, poll, timer)
    futures = [rpc.call_async("echo", i) for i in range(200)]
    rpc.close()
    for future in futures:
        assert isinstance(future.exception(WAIT), links.ClosedError)
    with pytest.raises(links.ClosedError):
        rpc.call_async("echo", 1)


def test_a_cut_connection_fails_queued_calls_as_broken(raw_server, poll, timer):
    server = raw_server(answer="never")
    with connect(server, poll, timer) as rpc:
        futures = [rpc.call_async("echo", i) for i in range(200)]
        assert server.wait_seen(1)
        server.conn.shutdown(socket.SHUT_RDWR)
        for future in futures:
            assert isinstance(future.exception(WAIT), links.BrokenError)


@pytest.mark.parametrize("over", ["tls", "mux"])
def test_deep_pipelines_over_tls_and_a_mux_channel_complete(poll, timer, over):
    import ssl

    import trustme

    server = links.rpc.Server()
    server.add("echo", lambda x: x)
    bind, dial = {}, {}
    if over == "tls":
        ca = trustme.CA()
        bind["tls"] = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ca.issue_cert("127.0.0.1").configure_cert(bind["tls"])
        dial["tls"] = ssl.create_default_context()
        ca.configure_trust(dial["tls"])
    else:
        bind["mux"] = True
    with links.rpc.serve("127.0.0.1:0", server, poll_handler=poll, timer=timer, **bind) as svc:
        addr = f"127.0.0.1:{svc.local_addr[1]}"
        if over == "tls":
            rpc = links.rpc.connect(addr, poll_handler=poll, timer=timer, timeout=WAIT, **dial)
            mux = None
        else:
            mux = links.mux.connect(addr, poll_handler=poll, timer=timer, timeout=WAIT)
            rpc = links.rpc.Peer()
            rpc._owner = mux.open(protocol=rpc.protocol).into_sender_with_spawned_recver()
        try:
            queued = counting_queued(rpc)
            futures = [rpc.call_async("echo", i) for i in range(2000)]
            assert [f.result(WAIT) for f in futures] == list(range(2000))
            assert queued[0] > 0
        finally:
            rpc.close()
            if mux is not None:
                mux.close()
