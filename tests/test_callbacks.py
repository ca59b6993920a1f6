"""Callbacks: chaining, counting, storing, logging and dispatch, as an application uses them."""

from __future__ import annotations

import threading
from dataclasses import dataclass

import pytest
from structlog.testing import capture_logs

import links

CON = links.ConId(links.Role.INITIATOR, "clt", ("127.0.0.1", 1), ("127.0.0.1", 2))


def test_chain_calls_each_callback_in_order_and_flattens():
    calls = []

    class Tag(links.Callback):
        def __init__(self, tag):
            self.tag = tag

        def on_recv(self, con_id, msg):
            calls.append((self.tag, "recv", msg))

        def on_sent(self, con_id, msg):
            calls.append((self.tag, "sent", msg))

    chain = Tag("a") + Tag("b") + Tag("c")
    assert isinstance(chain, links.ChainCallback) and len(chain.callbacks) == 3  # flat, not nested
    chain.on_recv(CON, 1)
    chain.on_sent(CON, 2)
    assert calls == [("a", "recv", 1), ("b", "recv", 1), ("c", "recv", 1), ("a", "sent", 2), ("b", "sent", 2), ("c", "sent", 2)]


def test_counter_counts_both_directions_and_wakes_a_waiter():
    counter = links.CounterCallback()
    assert not counter.wait_recv(1, timeout=0)
    waiting = threading.Event()
    result = []

    def wait():
        waiting.set()
        result.append(counter.wait_recv(3, timeout=5.0))

    t = threading.Thread(target=wait)
    t.start()
    assert waiting.wait(5.0)
    for i in range(3):
        counter.on_recv(CON, i)
    counter.on_sent(CON, "x")
    t.join(5.0)
    assert result == [True]
    assert (counter.recv_count, counter.sent_count) == (3, 1)
    assert counter.wait_sent(1, timeout=0)


def test_store_keeps_order_and_direction_and_find_recv_waits_for_a_match():
    store = links.StoreCallback()
    store.on_sent(CON, "out")
    store.on_recv(CON, {"n": 1})
    assert store.recv_msgs() == [{"n": 1}] and store.sent_msgs() == ["out"]
    assert [r.direction for r in store.records] == ["sent", "recv"]
    assert store.find_recv(lambda m: m == {"n": 2}, timeout=0.01) is None  # not there: None after the timeout
    later = threading.Timer(0.05, store.on_recv, args=(CON, {"n": 2}))
    later.start()
    assert store.find_recv(lambda m: m == {"n": 2}, timeout=5.0) == {"n": 2}
    later.join()
    assert store.wait_recv_count(2, timeout=0)
    store.clear()
    assert len(store) == 0


@pytest.mark.parametrize(
    "wait",
    [
        lambda t: links.CounterCallback().wait_recv(1, t),
        lambda t: links.StoreCallback().find_recv(lambda m: True, t),
        lambda t: links.StoreCallback().wait_recv_count(1, t),
    ],
    ids=["CounterCallback.wait_recv", "StoreCallback.find_recv", "StoreCallback.wait_recv_count"],
)
def test_a_wait_for_nan_seconds_is_refused_not_spun_for_ever(wait):
    # Condition.wait_for(nan) never sleeps and never times out: a spinning hang.
    with pytest.raises(ValueError, match="nan"):
        wait(float("nan"))
    with pytest.raises(TypeError, match="timeout"):
        wait("1")
    assert wait(0) in (False, None)  # a real timeout still times out


def test_logger_logs_each_message_with_its_connection():
    with capture_logs() as logs:
        links.LoggerCallback().on_recv(CON, {"n": 1})
        links.LoggerCallback(level="debug").on_sent(CON, b"x")
    assert logs == [
        {"event": "callback.recv", "con_id": str(CON), "msg": {"n": 1}, "log_level": "info"},
        {"event": "callback.sent", "con_id": str(CON), "msg": b"x", "log_level": "debug"},
    ]


@dataclass(frozen=True)
class Order:
    qty: int


@dataclass(frozen=True)
class Cancel:
    order_id: int


def test_dispatch_routes_by_type_and_predicate_and_falls_back():
    seen = []
    router = links.DispatchCallback(otherwise=lambda con_id, msg: seen.append(("other", msg)))

    @router.on(Order)
    def order(con_id, msg):
        seen.append(("order", msg))

    @router.on(lambda m: isinstance(m, Order) and m.qty > 100)
    def big(con_id, msg):
        seen.append(("big", msg))

    @router.on(Cancel)
    def cancel(con_id, msg):
        seen.append(("cancel", msg))

    for msg in (Order(5), Order(500), Cancel(7), "noise"):
        router.on_recv(CON, msg)
    assert seen == [
        ("order", Order(5)),
        ("order", Order(500)),
        ("big", Order(500)),
        ("cancel", Cancel(7)),
        ("other", "noise"),
    ]
    assert order(CON, Order(1)) is None  # the decorator hands the function back unchanged


def test_dev_null_ignores_everything():
    cb = links.DevNullCallback()
    assert cb.on_recv(CON, 1) is None and cb.on_sent(CON, 2) is None


@pytest.mark.parametrize("spawned", [False, True])
def test_callbacks_see_real_traffic_in_both_directions(poll, timer, spawned):
    class Chat(links.Protocol):
        framer = links.LengthPrefixFramer(4)
        messenger = links.JsonMessenger()

    store, counter = links.StoreCallback(), links.CounterCallback()
    with links.Svc.bind("127.0.0.1:0", protocol=Chat, poll_handler=poll, timer=timer) as svc:
        svc_sender = svc.into_sender_with_spawned_recver()
        clt = links.Clt.connect(f"127.0.0.1:{svc.local_addr[1]}", protocol=Chat, callback=store + counter, poll_handler=poll, timer=timer)
        with clt:
            clt.send({"q": 1})
            assert svc_sender.send({"a": 1}, timeout=5.0) is links.SendStatus.COMPLETED
            if spawned:
                clt.into_sender_with_spawned_recver()
                assert counter.wait_recv(1, timeout=5.0)
            else:
                assert clt.recv(timeout=5.0) == {"a": 1}
            assert store.sent_msgs() == [{"q": 1}] and store.find_recv(timeout=5.0) == {"a": 1}
            assert (counter.recv_count, counter.sent_count) == (1, 1)
            assert all(r.con_id == clt.con_id for r in store.records)
