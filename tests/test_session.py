"""Resumable sessions over real sockets, with a ``FaultProxy`` cutting the connection.

What a user checks: every message arrives exactly once and in order in both directions
across cuts of every kind (RST, FIN, mid-frame); the server keeps a detached session (and
what is sent to it) until the client resumes, and forgets it after ``detached_ttl``, after
which the client is told the session is lost; a full replay buffer pushes back on senders;
nobody can resume a session without its key; broken handshakes are closed and logged while
real sessions carry on; ``accept``/``accept_into_pool`` work; the application's handshake
runs once per session; a silent peer is detected on both sides and the session resumes.

Every randomized test prints its seed; every test that cuts asserts from ``proxy.stats()``
that its cuts fired. Waits are on callbacks and log events, never on sleeps.
"""

from __future__ import annotations

import random
import secrets
import socket
import struct
import threading
import time
from contextlib import contextmanager

import pytest
from helpers import Json

import links
from links.session import Resumable
from links.session import _wire as wire
from links.testing import Login, LoginAccepted, Ping, Pong, SampleClient, SampleServer
from links.testing._proxy import FaultProxy

WAIT = 5.0
FAST = links.Backoff(initial=0.005, maximum=0.05, factor=2.0, jitter=0.1)
# Heartbeats keep acks (and bytes for mid-frame cuts) flowing; dead_after is generous so a
# loaded machine never mistakes a slow peer for a dead one in the tests that do not want it.
SESSION = {"heartbeat_interval": 0.05, "dead_after": 40}


@pytest.mark.parametrize(
    "setting",
    [{"detached_ttl": 0.0}, {"heartbeat_interval": float("nan")}, {"handshake_timeout": -1.0},
     {"max_messages": 0}, {"max_bytes": 0}, {"ack_every": 0}, {"dead_after": float("nan")}],
    ids=lambda setting: next(iter(setting)),
)  # fmt: skip
def test_settings_that_cannot_work_are_refused_when_made(setting):
    name = next(iter(setting))
    with pytest.raises(ValueError, match=name):
        Resumable(**setting)


@contextmanager
def session_service(poll, timer, *, protocol=Json, callback=None, spawn=True, **session):
    """A ``Svc`` with resumable sessions (spawned into the poll thread unless ``spawn`` is False)."""
    svc = links.Svc.bind(
        "127.0.0.1:0", protocol=protocol, callback=callback, poll_handler=poll, timer=timer,
        session=Resumable(**{**SESSION, **session}),
    )  # fmt: skip
    with svc:
        sender = svc.into_sender_with_spawned_recver() if spawn else None
        yield svc, sender


def connect(addr, poll, timer, *, protocol=Json, callback=None, reconnect=FAST, **session) -> links.Clt:
    return links.Clt.connect(
        f"127.0.0.1:{addr[1]}", protocol=protocol, callback=callback, poll_handler=poll, timer=timer, timeout=WAIT,
        reconnect=reconnect, session=Resumable(**{**SESSION, **session}),
    )  # fmt: skip


def stream(sender, count: int, errors: list) -> threading.Thread:
    """A thread sending 0 .. count-1 (waiting whenever it must)."""

    def run() -> None:
        try:
            for i in range(count):
                sender.send(i)
        except Exception as e:  # noqa: BLE001 - reported by the test, not lost in the thread
            errors.append(e)

    thread = threading.Thread(target=run, name="stream", daemon=True)
    thread.start()
    return thread


def pooled(svc_sender, poll) -> list:
    """The service's connections once the poll thread has finished admitting the newest: the
    client's connect returns on WELCOME, written a moment before the session joins the pool."""
    poll.sync()
    return svc_sender.con_ids()


def numbers(store: links.StoreCallback) -> list:
    return [m for m in store.recv_msgs() if isinstance(m, int)]


