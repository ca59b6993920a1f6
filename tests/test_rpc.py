"""links.rpc end to end on loopback: plain, TLS, a resumable session cut by a fault proxy,
reconnect cuts, a mux channel, either side calling, executors and future-returning handlers,
deadlines, cancellation, close, max_in_flight, many threads pipelining, and the generic
correlation layer over a protocol of one's own."""

from __future__ import annotations

import threading
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager

import pytest

import links
import links.rpc
from helpers import Json, errors_in_threads
from helpers_tls import tls_contexts
from links.rpc import CallIndeterminate, CallTimeout, InFlightLimit, RemoteError
from links.session import Resumable
from links.testing._proxy import FaultProxy

WAIT = 5.0
FAST = links.Backoff(initial=0.005, maximum=0.05, factor=2.0, jitter=0.1)
SESSION = {"heartbeat_interval": 0.05, "dead_after": 40}


class Held:
    """Handlers whose replies the test releases: ``hold(key)`` returns a future, completed by
    ``release(key, value)``; how many times each key was asked for is counted."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self.futures: dict = {}
        self.asked: dict = {}

    def hold(self, key):
        future: Future = Future()
        with self._cond:
            self.futures[key] = future
            self.asked[key] = self.asked.get(key, 0) + 1
            self._cond.notify_all()
        return future

    def wait_for(self, n: int) -> bool:
        with self._cond:
            return self._cond.wait_for(lambda: len(self.futures) >= n, WAIT)

    def release(self, key, value) -> None:
        with self._cond:
            future = self.futures[key]
        future.set_result(value)


def make_server(**kwargs) -> tuple[links.rpc.Server, Held]:
    server = links.rpc.Server(**kwargs)
    held = Held()

    @server.method
    def add(a, b):
        return a + b

    @server.method
    def fail(message):
        raise ValueError(message)

    server.add("hold", held.hold)
    server.add("echo", lambda x: x)
    server.add("big", lambda n: "x" * n)
    server.add("unsendable", lambda: object())
    return server, held


@contextmanager
def service(poll, timer, **kwargs):
    server_kwargs = {k: kwargs.pop(k) for k in ("executor", "max_in_flight", "max_running") if k in kwargs}
    server, held = make_server(**server_kwargs)
    with links.rpc.serve("127.0.0.1:0", server, poll_handler=poll, timer=timer, **kwargs) as svc:
        yield svc, server, held


def connect(addr, poll, timer, **kwargs) -> links.rpc.Peer:
    port = addr[1] if isinstance(addr, tuple) else addr.local_addr[1]
    return links.rpc.connect(f"127.0.0.1:{port}", poll_handler=poll, timer=timer, timeout=WAIT, **kwargs)


# -- the basics ---------------------------------------------------------------------------------


def test_call_call_async_and_notify(poll, timer):
    notified = threading.Event()
    with service(poll, timer) as (svc, server, _):
        server.add("note", lambda text: notified.set())
        with connect(svc, poll, timer) as rpc:
            assert rpc.call("add", 2, 3, timeout=WAIT) == 5
            assert rpc.call_async("add", 1, 1, timeout=WAIT).result(WAIT) == 2
            assert rpc.call("echo", {"a": [1, b"\x00", None, 1.5]}) == {"a": [1, b"\x00", None, 1.5]}
            assert rpc.notify("note", "hi") is links.SendStatus.COMPLETED
            assert notified.wait(WAIT)
            assert rpc.in_flight == 0


def test_a_handler_that_raises_gives_a_remote_error_with_its_type_and_message(poll, timer):
    with service(poll, timer) as (svc, _, _), connect(svc, poll, timer) as rpc:
        with pytest.raises(RemoteError) as e:
            rpc.call("fail", "no way", timeout=WAIT)
        assert (e.value.type, e.value.message, e.value.error) == ("ValueError", "no way", "ValueError: no way")
        assert rpc.call("add", 1, 2, timeout=WAIT) == 3  # the connection stayed


def test_an_unknown_method_gets_an_error_reply_and_the_connection_stays(poll, timer):
    with service(poll, timer) as (svc, _, _), connect(svc, poll, timer) as rpc:
        with pytest.raises(RemoteError) as e:
            rpc.call("nope", timeout=WAIT)
        assert e.value.type == "NoSuchMethod" and "nope" in e.value.message
        assert rpc.call("add", 1, 2, timeout=WAIT) == 3


def test_what_msgpack_cannot_encode_fails_at_the_caller_or_as_an_error_reply(poll, timer):
    with service(poll, timer) as (svc, _, _), connect(svc, poll, timer) as rpc:
        with pytest.raises(TypeError):
            rpc.call("echo", object(), timeout=WAIT)
        assert rpc.in_flight == 0  # its id was given back
        with pytest.raises(RemoteError) as e:
            rpc.call("unsendable", timeout=WAIT)
        assert e.value.type == "EncodeError"


def test_call_many_writes_a_batch_and_gives_a_future_per_call(poll, timer):
    with service(poll, timer) as (svc, _, _), connect(svc, poll, timer, max_in_flight=100) as rpc:
        futures = rpc.call_many([("add", (i, i)) for i in range(100)], timeout=WAIT)
        assert [f.result(WAIT) for f in futures] == [2 * i for i in range(100)]
        with pytest.raises(TypeError):
            rpc.call_many([("add", (1, 1)), ("echo", (object(),))])
        with pytest.raises(ValueError, match="max_in_flight"):
            rpc.call_many([("add", (1, 1))] * 101)
        assert rpc.in_flight == 0


def test_a_call_over_max_frame_size_is_refused_at_the_caller(poll, timer):
    with service(poll, timer) as (svc, _, _), connect(svc, poll, timer, max_frame_size=1000) as rpc:
        with pytest.raises(links.FrameTooLarge):
            rpc.call("echo", "x" * 2000, timeout=WAIT)
        assert rpc.in_flight == 0 and rpc.call("echo", "small", timeout=WAIT) == "small"


def test_a_result_over_max_frame_size_is_an_error_reply_and_the_others_go_out(poll, timer):
    with service(poll, timer) as (svc, _, _), connect(svc, poll, timer, max_frame_size=1 << 21) as rpc:
        futures = rpc.call_many([("echo", ("small",)), ("big", (1 << 20,)), ("echo", ("also small",))])
        assert futures[0].result(WAIT) == "small" and futures[2].result(WAIT) == "also small"
        with pytest.raises(RemoteError) as e:
            futures[1].result(WAIT)
        assert e.value.type == "EncodeError" and "max_frame_size" in e.value.message


def test_a_failing_notification_is_logged_on_either_thread(logs, poll, timer):
    with ThreadPoolExecutor(1) as pool, service(poll, timer, executor=pool) as (svc, _, _):
        with connect(svc, poll, timer) as rpc:
            rpc.notify("fail", "quietly")
            entry = logs.expect("rpc.notification_failed")
            assert entry["method"] == "fail" and "quietly" in entry["error"]
    with service(poll, timer) as (svc, _, _), connect(svc, poll, timer) as rpc:
        rpc.notify("fail", "inline")
        logs.expect("rpc.notification_failed", count=2)


def test_a_peer_serves_one_connection_a_service_takes_server_protocol(logs, poll, timer):
    peer = links.rpc.Peer(server=make_server()[0])
    with links.Svc.bind("127.0.0.1:0", protocol=peer.protocol, poll_handler=poll, timer=timer) as svc:
        svc.into_sender_with_spawned_recver()
        with connect(svc, poll, timer) as first:
            assert first.call("add", 1, 1, timeout=WAIT) == 2
            with pytest.raises(links.LinksError):
                with connect(svc, poll, timer) as second:
                    second.call("add", 1, 1, timeout=WAIT)


def test_many_threads_pipelining_get_their_own_results(poll, timer):
    with service(poll, timer) as (svc, _, _), connect(svc, poll, timer) as rpc:

        def work(t: int) -> None:
            futures = [(i, rpc.call_async("add", t, i, timeout=WAIT)) for i in range(300)]
            for i in range(100):
                assert rpc.call("add", t * 1000, i, timeout=WAIT) == t * 1000 + i
            for i, future in futures:
                assert future.result(WAIT) == t + i

        errors = errors_in_threads(work, 8, WAIT * 2)
        assert not errors and rpc.in_flight == 0


# -- handlers: poll thread, futures, executors; either side calling -------------------------------


def test_a_handler_future_replies_when_done_without_holding_other_calls_back(poll, timer):
    with service(poll, timer) as (svc, _, held), connect(svc, poll, timer) as rpc:
        slow = rpc.call_async("hold", "k", timeout=WAIT)
        assert held.wait_for(1)
        assert rpc.call("add", 1, 1, timeout=WAIT) == 2  # answered while "hold" is pending
        assert not slow.done()
        held.release("k", "done")
        assert slow.result(WAIT) == "done"


def test_blocking_handlers_on_an_executor_run_side_by_side(poll, timer):
    gate = threading.Event()
    with ThreadPoolExecutor(4) as pool, service(poll, timer, executor=pool) as (svc, server, _):
        server.add("wait", lambda: gate.wait(WAIT))
        with connect(svc, poll, timer) as rpc:
            blocked = rpc.call_async("wait", timeout=WAIT)
            assert rpc.call("add", 2, 2, timeout=WAIT) == 4  # the poll thread was never blocked
            gate.set()
            assert blocked.result(WAIT) is True
            with pytest.raises(RemoteError):
                rpc.call("fail", "x", timeout=WAIT)


def test_work_queued_on_the_executor_per_connection_is_bounded_by_max_running(poll, timer):
    gate = threading.Event()
    with ThreadPoolExecutor(1) as pool, service(poll, timer, executor=pool, max_running=2) as (svc, server, _):
        server.add("wait", lambda: gate.wait(WAIT))
        with connect(svc, poll, timer) as rpc:
            first, second = rpc.call_async("wait"), rpc.call_async("wait")  # one runs, one queued
            with pytest.raises(RemoteError) as e:
                rpc.call("wait", timeout=WAIT)
            assert e.value.type == "Busy"
            gate.set()
            assert first.result(WAIT) is True and second.result(WAIT) is True
            assert rpc.call("add", 1, 1, timeout=WAIT) == 2  # room again


def test_the_server_calls_its_client_back_over_the_same_connection(poll, timer):
    client_side = links.rpc.Server({"whoami": lambda: "client"})
    with service(poll, timer) as (svc, server, _), connect(svc, poll, timer, server=client_side) as rpc:
        assert rpc.call("add", 1, 1, timeout=WAIT) == 2  # the server's peer is up by now
        (peer,) = server.peers()
        assert server.peer(peer.con_id) is peer
        assert peer.call("whoami", timeout=WAIT) == "client"
        assert peer.call_async("whoami", timeout=WAIT).result(WAIT) == "client"


def test_a_blocking_call_on_the_poll_thread_is_refused_and_call_async_works_there(poll, timer):
    client_side = links.rpc.Server({"twice": lambda x: 2 * x})
    with service(poll, timer) as (svc, server, _):

        def relay(x):  # runs on the server's poll thread: it calls the client back
            peer = server.peers()[0]
            with pytest.raises(RuntimeError, match="call_async"):
                peer.call("twice", x)
            return peer.call_async("twice", x, timeout=WAIT)

        server.add("relay", relay)
        with connect(svc, poll, timer, server=client_side) as rpc:
            assert rpc.call("relay", 21, timeout=WAIT) == 42


# -- deadlines, cancellation, limits ----------------------------------------------------------------


def test_a_timeout_retires_the_call_and_its_late_reply_is_dropped(logs, poll, timer):
    with service(poll, timer) as (svc, _, held), connect(svc, poll, timer) as rpc:
        with pytest.raises(CallTimeout) as e:
            rpc.call("hold", "late", timeout=0.05)
        assert isinstance(e.value, TimeoutError) and rpc.in_flight == 0
        async_one = rpc.call_async("hold", "late-async", timeout=0.05)
        with pytest.raises(CallTimeout):
            async_one.result(WAIT)
        assert held.wait_for(2)
        held.release("late", "too late")
        held.release("late-async", "too late")
        late = logs.expect("rpc.late_reply", count=2)
        assert late["con_id"] == str(rpc.con_id) and isinstance(late["msgid"], int) and late["log_level"] == "debug"
        assert rpc.call("echo", "mine", timeout=WAIT) == "mine"  # never another call's reply
        assert not logs.matching("rpc.unknown_reply")


def test_cancel_retires_the_call(logs, poll, timer):
    with service(poll, timer) as (svc, _, held), connect(svc, poll, timer) as rpc:
        future = rpc.call_async("hold", "c")
        assert held.wait_for(1)
        assert future.cancel() and rpc.in_flight == 0
        held.release("c", 1)
        logs.expect("rpc.late_reply")


def test_max_in_flight_waits_or_refuses_at_once(poll, timer):
    with service(poll, timer) as (svc, _, held), connect(svc, poll, timer, max_in_flight=2) as rpc:
        first, second = rpc.call_async("hold", 1), rpc.call_async("hold", 2)
        with pytest.raises(InFlightLimit):
            rpc.call("add", 1, 1, timeout=0)
        with pytest.raises(InFlightLimit):
            rpc.call_async("add", 1, 1, timeout=0)
        with pytest.raises(CallTimeout, match="not sent"):
            rpc.call("add", 1, 1, timeout=0.05)
        results: list = []
        waiting = threading.Thread(target=lambda: results.append(rpc.call("add", 1, 1)))
        waiting.start()
        assert held.wait_for(2)
        held.release(1, "one")
        waiting.join(WAIT)
        assert results == [2] and first.result(WAIT) == "one"
        held.release(2, "two")
        assert second.result(WAIT) == "two"


# -- the end of a connection ------------------------------------------------------------------------


def test_closing_fails_every_pending_call_at_once_with_closed_error(poll, timer):
    with service(poll, timer) as (svc, _, held):
        rpc = connect(svc, poll, timer)
        futures = [rpc.call_async("hold", i) for i in range(5)]
        assert held.wait_for(5)
        blocked: list = []
        thread = threading.Thread(target=lambda: blocked.append(pytest.raises(links.ClosedError, rpc.call, "hold", 9)))
        thread.start()
        assert held.wait_for(6)
        rpc.close()
        thread.join(WAIT)
        for future in futures:
            assert isinstance(future.exception(WAIT), links.ClosedError)
        assert blocked and rpc.in_flight == 0
        with pytest.raises(links.ClosedError):
            rpc.call("add", 1, 1)


def test_the_server_going_away_fails_pending_calls_with_broken_error(poll, timer):
    with service(poll, timer) as (svc, _, held):
        rpc = connect(svc, poll, timer)
        futures = [rpc.call_async("hold", i) for i in range(3)]
        assert held.wait_for(3)
    for future in futures:
        error = future.exception(WAIT)
        assert isinstance(error, links.BrokenError) and not isinstance(error, CallIndeterminate)
    with pytest.raises(links.BrokenError):
        rpc.call("add", 1, 1)
    rpc.close()


def test_a_cut_with_reconnect_alone_makes_pending_calls_indeterminate(logs, poll, timer):
    with service(poll, timer) as (svc, _, held), FaultProxy(svc.local_addr) as proxy:
        with connect(proxy.addr, poll, timer, reconnect=FAST) as rpc:
            pending = rpc.call_async("hold", "x")
            assert held.wait_for(1)
            assert proxy.reset() == 1
            error = pending.exception(WAIT)
            assert isinstance(error, CallIndeterminate) and isinstance(error, links.BrokenError)
            logs.expect("clt.reconnected")
            assert rpc.call("add", 2, 2, timeout=WAIT) == 4  # the same Peer carries on


def test_over_a_resumable_session_pending_calls_survive_cuts_and_complete_exactly_once(logs, poll, timer):
    with service(poll, timer, session=Resumable(**SESSION)) as (svc, _, held), FaultProxy(svc.local_addr) as proxy:
        with connect(proxy.addr, poll, timer, reconnect=FAST, session=Resumable(**SESSION)) as rpc:
            before = [rpc.call_async("hold", i, timeout=WAIT * 2) for i in range(20)]
            assert held.wait_for(20)
            assert proxy.reset() == 1
            during = [rpc.call_async("add", i, i, timeout=WAIT * 2) for i in range(20)]  # sent while cut
            logs.expect("session.resumed")
            for i in range(10):
                held.release(i, i)  # replies made after the resume
            assert proxy.drop() == 1
            for i in range(10, 20):
                held.release(i, i)  # replies made while cut again: replayed on resume
            logs.expect("session.resumed", count=2)
            assert [f.result(WAIT) for f in before] == list(range(20))
            assert [f.result(WAIT) for f in during] == [2 * i for i in range(20)]
            assert set(held.asked.values()) == {1}  # every request ran once
            assert rpc.call("add", 1, 1, timeout=WAIT) == 2


# -- every kind of connection ------------------------------------------------------------------------


def test_calls_over_tls(poll, timer):
    server_ctx, client_ctx = tls_contexts()
    with service(poll, timer, tls=server_ctx) as (svc, _, _), connect(svc, poll, timer, tls=client_ctx) as rpc:
        assert rpc.call("add", 20, 22, timeout=WAIT) == 42
        assert [rpc.call_async("add", i, 0).result(WAIT) for i in range(50)] == list(range(50))


def test_calls_over_mux_channels(poll, timer):
    with service(poll, timer, mux=True) as (svc, _, _):
        mux = links.mux.connect(f"127.0.0.1:{svc.local_addr[1]}", poll_handler=poll, timer=timer, timeout=WAIT)
        peers, senders = [], []
        for _ in range(3):
            peer = links.rpc.Peer()
            channel = mux.open(protocol=peer.protocol)
            senders.append(channel.into_sender_with_spawned_recver())
            peers.append(peer)
        futures = [(n, i, peer.call_async("add", n, i, timeout=WAIT)) for i in range(50) for n, peer in enumerate(peers)]
        assert all(f.result(WAIT) == n + i for n, i, f in futures)
        for sender in senders:
            sender.close()
        mux.close()


def test_a_peer_over_a_clt_made_by_hand_with_split_refs(poll, timer):
    with service(poll, timer) as (svc, _, _):
        peer = links.rpc.Peer()
        clt = links.Clt.connect(f"127.0.0.1:{svc.local_addr[1]}", protocol=peer.protocol, poll_handler=poll, timer=timer)
        with clt.into_sender_with_spawned_recver_ref() as sender:
            assert peer.call("add", 3, 4, timeout=WAIT) == 7
            assert sender.is_connected()


# -- the generic correlation layer ---------------------------------------------------------------


def test_a_correlator_matches_replies_of_a_protocol_of_ones_own(logs, poll, timer):
    pending: list = []

    class Answers(Json):
        def send_reply(self, msg, con):  # answers in reverse order, two at a time
            pending.append({"re": msg["id"], "sum": msg["a"] + msg["b"]})
            if len(pending) == 2:
                con.send_many(reversed(pending))
                pending.clear()

    with links.Svc.bind("127.0.0.1:0", protocol=Answers, poll_handler=poll, timer=timer) as svc:
        svc.into_sender_with_spawned_recver()
        senders: list = []
        correlator = links.rpc.Correlator(
            lambda msg, timeout: senders[0].send(msg, timeout),
            request_id=lambda m: m["id"], reply_id=lambda m: m.get("re"), timer=timer,
        )  # fmt: skip
        clt = links.Clt.connect(
            f"127.0.0.1:{svc.local_addr[1]}", protocol=Json, callback=correlator.callback, poll_handler=poll, timer=timer
        )  # fmt: skip
        with clt.into_sender_with_spawned_recver() as sender:
            senders.append(sender)
            first = correlator.call_async({"id": "a1", "a": 1, "b": 2}, timeout=WAIT)
            assert correlator.call({"id": "a2", "a": 3, "b": 4}, timeout=WAIT) == {"re": "a2", "sum": 7}
            assert first.result(WAIT) == {"re": "a1", "sum": 3}
            with pytest.raises(CallTimeout):
                correlator.call({"id": "a3", "a": 0, "b": 0}, timeout=0.05)  # its partner is not sent yet
            assert correlator.call_async({"id": "a4", "a": 1, "b": 0}).result(WAIT) == {"re": "a4", "sum": 1}
            logs.expect("rpc.late_reply")  # a3's reply came with a4's, after a3 timed out
            with pytest.raises(links.rpc.DuplicateId):
                correlator.call_async({"id": "a5", "a": 0, "b": 0})
                correlator.call_async({"id": "a5", "a": 0, "b": 0})
            assert correlator.fail_all(links.BrokenError("gone"), end=True) == 1
            with pytest.raises(links.BrokenError):
                correlator.call({"id": "a6", "a": 0, "b": 0})


def test_a_correlator_fed_by_a_protocol_fails_its_pending_calls_when_the_connection_ends(poll, timer):
    class Silent(Json):  # takes requests, never answers
        pass

    box: list = []

    class Calling(Json):
        def on_recv(self, msg):
            box[0].feed(msg)

        def on_disconnect(self, con_id):
            box[0].fail_all(lambda: links.BrokenError(f"{con_id} ended", "peer_closed"), end=True)

    with links.Svc.bind("127.0.0.1:0", protocol=Silent, poll_handler=poll, timer=timer) as svc:
        svc.into_sender_with_spawned_recver()
        clt = links.Clt.connect(f"127.0.0.1:{svc.local_addr[1]}", protocol=Calling, poll_handler=poll, timer=timer)
        sender = clt.into_sender_with_spawned_recver()
        box.append(links.rpc.Correlator(sender.send, request_id=lambda m: m["id"], reply_id=lambda m: m.get("re")))
        pending = [box[0].call_async({"id": i}) for i in range(3)]
    for future in pending:  # the service closed: every call failed at once
        assert isinstance(future.exception(WAIT), links.BrokenError)
    with pytest.raises(links.BrokenError):
        box[0].call({"id": 9})
    sender.close()


def test_random_timeouts_cancels_and_reply_orders_never_cross_calls(poll, timer):
    # Replies come after random delays (in any order); callers give random timeouts and cancel
    # some calls: each call ends once, with its own result or its own timeout or cancel.
    import random

    server = links.rpc.Server()

    def delayed(x, delay):
        future: Future = Future()

        def answer():
            future.set_result(x)
            return links.TaskStatus.TERMINATE

        timer.schedule("delayed reply", 1.0, answer, delay=delay)
        return future

    server.add("delayed", delayed)
    with links.rpc.serve("127.0.0.1:0", server, poll_handler=poll, timer=timer) as svc, connect(svc, poll, timer) as rpc:

        def work(seed: int) -> None:
            rng = random.Random(seed)
            for i in range(60):
                x, delay, timeout = (seed, i), rng.uniform(0, 0.02), rng.choice([None, 0.005, 0.01, 0.05])
                if rng.random() < 0.5:
                    try:
                        assert tuple(rpc.call("delayed", x, delay, timeout=timeout)) == x
                    except CallTimeout:
                        assert timeout is not None
                    continue
                future = rpc.call_async("delayed", x, delay, timeout=timeout)
                if rng.random() < 0.3 and future.cancel():
                    continue
                try:
                    assert tuple(future.result(WAIT)) == x
                except CallTimeout:
                    assert timeout is not None

        errors = errors_in_threads(work, 6, WAIT * 4)
        assert not errors, errors
        assert rpc.in_flight == 0


def test_connect_call_close_cycles_leave_no_fd_thread_or_peer_behind(poll, timer):
    import psutil

    server, _ = make_server()
    process = psutil.Process()
    with links.rpc.serve("127.0.0.1:0", server, poll_handler=poll, timer=timer) as svc:

        def cycle() -> None:
            with connect(svc, poll, timer) as rpc:
                assert rpc.call_async("add", 1, 1, timeout=WAIT).result(WAIT) == 2

        cycle()
        poll.sync()
        fds, threads = process.num_fds(), threading.active_count()
        for _ in range(200):
            cycle()
        for _ in range(100):  # the server drops each connection on its poll thread, a moment later
            poll.sync()
            if not server.peers():
                break
        assert server.peers() == []
        assert process.num_fds() == fds and threading.active_count() == threads
