"""``Svc`` over real loopback sockets: accepting on a user thread, the pool (round-robin send
and recv, ``send_to``, ``broadcast``), the spawned ``SvcSender`` whose pool follows the live
connections, and closing the service."""

from __future__ import annotations

import threading
from contextlib import ExitStack

import pytest
from helpers import Json, waiting_call

import links

WAIT = 5.0


class Departures:
    """Counts server-side ``on_disconnect`` calls; tests wait on it instead of sleeping."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self.con_ids: list[links.ConId] = []
        tracker = self

        class Tracked(Json):
            def on_disconnect(self, con_id):
                with tracker._cond:
                    tracker.con_ids.append(con_id)
                    tracker._cond.notify_all()

        self.protocol = Tracked

    def wait(self, count: int) -> bool:
        with self._cond:
            return self._cond.wait_for(lambda: len(self.con_ids) >= count, WAIT)


def addr(svc: links.Svc) -> str:
    return f"127.0.0.1:{svc.local_addr[1]}"


def connect(stack: ExitStack, svc: links.Svc, timer, n: int) -> list[links.Clt]:
    return [
        stack.enter_context(links.Clt.connect(addr(svc), protocol=Json, timer=timer, timeout=WAIT, name=f"c{i}"))
        for i in range(n)
    ]


def server_id_of(svc_con_ids, client: links.Clt) -> links.ConId:
    """The server-side con_id of ``client``'s connection (its peer is the client's local address)."""
    (con_id,) = [c for c in svc_con_ids if c.peer == client.con_id.local]
    return con_id


def test_accept_returns_a_clt_or_none_on_timeout(timer):
    with links.Svc.bind("127.0.0.1:0", protocol=Json, timer=timer) as svc:
        assert svc.accept(timeout=0.05) is None
        with links.Clt.connect(addr(svc), protocol=Json, timer=timer, timeout=WAIT) as client:
            server = svc.accept(timeout=WAIT)
            assert isinstance(server, links.Clt)
            with server:
                assert server.con_id.role is links.Role.ACCEPTOR
                assert server.con_id.peer == client.con_id.local
                client.send({"hi": 1})
                assert server.recv(timeout=WAIT) == {"hi": 1}
                assert svc.gate.in_use == 1  # accept() hands the slot over with the Clt
            assert svc.gate.in_use == 0


def test_pool_round_robin_send_to_and_broadcast(timer):
    with links.Svc.bind("127.0.0.1:0", protocol=Json, timer=timer) as svc, ExitStack() as stack:
        clients = connect(stack, svc, timer, 3)
        ids = [svc.accept_into_pool(timeout=WAIT) for _ in clients]
        assert None not in ids and len(svc) == 3 and set(svc.con_ids()) == set(ids)

        for i in range(6):
            assert svc.send({"i": i}) is links.SendStatus.COMPLETED
        shares = [[c.recv(timeout=WAIT), c.recv(timeout=WAIT)] for c in clients]
        assert None not in shares[0] + shares[1] + shares[2]
        assert sorted(m["i"] for share in shares for m in share) == list(range(6))  # two each, none lost

        target = clients[1]
        svc.send_to(server_id_of(svc.con_ids(), target), {"only": "c1"})
        assert svc.broadcast({"all": True}) == 3
        assert target.recv(timeout=WAIT) == {"only": "c1"}
        for c in clients:  # for the others the broadcast is next: send_to went to one client only
            assert c.recv(timeout=WAIT) == {"all": True}


def test_pool_recv_is_round_robin_across_clients(timer):
    with links.Svc.bind("127.0.0.1:0", protocol=Json, timer=timer) as svc, ExitStack() as stack:
        clients = connect(stack, svc, timer, 3)
        for _ in clients:
            svc.accept_into_pool(timeout=WAIT)
        for k, c in enumerate(clients):
            c.send_many([{"c": k, "i": i} for i in range(3)])
        got = [svc.recv(timeout=WAIT) for _ in range(9)]
        # Every client is served once per round instead of one client being drained first.
        for round_ in range(3):
            assert sorted(m["c"] for m in got[3 * round_ : 3 * round_ + 3]) == [0, 1, 2]
        for k in range(3):
            assert [m["i"] for m in got if m["c"] == k] == [0, 1, 2]
        assert svc.recv(timeout=0.01) is None


def test_spawned_sender_pool_follows_accepts_and_closes(timer, poll):
    departures = Departures()
    store = links.StoreCallback()
    svc = links.Svc.bind("127.0.0.1:0", protocol=departures.protocol, callback=store, timer=timer, poll_handler=poll)
    with svc:
        sender = svc.into_sender_with_spawned_recver()
        assert len(sender) == 0
        with ExitStack() as stack:
            clients = connect(stack, svc, timer, 2)
            for k, c in enumerate(clients):
                c.send({"hello": k})
                assert store.find_recv(lambda m, k=k: m == {"hello": k}, timeout=WAIT)
            poll.sync()  # the join happens in the same poll-thread step that delivered the hello
            assert len(sender) == 2
            assert sorted(c.peer for c in sender.con_ids()) == sorted(c.con_id.local for c in clients)

            clients[0].close()
            assert departures.wait(1)
            poll.sync()
            assert [c.peer for c in sender.con_ids()] == [clients[1].con_id.local]
            assert sender.send({"to": "survivor"}) is links.SendStatus.COMPLETED
            assert clients[1].recv(timeout=WAIT) == {"to": "survivor"}


@pytest.mark.parametrize("spawned", [False, True], ids=["user_thread", "spawned"])
def test_send_over_an_empty_pool_would_block(timer, poll, spawned):
    with links.Svc.bind("127.0.0.1:0", protocol=Json, timer=timer, poll_handler=poll) as svc:
        sender = svc.into_sender_with_spawned_recver() if spawned else svc
        assert sender.send({"n": 1}, timeout=0) is links.SendStatus.WOULD_BLOCK
        assert sender.send({"n": 1}, timeout=0.01) is links.SendStatus.WOULD_BLOCK
        assert sender.broadcast({"n": 1}) == 0


@pytest.mark.parametrize("spawned", [False, True], ids=["user_thread", "spawned"])
def test_close_closes_every_pooled_connection_and_the_listener(timer, poll, spawned):
    departures = Departures()
    store = links.StoreCallback()
    svc = links.Svc.bind("127.0.0.1:0", protocol=departures.protocol, callback=store, timer=timer, poll_handler=poll)
    with svc, ExitStack() as stack:
        clients = connect(stack, svc, timer, 2)
        if spawned:
            sender = svc.into_sender_with_spawned_recver()
            for k, c in enumerate(clients):
                c.send({"hello": k})
                assert store.find_recv(lambda m, k=k: m == {"hello": k}, timeout=WAIT)
            poll.sync()
        else:
            sender = svc
            for _ in clients:
                svc.accept_into_pool(timeout=WAIT)
        assert len(sender) == 2
        svc.close()
        assert departures.wait(2)
        for c in clients:
            with pytest.raises(links.BrokenError):
                c.recv(timeout=WAIT)
        with pytest.raises(links.ClosedError):
            sender.send({"n": 1})
        poll.sync()  # a spawned listener is closed on the poll thread
        with pytest.raises(links.ConnectTimeout):
            links.Clt.connect(addr(svc), protocol=Json, timer=timer, timeout=0.1)
        assert svc.gate.in_use == 0


def test_reuse_port_lets_a_second_service_bind_the_same_port(timer):
    """``reuse_port=True`` (``SO_REUSEPORT``): worker processes share one port; without it the
    second bind is refused."""
    with links.Svc.bind("127.0.0.1:0", protocol=Json, timer=timer, reuse_port=True) as first:
        target = "127.0.0.1:%d" % first.local_addr[1]
        with pytest.raises(OSError):
            links.Svc.bind(target, protocol=Json, timer=timer)
        with links.Svc.bind(target, protocol=Json, timer=timer, reuse_port=True) as second:
            assert second.local_addr == first.local_addr
            with links.Clt.connect(target, protocol=Json, timer=timer, timeout=WAIT) as clt:
                clt.send({"n": 1})
                # The kernel hands the connection to one of the two: each is asked in turn.
                for _ in range(int(WAIT / 0.02)):
                    server = first.accept(timeout=0.01) or second.accept(timeout=0.01)
                    if server is not None:
                        break
                else:
                    pytest.fail("neither service accepted the connection")
                with server:
                    assert server.recv(timeout=WAIT) == {"n": 1}


@pytest.mark.timeout(20)
def test_close_of_a_spawned_service_returns_with_its_port_free(poll, timer):
    # Issue 15, item 10: the listening socket is closed on the poll thread; close() waits for it.
    for _ in range(20):
        svc = links.Svc.bind("127.0.0.1:0", protocol=links.Protocol, poll_handler=poll, timer=timer)
        port = svc.local_addr[1]
        svc.into_sender_with_spawned_recver()
        svc.close()
        again = links.Svc.bind(f"127.0.0.1:{port}", protocol=links.Protocol, poll_handler=poll, timer=timer)
        again.close()


@pytest.mark.timeout(20)
def test_shutdown_from_a_callback_is_refused_and_changes_nothing():
    # Issue 15, item 11: refused before the default runtime is swapped out (no orphan threads).
    raised = []
    done = threading.Event()

    class Shutter(links.Callback):
        def on_recv(self, con_id, msg):
            try:
                links.shutdown()
            except RuntimeError as e:
                raised.append(e)
            done.set()

    poll = links.default_poll_handler()
    with links.Svc.bind("127.0.0.1:0", protocol=links.Protocol, callback=Shutter()) as svc:
        svc.into_sender_with_spawned_recver()
        with links.Clt.connect(f"127.0.0.1:{svc.local_addr[1]}", protocol=links.Protocol, timeout=5.0) as clt:
            clt.send(b"now")
            assert done.wait(5.0)
    assert len(raised) == 1
    assert links.default_poll_handler() is poll  # still the default: nothing was swapped out


@pytest.mark.timeout(20)
def test_a_connection_is_in_the_pool_before_its_first_message_is_dispatched(poll, timer):
    # Issue 15, item 9: answering a connection's first message with send_to(con_id) from the
    # callback must find it in the pool (its receiver used to be serviced before it joined).
    class Json(links.Protocol):
        framer = links.LengthPrefixFramer(header_size=4)
        messenger = links.JsonMessenger()

    class Answer(links.Callback):
        def on_recv(self, con_id, msg):
            svc.send_to(con_id, {"re": msg["hi"]})

    with links.Svc.bind("127.0.0.1:0", protocol=Json, callback=Answer(), poll_handler=poll, timer=timer) as svc:
        addr = f"127.0.0.1:{svc.local_addr[1]}"
        clients = [links.Clt.connect(addr, protocol=Json, timer=timer, timeout=5.0) for _ in range(3)]
        try:
            for i, clt in enumerate(clients):  # each first message waits in its socket...
                clt.send({"hi": i})
            svc.into_sender_with_spawned_recver()  # ...and is dispatched as its connection is accepted
            for i, clt in enumerate(clients):
                assert clt.recv(timeout=5.0) == {"re": i}
        finally:
            for clt in clients:
                clt.close()


@pytest.mark.timeout(20)
def test_a_round_robin_send_on_the_poll_thread_never_waits_for_the_pool(poll, timer):
    # Issue 15, item 9: on the poll thread an empty pool cannot fill (only that thread adds
    # to it): the send answers WOULD_BLOCK at once instead of waiting for ever.
    outcome = []
    done = threading.Event()

    def tick():
        outcome.append(svc.send({"x": 1}))  # timeout=None, on the poll thread, empty pool
        done.set()

    with links.Svc.bind("127.0.0.1:0", protocol=links.Protocol, poll_handler=poll, timer=timer) as svc:
        svc.into_sender_with_spawned_recver()
        poll.call_soon(tick)
        assert done.wait(5.0)
    assert outcome == [links.SendStatus.WOULD_BLOCK]


@pytest.mark.parametrize(
    "setting",
    [{"stall_timeout": 0}, {"stall_timeout": float("nan")}, {"max_outbound": -1}, {"max_outbound": 1.5},
     {"handshake_timeout": 0}, {"handshake_timeout": float("nan")}, {"idle_timeout": -1.0}],
    ids=lambda setting: f"{next(iter(setting))}={next(iter(setting.values()))}",
)  # fmt: skip
def test_write_and_deadline_settings_that_cannot_work_are_refused_before_binding(setting):
    name = next(iter(setting))
    with pytest.raises(ValueError, match=name):
        links.Svc.bind("127.0.0.1:0", protocol=links.Protocol, **setting)
    if name in ("stall_timeout", "max_outbound"):
        with pytest.raises(ValueError, match=name):  # before any socket opens: nothing listens there
            links.Clt.connect("127.0.0.1:9", protocol=links.Protocol, **setting)


@pytest.mark.timeout(20)
def test_close_from_another_thread_ends_a_wait_in_accept(poll, timer):
    svc = links.Svc.bind("127.0.0.1:0", protocol=Json, poll_handler=poll, timer=timer)
    waiting, raised = waiting_call(svc.accept)
    svc.close()
    waiting.join(WAIT)
    assert not waiting.is_alive()
    assert [type(e) for e in raised] == [links.ClosedError]