class Collected(links.Callback):
    """What one side received, in order; a callback, or fed by a reading thread with ``add``."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self.msgs: list = []

    def add(self, msg) -> None:
        with self._cond:
            self.msgs.append(msg)
            self._cond.notify_all()

    def on_recv(self, con_id, msg) -> None:
        self.add(msg)

    def wait_count(self, n: int) -> bool:
        with self._cond:
            return self._cond.wait_for(lambda: len(self.msgs) >= n, WAIT)


def cut(proxy: FaultProxy, kind: str, rng: random.Random) -> None:
    """One cut of ``kind``, asserted to have hit the live pair."""
    if kind == "rst":
        assert proxy.reset() == 1
    elif kind == "fin":
        assert proxy.drop() == 1
    else:  # mid-frame, in one direction or both; heartbeats keep bytes flowing until it fires
        direction = kind.removeprefix("after_")
        assert proxy.cut_after(rng.randint(1, 100), how=rng.choice(["rst", "fin"]), direction=direction) == 1


def cut_during_streams(proxy, logs, kinds, rng, count: int, sides: list[Collected]) -> None:
    """Cut once per kind, each time once both sides are a little further into their stream
    (so every cut lands mid-stream), and wait for the session to resume before the next."""
    for n, kind in enumerate(kinds, start=1):
        for side in sides:
            assert side.wait_count(n * count // (len(kinds) + 1))
        cut(proxy, kind, rng)
        logs.expect("session.resumed", count=n)
        logs.expect("clt.reconnected", count=n)


# -- exactly once, in order, across cuts ------------------------------------------------------------

KINDS = ["rst", "fin", "after_both", "after_c2s", "after_s2c", "rst", "fin"]


def test_exactly_once_in_order_both_ways_across_cuts_with_spawned_receivers(logs, poll, timer):
    seed = random.randrange(1 << 32)
    print(f"seed {seed}")
    rng = random.Random(seed)
    count = 5000
    at_server, at_client = Collected(), Collected()
    errors: list = []
    with session_service(poll, timer, callback=at_server) as (svc, svc_sender), FaultProxy(svc.local_addr) as proxy:
        clt = connect(proxy.addr, poll, timer, callback=at_client)
        with clt.into_sender_with_spawned_recver() as clt_sender:
            streams = [stream(clt_sender, count, errors), stream(svc_sender, count, errors)]
            cut_during_streams(proxy, logs, KINDS, rng, count, [at_server, at_client])
            for thread in streams:
                thread.join(WAIT)
            assert at_server.wait_count(count) and at_client.wait_count(count)
            assert not errors
            assert at_server.msgs == list(range(count))
            assert at_client.msgs == list(range(count))
        stats = proxy.stats()
    assert (stats.rst_cuts, stats.fin_cuts, stats.after_cuts) == (2, 2, 3)
    assert stats.accepted == len(KINDS) + 1
    assert len(logs.matching("session.resumed")) == len(KINDS)
    assert len(logs.matching("session.started")) == 1


def test_exactly_once_in_order_both_ways_across_cuts_with_user_thread_recv(logs, poll, timer):
    """No spawned receivers: each side reads on a thread of its own with ``recv``, and the
    server accepts on a user thread too (``accept`` also reads the HELLO of every resume)."""
    seed = random.randrange(1 << 32)
    print(f"seed {seed}")
    rng = random.Random(seed)
    count = 5000
    errors: list = []
    at_server, at_client = Collected(), Collected()
    stop = threading.Event()

    def read(recver, into: Collected) -> None:
        """Keep reading until told to stop, so cuts also hit a reader blocked in recv."""
        try:
            while not stop.is_set():
                msg = recver.recv(0.05)
                if msg is not None:
                    into.add(msg)
        except Exception as e:  # noqa: BLE001 - reported by the test, not lost in the thread
            errors.append(e)

    def accept_resumes(svc) -> None:
        while not stop.is_set():
            if svc.accept(0.02) is not None:
                errors.append("a resume was accepted as a new session")

    with session_service(poll, timer, spawn=False) as (svc, _), FaultProxy(svc.local_addr) as proxy:
        dialer, out = connect_in_background(proxy.addr, poll, timer)
        server_clt = svc.accept(WAIT)
        dialer.join(WAIT)
        assert server_clt is not None and "clt" in out
        with out["clt"] as clt, server_clt:
            server_recver, server_sender = server_clt.split()
            clt_recver, clt_sender = clt.split()
            threads = [
                threading.Thread(target=accept_resumes, args=(svc,), name="acceptor"),
                threading.Thread(target=read, args=(server_recver, at_server), name="server-reader"),
                threading.Thread(target=read, args=(clt_recver, at_client), name="client-reader"),
            ]
            for thread in threads:
                thread.start()
            streams = [stream(clt_sender, count, errors), stream(server_sender, count, errors)]
            try:
                cut_during_streams(proxy, logs, KINDS[:5], rng, count, [at_server, at_client])
                for thread in streams:
                    thread.join(WAIT)
                assert at_server.wait_count(count) and at_client.wait_count(count)
            finally:
                stop.set()
                for thread in threads:
                    thread.join(WAIT)
        stats = proxy.stats()
    assert not errors
    assert at_server.msgs == list(range(count))
    assert at_client.msgs == list(range(count))
    assert (stats.rst_cuts, stats.fin_cuts, stats.after_cuts) == (1, 1, 3)
    assert len(logs.matching("session.started")) == 1


# -- detached sessions on the server -----------------------------------------------------------------


def test_sends_to_a_detached_session_are_delivered_when_the_client_resumes(logs, poll, timer):
    at_client = links.StoreCallback()
    with session_service(poll, timer) as (svc, svc_sender), FaultProxy(svc.local_addr) as proxy:
        clt = connect(proxy.addr, poll, timer, callback=at_client)
        with clt.into_sender_with_spawned_recver() as clt_sender:
            (con_id,) = pooled(svc_sender, poll)
            svc_sender.send_to(con_id, "before")
            assert at_client.find_recv(lambda m: m == "before", WAIT)
            proxy.refuse(True)  # the client cannot get back in for now
            assert proxy.drop() == 1
            logs.expect("session.detached", con_id=str(con_id))
            logs.expect("clt.reconnect_failed")
            for i in range(5):  # the session is still in the pool, detached: sends are kept
                assert svc_sender.send_to(con_id, i, timeout=0) is links.SendStatus.COMPLETED
            assert clt_sender.send("while away", timeout=0) is links.SendStatus.COMPLETED
            assert svc_sender.con_ids() == [con_id]
            proxy.refuse(False)
            logs.expect("session.resumed", con_id=str(con_id))
            assert at_client.wait_recv_count(6, WAIT)
            assert at_client.recv_msgs() == ["before", 0, 1, 2, 3, 4]
        stats = proxy.stats()
    assert stats.fin_cuts == 1 and stats.refused >= 1


def test_an_expired_session_is_rejected_and_the_client_learns_it_is_lost(logs, poll, timer):
    with session_service(poll, timer, detached_ttl=0.2) as (svc, svc_sender), FaultProxy(svc.local_addr) as proxy:
        clt = connect(proxy.addr, poll, timer)
        sender = clt.into_sender_with_spawned_recver()
        with sender:
            proxy.refuse(True)
            assert proxy.reset() == 1
            logs.expect("session.detached")
            logs.expect("session.expired")  # the server forgot it (and closed it for good)
            assert svc_sender.con_ids() == []
            proxy.refuse(False)
            rejected = logs.expect("session.rejected")
            assert "unknown or expired" in rejected["reason"]
            logs.expect("clt.disconnected", reason="session_lost")
            # What the client raises from now on: SessionLost (a BrokenError whose reason says
            # the session is gone; its message carries the server's rejection).
            with pytest.raises(links.session.SessionLost, match="rejected the session") as raised:
                sender.send("too late", timeout=0)
            assert isinstance(raised.value, links.BrokenError) and raised.value.reason == "session_lost"
        stats = proxy.stats()
    assert stats.rst_cuts == 1 and stats.refused >= 1
    assert not logs.matching("session.resumed")


# -- back-pressure ----------------------------------------------------------------------------------


def test_a_full_replay_buffer_pushes_back_on_senders(logs, poll, timer):
    at_server = links.StoreCallback()
    with session_service(poll, timer, callback=at_server, ack_every=1) as (svc, _), FaultProxy(svc.local_addr) as proxy:
        clt = connect(proxy.addr, poll, timer, max_messages=4)
        with clt.into_sender_with_spawned_recver() as sender:
            proxy.pause()  # nothing reaches the server, so no acks come back
            before = proxy.stats()
            for i in range(4):
                assert sender.send(i, timeout=0) is links.SendStatus.COMPLETED
            assert sender.send(4, timeout=0) is links.SendStatus.WOULD_BLOCK
            assert sender.send(4, timeout=0.05) is links.SendStatus.WOULD_BLOCK

            result: dict = {}
            started = threading.Event()

            def send_and_wait() -> None:
                started.set()
                result["status"] = sender.send(4)  # timeout=None: waits for room
                result["at"] = time.monotonic()

            waiter = threading.Thread(target=send_and_wait, name="waiting-sender")
            waiter.start()
            assert started.wait(WAIT)
            assert proxy.stats().bytes_c2s == before.bytes_c2s  # really paused meanwhile
            resumed_at = time.monotonic()
            proxy.resume()  # the server reads 0..3 and acks them: room again
            waiter.join(WAIT)
            assert result["status"] is links.SendStatus.COMPLETED and result["at"] > resumed_at
            assert at_server.wait_recv_count(5, WAIT)
            assert numbers(at_server) == [0, 1, 2, 3, 4]  # nothing lost, nothing twice
            assert not logs.matching("clt.disconnected")  # it was never cut: only paused


# -- hostile and broken handshakes ---------------------------------------------------------------------


def read_to_eof(sock: socket.socket) -> bytes:
    """Everything the server sends until it closes the connection."""
    sock.settimeout(WAIT)
    data = bytearray()
    try:
        while chunk := sock.recv(4096):
            data += chunk
    except ConnectionResetError:
        pass
    return bytes(data)


def raw(svc) -> socket.socket:
    return socket.create_connection(svc.local_addr, timeout=WAIT)


def test_random_resume_keys_are_all_rejected(logs, poll, timer):
    seed = random.randrange(1 << 32)
    print(f"seed {seed}")
    rng = random.Random(seed)
    tries = 1000
    at_server = links.StoreCallback()
    with session_service(poll, timer, callback=at_server) as (svc, svc_sender):
        clt = connect(svc.local_addr, poll, timer)
        with clt.into_sender_with_spawned_recver() as sender:
            accepted = 0
            for _ in range(tries):
                with raw(svc) as sock:
                    last_received = rng.choice([0, 1, rng.randrange(1 << 63)])
                    sock.sendall(wire.encode_hello(rng.randbytes(wire.KEY_SIZE), last_received))
                    reply = read_to_eof(sock)
                assert struct.unpack_from("!I", reply)[0] == len(reply) - 4  # one whole frame, then EOF
                frame = wire.decode(memoryview(reply))
                if not isinstance(frame, wire.Reject):
                    accepted += 1
            assert accepted == 0
            assert len(logs.matching("session.rejected")) == tries
            assert not logs.matching("session.resumed")
            sender.send("still here")  # the real session never noticed
            assert at_server.find_recv(lambda m: m == "still here", WAIT)
            assert len(svc_sender) == 1
            poll.sync()  # the last rejected socket's permit is released on the poll thread
            assert svc.gate.in_use == 1  # only the real session holds a permit


def test_unknown_key_gets_a_reject_frame_with_its_reason(logs, poll, timer):
    with session_service(poll, timer) as (svc, _), raw(svc) as sock:
        sock.sendall(wire.encode_hello(secrets.token_bytes(wire.KEY_SIZE), 0))
        reply = wire.decode(memoryview(read_to_eof(sock)))
    assert isinstance(reply, wire.Reject) and reply.reason == wire.RejectReason.UNKNOWN_KEY
    assert "unknown or expired" in reply.text


def handshake_cases(svc, rng: random.Random) -> list[tuple[str, bytes, bool, str, dict]]:
    """(name, bytes to send, close our side after sending, expected log event, its fields)."""
    hello = wire.encode_hello(wire.NO_KEY, 0)
    garbage = struct.pack("!I", 24) + rng.randbytes(24)  # a whole frame of random bytes
    if garbage[4] in (1, 2, 3, 4, 5):
        garbage = garbage[:4] + b"\xee" + garbage[5:]  # never a valid kind by chance
    return [
        ("garbage frame", garbage, False, "session.rejected", {}),
        ("random bytes then close", rng.randbytes(3), True, "session.abandoned", {"reason": "peer_closed"}),
        ("half a HELLO then close", hello[: len(hello) // 2], True, "session.abandoned", {"reason": "peer_closed"}),
        ("half a HELLO then silence", hello[: len(hello) // 2], False, "session.abandoned",
         {"reason": "session.handshake_timeout"}),
        ("oversize length", b"\xff\xff\xff\xff" + rng.randbytes(8), False, "frame.too_large", {}),
        ("DATA before HELLO", wire.encode_data(1, 0, b"1"), False, "session.rejected", {"reason": "expected HELLO"}),
        ("new session claiming received frames", wire.encode_hello(wire.NO_KEY, 5), False, "session.rejected",
         {"reason": "new session claims received frames"}),
    ]  # fmt: skip


def test_garbage_and_truncated_handshakes_are_closed_and_logged(logs, poll, timer):
    seed = random.randrange(1 << 32)
    print(f"seed {seed}")
    rng = random.Random(seed)
    at_server, at_client = links.StoreCallback(), links.StoreCallback()
    with session_service(poll, timer, callback=at_server, handshake_timeout=0.2) as (svc, svc_sender):
        clt = connect(svc.local_addr, poll, timer, callback=at_client)
        with clt.into_sender_with_spawned_recver() as sender:
            for n, (name, data, close_ours, event, fields) in enumerate(handshake_cases(svc, rng)):
                with raw(svc) as sock:
                    sock.sendall(data)
                    if close_ours:
                        sock.shutdown(socket.SHUT_WR)
                    read_to_eof(sock)  # returns only once the server closed it (or WAIT passed)
                    logs.expect(event, **fields)
                    sender.send(n)  # the real session is undisturbed, after every case
                    assert at_server.find_recv(lambda m, n=n: m == n, WAIT) == n, name
            svc_sender.send("and back")
            assert at_client.find_recv(lambda m: m == "and back", WAIT)
            assert len(svc_sender) == 1
    assert not logs.matching("clt.disconnected", reason="broken")


def test_a_resume_claiming_frames_never_sent_is_rejected(logs, poll, timer):
    """A raw client starts a real session, then another connection tries to resume it while
    claiming to have received frames the server never sent."""
    with session_service(poll, timer) as (svc, svc_sender), raw(svc) as first:
        first.sendall(wire.encode_hello(wire.NO_KEY, 0))
        first.settimeout(WAIT)
        welcome_bytes = first.recv(wire._WELCOME_S.size)
        welcome = wire.decode(memoryview(welcome_bytes))
        assert isinstance(welcome, wire.Welcome) and not welcome.resumed
        with raw(svc) as second:
            second.sendall(wire.encode_hello(welcome.key, 10))  # the server sent nothing yet
            reply = wire.decode(memoryview(read_to_eof(second)))
        assert isinstance(reply, wire.Reject) and reply.reason == wire.RejectReason.BAD_HELLO
        assert logs.expect("session.rejected", reason="resume claims frames never sent")
        # The session itself was not disturbed: the first connection still gets its data.
        (con_id,) = pooled(svc_sender, poll)
        svc_sender.send_to(con_id, 7)
        frame = wire.decode(memoryview(first.recv(64)))
        assert isinstance(frame, wire.Data) and frame.seq == 1 and bytes(frame.payload) == b"7"


# -- the service's other ways in ---------------------------------------------------------------------


def connect_in_background(addr, poll, timer, **kwargs) -> tuple[threading.Thread, dict]:
    """``Clt.connect`` waits for WELCOME, which needs the server to accept: dial on a thread."""
    out: dict = {}
    thread = threading.Thread(target=lambda: out.update(clt=connect(addr, poll, timer, **kwargs)), name="dialer")
    thread.start()
    return thread, out


def test_accept_returns_a_session_that_resumes(logs, poll, timer):
    with session_service(poll, timer, spawn=False) as (svc, _), FaultProxy(svc.local_addr) as proxy:
        dialer, out = connect_in_background(proxy.addr, poll, timer)
        server_clt = svc.accept(WAIT)
        dialer.join(WAIT)
        assert server_clt is not None
        with out["clt"] as clt, server_clt:
            clt.send("hello")
            assert server_clt.recv(WAIT) == "hello"
            assert proxy.reset() == 1
            server_clt.send("sent across the cut")
            assert svc.accept(0.3) is None  # it read the resume's HELLO: no new connection
            logs.expect("session.resumed")
            assert clt.recv(WAIT) == "sent across the cut"
            clt.send("after")
            assert server_clt.recv(WAIT) == "after"
    assert proxy.stats().rst_cuts == 1


def test_accept_into_pool_with_sessions(logs, poll, timer):
    with session_service(poll, timer, spawn=False) as (svc, _):
        dialers = [connect_in_background(svc.local_addr, poll, timer) for _ in range(2)]
        con_ids = [svc.accept_into_pool(WAIT), svc.accept_into_pool(WAIT)]
        for thread, _ in dialers:
            thread.join(WAIT)
        clts = [out["clt"] for _, out in dialers]
        try:
            assert None not in con_ids and sorted(map(str, svc.con_ids())) == sorted(map(str, con_ids))
            for n, con_id in enumerate(con_ids):
                svc.send_to(con_id, n)
            assert sorted(c.recv(WAIT) for c in clts) == [0, 1]
            clts[0].send("a")
            clts[1].send("b")
            assert sorted([svc.recv(WAIT), svc.recv(WAIT)]) == ["a", "b"]
        finally:
            for c in clts:
                c.close()
    assert len(logs.matching("session.started")) == 2


# -- the application's handshake runs once per session -----------------------------------------------


def test_on_connect_runs_once_per_session_not_per_resume(logs, poll, timer):
    made: dict[str, list] = {"server": [], "client": []}
    connects = {"server": 0, "client": 0}

    def counting(base, side):
        """``base``, counting its instances and its ``on_connect`` calls under ``side``."""

        class Counting(base):
            def __init__(self):
                super().__init__()
                made[side].append(self)

            def on_connect(self, con):
                connects[side] += 1
                super().on_connect(con)

        return Counting

    CountingServer, CountingClient = counting(SampleServer, "server"), counting(SampleClient, "client")

    at_server, at_client = links.StoreCallback(), links.StoreCallback()
    with (
        session_service(poll, timer, protocol=CountingServer, callback=at_server) as (svc, _),
        FaultProxy(svc.local_addr) as proxy,
    ):
        clt = connect(proxy.addr, poll, timer, protocol=CountingClient, callback=at_client)
        with clt.into_sender_with_spawned_recver() as sender:
            assert clt.is_connected()  # connect returned logged in
            for n, how in enumerate(["rst", "fin", "rst"], start=1):
                assert (proxy.reset() if how == "rst" else proxy.drop()) == 1
                logs.expect("session.resumed", count=n)
                logs.expect("clt.reconnected", count=n)
                sender.send(Ping(n))
                assert at_client.find_recv(lambda m, n=n: m == Pong(n), WAIT)
        stats = proxy.stats()
    assert connects == {"server": 1, "client": 1}
    assert len(made["server"]) == 1 and len(made["client"]) == 1
    assert [m for m in at_server.recv_msgs() if isinstance(m, Login)] == [Login("user", "pass")]
    assert at_client.recv_msgs().count(LoginAccepted("user")) == 1
    assert [m.seq for m in at_client.recv_msgs() if isinstance(m, Pong)] == [1, 2, 3]
    assert (stats.rst_cuts, stats.fin_cuts) == (2, 1)


# -- dead peers ----------------------------------------------------------------------------------------


def test_a_silent_peer_is_detected_on_both_sides_and_the_session_resumes(logs, poll, timer):
    interval, dead_after = 0.05, 3
    limit = interval * dead_after
    at_server, at_client = links.StoreCallback(), links.StoreCallback()
    settings = {"heartbeat_interval": interval, "dead_after": dead_after}
    with (
        session_service(poll, timer, callback=at_server, **settings) as (svc, svc_sender),
        FaultProxy(svc.local_addr) as proxy,
    ):
        clt = connect(proxy.addr, poll, timer, callback=at_client, **settings)
        with clt.into_sender_with_spawned_recver() as sender:
            (con_id,) = pooled(svc_sender, poll)
            sender.send(0)
            svc_sender.send_to(con_id, 0)
            assert at_server.find_recv(lambda m: m == 0, WAIT) is not None
            assert at_client.find_recv(lambda m: m == 0, WAIT) is not None
            paused = time.monotonic()
            proxy.pause()  # no FIN, no RST: both sides just stop hearing from each other
            sender.send(1)
            svc_sender.send_to(con_id, 1)
            silent = [logs.expect("session.peer_silent", count=2)["t"], logs.expect("session.peer_silent")["t"]]
            latencies = [t - paused for t in silent]
            print(f"peer_silent after {[round(x, 3) for x in latencies]} s (limit {limit} s)")
            assert all(limit / 2 < x <= limit + 0.05 + 0.25 for x in latencies)  # loose: a loaded box
            sides = {e["con_id"] for e in logs.matching("session.peer_silent")}
            assert len(sides) == 2  # the client's connection and the server's
            sender.send(2)  # sent while detached: kept for the resume
            svc_sender.send_to(con_id, 2)
            proxy.heal()  # forwarding again: the redial that waited in the proxy completes
            logs.expect("session.resumed")
            logs.expect("clt.reconnected")
            assert at_server.wait_recv_count(3, WAIT) and at_client.wait_recv_count(3, WAIT)
            assert numbers(at_server) == [0, 1, 2] and numbers(at_client) == [0, 1, 2]
        stats = proxy.stats()
    assert len(logs.matching("session.resumed")) == 1
    assert stats.accepted == 2  # the silence ended the first connection; the second resumed
