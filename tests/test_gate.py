"""``ConnectionGate`` on a live service: refusing beyond the maximum, admitting again after a
disconnect, and releasing each permit exactly once however the connection ends."""

from __future__ import annotations

import threading
from contextlib import ExitStack

import pytest
from helpers import Json, watch_logs

import links

WAIT = 5.0


class Server:
    """Server-side connection tracking: each connection's sender (from ``on_connect``) and
    every ``on_disconnect``, waitable."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self.senders: list[links.CltSender] = []
        self.gone: list[links.ConId] = []
        server = self

        class Tracked(Json):
            def on_connect(self, con):
                server._add(server.senders, con)

            def on_disconnect(self, con_id):
                server._add(server.gone, con_id)

        self.protocol = Tracked

    def _add(self, items: list, item) -> None:
        with self._cond:
            items.append(item)
            self._cond.notify_all()

    def wait(self, items: list, count: int) -> bool:
        with self._cond:
            return self._cond.wait_for(lambda: len(items) >= count, WAIT)


def connect(svc: links.Svc, timer) -> links.Clt:
    return links.Clt.connect(f"127.0.0.1:{svc.local_addr[1]}", protocol=Json, timer=timer, timeout=WAIT)


def test_a_full_gate_refuses_then_admits_after_a_disconnect(timer, poll):
    server = Server()
    store = links.StoreCallback()
    with watch_logs() as logs, ExitStack() as stack:
        svc = stack.enter_context(
            links.Svc.bind(
                "127.0.0.1:0", protocol=server.protocol, callback=store, max_connections=2, timer=timer,
                poll_handler=poll,
            )
        )
        svc.into_sender_with_spawned_recver()
        first, second = (stack.enter_context(connect(svc, timer)) for _ in range(2))
        assert server.wait(server.senders, 2)

        with connect(svc, timer) as third:  # the kernel completes the handshake; the gate says no
            assert logs.wait("svc.rejected", peer="127.0.0.1:%d" % third.con_id.local[1])
            with pytest.raises(links.BrokenError):
                third.recv(timeout=WAIT)
        assert len(server.senders) == 2  # it never reached the protocol
        assert svc.gate.in_use == 2

        first.close()
        assert server.wait(server.gone, 1)
        poll.sync()
        assert svc.gate.in_use == 1
        with connect(svc, timer) as fourth:
            fourth.send({"admitted": True})
            assert store.find_recv(lambda m: m == {"admitted": True}, timeout=WAIT)
            assert svc.gate.in_use == 2
        second.send({"still": "here"})
        assert store.find_recv(lambda m: m == {"still": "here"}, timeout=WAIT)


def test_permit_released_once_when_both_ends_close_at_the_same_time(timer, poll):
    server = Server()
    rounds = 20
    svc = links.Svc.bind("127.0.0.1:0", protocol=server.protocol, max_connections=1, timer=timer, poll_handler=poll)
    with svc:
        svc.into_sender_with_spawned_recver()
        for n in range(rounds):
            # With one slot, this round's connection is admitted only if the last one's permit came back.
            client = connect(svc, timer)
            assert server.wait(server.senders, n + 1)
            server_side = server.senders[n]
            both = threading.Barrier(2)
            closers = [threading.Thread(target=lambda h=h: (both.wait(WAIT), h.close())) for h in (client, server_side)]
            for t in closers:
                t.start()
            for t in closers:
                t.join(WAIT)
            assert server.wait(server.gone, n + 1)
            poll.sync()
            assert svc.gate.in_use == 0  # not -1: released once, not by each closer
        assert len(server.gone) == rounds


def test_permit_release_is_idempotent_across_threads():
    gate = links.ConnectionGate(1)
    permit = gate.try_acquire()
    assert permit is not None and gate.in_use == 1
    assert gate.try_acquire() is None
    start = threading.Barrier(8)
    threads = [threading.Thread(target=lambda: (start.wait(WAIT), permit.release())) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(WAIT)
    assert permit.released and gate.in_use == 0 and gate.available == 1
    assert gate.try_acquire() is not None
    assert gate.try_acquire() is None  # still a maximum of one


def test_gate_needs_at_least_one_slot():
    with pytest.raises(ValueError):
        links.ConnectionGate(0)
