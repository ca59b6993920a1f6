"""A waiting ``call`` borrows the reading of its connection from the poll thread (links._lease):
it reads and dispatches there, each call still gets its own reply, what arrives meanwhile is
handled (on the caller's thread), the reading goes back on a reply, a timeout, a close, a cut
or a poll thread shutting down, TLS included, and the poll thread does not spin meanwhile."""

from __future__ import annotations

import os
import select
import socket
import struct
import threading
from concurrent.futures import Future
from contextlib import contextmanager

import msgpack
import pytest

import links
import links.rpc
import links.session
from helpers import PollPasses, epoll_interest, errors_in_threads
from helpers_lease import Lends
from helpers_tls import tls_contexts
from links.rpc import CallTimeout

WAIT = 5.0


@pytest.fixture
def lends(monkeypatch):
    return Lends(monkeypatch)


def make_server(**kwargs) -> tuple[links.rpc.Server, dict]:
    server = links.rpc.Server(**kwargs)
    held: dict[str, Future] = {}
    ready = threading.Condition()

    def hold(key):
        future: Future = Future()
        with ready:
            held[key] = future
            ready.notify_all()
        return future

    server.add("hold", hold)
    server.add("add", lambda a, b: a + b)
    server.add("big", lambda n: "x" * n)
    state = {"held": held, "ready": ready}
    return server, state


def held_future(state: dict, key: str) -> Future:
    with state["ready"]:
        assert state["ready"].wait_for(lambda: key in state["held"], WAIT)
        return state["held"][key]


@contextmanager
def service(poll, timer, **kwargs):
    server, state = make_server(**{k: kwargs.pop(k) for k in ("max_frame_size",) if k in kwargs})
    with links.rpc.serve("127.0.0.1:0", server, poll_handler=poll, timer=timer, **kwargs) as svc:
        yield svc, server, state


def connect(svc, poll, timer, **kwargs) -> links.rpc.Peer:
    return links.rpc.connect(f"127.0.0.1:{svc.local_addr[1]}", poll_handler=poll, timer=timer, timeout=WAIT, **kwargs)


# -- every call its own reply ---------------------------------------------------------------------


def test_sequential_calls_read_their_own_replies(lends, poll, timer):
    with service(poll, timer) as (svc, _, _), connect(svc, poll, timer) as rpc:
        assert [rpc.call("add", i, i) for i in range(300)] == [2 * i for i in range(300)]
        assert lends.count > 0 and lends.active == 0
        assert rpc.call_async("add", 1, 2, timeout=WAIT).result(WAIT) == 3  # the poll thread reads again


def test_many_threads_calling_at_once_each_get_their_own_reply(lends, poll, timer):
    with service(poll, timer) as (svc, _, _), connect(svc, poll, timer) as rpc:

        def work(t: int) -> None:
            futures = [(i, rpc.call_async("add", t, i, timeout=WAIT)) for i in range(50)]
            for i in range(150):
                assert rpc.call("add", t * 1000, i, timeout=WAIT) == t * 1000 + i
            for i, future in futures:
                assert future.result(WAIT) == t + i

        assert not errors_in_threads(work, 6, WAIT * 2)
        assert rpc.in_flight == 0 and lends.count > 0 and lends.active == 0


def test_another_threads_reply_read_by_the_borrower_completes_that_call(lends, poll, timer):
    with service(poll, timer) as (svc, _, state), connect(svc, poll, timer) as rpc:
        assert rpc.call("add", 0, 0, timeout=WAIT) == 0  # the receiver is registered by now
        first = threading.Thread(target=lambda: results.append(rpc.call("hold", "a", timeout=WAIT)))
        results: list = []
        first.start()
        lends.wait_lent()  # the first caller reads; the second waits for it to read its reply
        second = rpc.call_async("hold", "b", timeout=WAIT)
        held_future(state, "b").set_result("B")
        assert second.result(WAIT) == "B"
        held_future(state, "a").set_result("A")
        first.join(WAIT)
        assert results == ["A"]


# -- what arrives while a caller reads ------------------------------------------------------------


def test_notifications_and_calls_from_the_peer_are_handled_on_the_borrowing_thread(lends, poll, timer):
    ran_on: dict[str, int] = {}
    client_side = links.rpc.Server()
    client_side.add("note", lambda text: ran_on.setdefault("note", threading.get_ident()))
    client_side.add("twice", lambda x: ran_on.setdefault("twice", threading.get_ident()) and 2 * x)

    def blocking_call_back():  # a blocking call made where the poll thread's rules hold
        with pytest.raises(RuntimeError):
            rpc.call("add", 1, 1, timeout=WAIT)
        return "refused"

    client_side.add("call_back", blocking_call_back)
    with service(poll, timer) as (svc, server, state), connect(svc, poll, timer, server=client_side) as rpc:
        assert rpc.call("add", 0, 0, timeout=WAIT) == 0  # the server's peer is up by now
        (peer,) = server.peers()

        def from_the_server() -> None:
            lends.wait_lent()
            peer.notify("note", "hi")
            twice = peer.call_async("twice", 21, timeout=WAIT)
            refused = peer.call_async("call_back", timeout=WAIT)
            held_future(state, "k").set_result((twice.result(WAIT), refused.result(WAIT)))

        helper = threading.Thread(target=from_the_server)
        helper.start()
        assert rpc.call("hold", "k", timeout=WAIT) == [42, "refused"]
        helper.join(WAIT)
        assert ran_on == {"note": threading.get_ident(), "twice": threading.get_ident()}


def test_a_reply_bigger_than_one_read_and_tls_records(lends, poll, timer):
    server_ctx, client_ctx = tls_contexts()
    with service(poll, timer, tls=server_ctx) as (svc, _, _), connect(svc, poll, timer, tls=client_ctx) as rpc:
        assert [rpc.call("add", i, 1, timeout=WAIT) for i in range(100)] == list(range(1, 101))
        assert rpc.call("big", 300_000, timeout=WAIT) == "x" * 300_000  # many records, many reads
        assert lends.count > 0 and lends.active == 0
        assert rpc.call_async("big", 70_000, timeout=WAIT).result(WAIT) == "x" * 70_000


def test_a_notification_over_tls_while_a_caller_reads(lends, poll, timer):
    notes: list = []
    client_side = links.rpc.Server({"note": lambda text: notes.append((text, threading.get_ident()))})
    server_ctx, client_ctx = tls_contexts()
    with service(poll, timer, tls=server_ctx) as (svc, server, state):
        with connect(svc, poll, timer, tls=client_ctx, server=client_side) as rpc:
            assert rpc.call("add", 0, 0, timeout=WAIT) == 0
            (peer,) = server.peers()

            def from_the_server() -> None:
                lends.wait_lent()
                peer.notify("note", "x" * 40_000)  # more than one TLS record
                held_future(state, "k").set_result("done")

            helper = threading.Thread(target=from_the_server)
            helper.start()
            assert rpc.call("hold", "k", timeout=WAIT) == "done"
            helper.join(WAIT)
            assert notes == [("x" * 40_000, threading.get_ident())]


# -- giving the reading back ------------------------------------------------------------------------


def test_a_timeout_while_reading_gives_the_reading_back(lends, poll, timer):
    noted = threading.Event()
    client_side = links.rpc.Server({"note": lambda: noted.set()})
    with service(poll, timer) as (svc, server, state), connect(svc, poll, timer, server=client_side) as rpc:
        assert rpc.call("add", 0, 0, timeout=WAIT) == 0
        with pytest.raises(CallTimeout):
            rpc.call("hold", "late", timeout=0.05)
        assert lends.count > 0 and lends.active == 0 and rpc.in_flight == 0
        held_future(state, "late").set_result("too late")  # dropped
        server.peers()[0].notify("note")
        assert noted.wait(WAIT)  # read by the poll thread: nobody is calling now
        assert rpc.call("add", 1, 1, timeout=WAIT) == 2


def test_a_local_close_while_reading_fails_the_call(lends, poll, timer):
    with service(poll, timer) as (svc, _, _):
        rpc = connect(svc, poll, timer)
        assert rpc.call("add", 0, 0, timeout=WAIT) == 0
        closer = threading.Thread(target=lambda: (lends.wait_lent(), rpc.close()))
        closer.start()
        with pytest.raises(links.ClosedError):
            rpc.call("hold", "k", timeout=WAIT)
        closer.join(WAIT)
        assert lends.active == 0


def test_the_peer_closing_while_reading_fails_the_call(lends, poll, timer):
    with service(poll, timer) as (svc, server, state), connect(svc, poll, timer) as rpc:
        assert rpc.call("add", 0, 0, timeout=WAIT) == 0
        (peer,) = server.peers()
        closer = threading.Thread(target=lambda: (lends.wait_lent(), peer.close()))
        closer.start()
        with pytest.raises(links.BrokenError):
            rpc.call("hold", "k", timeout=WAIT)
        closer.join(WAIT)
        with pytest.raises(links.LinksError):
            rpc.call("add", 1, 1, timeout=WAIT)


def test_a_cut_while_reading_fails_the_call(lends, poll, timer):
    with socket.create_server(("127.0.0.1", 0)) as listener:
        rpc = links.rpc.connect(f"127.0.0.1:{listener.getsockname()[1]}", poll_handler=poll, timer=timer, timeout=WAIT)
        raw, _ = listener.accept()
        with rpc, raw:
            poll.sync()  # the receiver is registered by now

            def cut() -> None:
                lends.wait_lent()
                raw.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                raw.close()  # a reset

            cutter = threading.Thread(target=cut)
            cutter.start()
            with pytest.raises(links.BrokenError):
                rpc.call("anything", timeout=WAIT)
            cutter.join(WAIT)
            assert lends.active == 0


def test_a_poll_thread_shutting_down_while_a_caller_reads_fails_the_call(lends, timer):
    server_poll = links.PollHandler(name="server-poll")
    client_poll = links.PollHandler(name="client-poll")
    try:
        with service(server_poll, timer) as (svc, _, _), connect(svc, client_poll, timer) as rpc:
            assert rpc.call("add", 0, 0, timeout=WAIT) == 0
            stopper = threading.Thread(target=lambda: (lends.wait_lent(), client_poll.shutdown()))
            stopper.start()
            with pytest.raises(links.LinksError):
                rpc.call("hold", "k", timeout=WAIT)
            stopper.join(WAIT)
    finally:
        client_poll.shutdown()
        server_poll.shutdown()


def test_calls_over_a_session_are_read_by_the_poll_thread(lends, poll, timer):
    session = {"heartbeat_interval": 0.05, "dead_after": 40}
    with service(poll, timer, session=links.session.Resumable(**session)) as (svc, _, _):
        with connect(svc, poll, timer, session=links.session.Resumable(**session)) as rpc:
            assert [rpc.call("add", i, 1, timeout=WAIT) for i in range(20)] == list(range(1, 21))
    assert lends.count == 0


# -- the poll thread meanwhile ----------------------------------------------------------------------


@pytest.mark.skipif(not os.path.exists("/proc/self/fdinfo"), reason="Linux's /proc tells the epoll interest")
def test_the_poll_thread_does_not_watch_a_borrowed_socket_for_input(lends, poll, timer):
    passes = PollPasses(poll, WAIT)  # before the thread starts
    with service(poll, timer) as (svc, server, state), connect(svc, poll, timer) as rpc:
        assert rpc.call("add", 0, 0, timeout=WAIT) == 0
        fd = rpc._con.transport.fileno()
        epoll_fd = poll._books.epoll.fileno()
        assert epoll_interest(epoll_fd, fd) & select.EPOLLIN
        seen: dict = {}

        def look() -> None:
            lends.wait_lent()
            seen["interest"] = epoll_interest(epoll_fd, fd)
            with connect(svc, poll, timer) as other:  # the poll thread serves others meanwhile
                assert other.call_async("add", 0, 0, timeout=WAIT).result(WAIT) == 0
                before = passes.count
                seen["other"] = [other.call_async("add", i, i, timeout=WAIT).result(WAIT) for i in range(20)]
                seen["passes"] = passes.count - before
            held_future(state, "k").set_result("done")

        helper = threading.Thread(target=look)
        helper.start()
        assert rpc.call("hold", "k", timeout=WAIT) == "done"
        helper.join(WAIT)
        assert not seen["interest"] & select.EPOLLIN and seen["other"] == [2 * i for i in range(20)]
        assert seen["passes"] < 200  # a spinning loop would make thousands: 20 calls take two each
        assert epoll_interest(epoll_fd, fd) & select.EPOLLIN  # given back


def test_borrowing_the_reading_of_a_socket_written_by_the_poll_thread(lends, poll, timer):
    # The poll thread finishes writes owed while a caller reads: its writable interest works.
    big = {"max_frame_size": 1 << 23}
    with service(poll, timer, **big) as (svc, server, state), connect(svc, poll, timer, **big) as rpc:
        assert rpc.call("add", 0, 0, timeout=WAIT) == 0
        (peer,) = server.peers()
        bulk = "y" * (4 << 20)

        def from_the_server() -> None:
            lends.wait_lent()
            echoed = rpc.call_async("echo_len", bulk, timeout=WAIT)  # more than the socket takes at once
            held_future(state, "k").set_result(echoed.result(WAIT))

        server.add("echo_len", len)
        helper = threading.Thread(target=from_the_server)
        helper.start()
        assert rpc.call("hold", "k", timeout=WAIT) == len(bulk)
        helper.join(WAIT)
        assert rpc.call("add", 1, 1, timeout=WAIT) == 2 and peer.in_flight == 0


def test_a_raw_msgpack_peer_answers_a_borrowing_caller(lends, poll, timer):
    with socket.create_server(("127.0.0.1", 0)) as listener:
        with links.rpc.connect(f"127.0.0.1:{listener.getsockname()[1]}", poll_handler=poll, timer=timer, timeout=WAIT) as rpc:
            raw, _ = listener.accept()
            with raw:

                def answer() -> None:
                    unpacker = msgpack.Unpacker()
                    while True:
                        data = raw.recv(65536)
                        if not data:
                            return
                        unpacker.feed(data)
                        for _, msgid, method, params in unpacker:
                            raw.sendall(msgpack.packb([2, "note", []]) + msgpack.packb([1, msgid, None, params[0] * 2]))

                peer = threading.Thread(target=answer)
                peer.start()
                assert [rpc.call("double", i, timeout=WAIT) for i in range(50)] == [2 * i for i in range(50)]
                rpc.close()
                peer.join(WAIT)
        assert lends.count > 0


@pytest.mark.skipif(not os.path.exists("/proc/self/fdinfo"), reason="the stdlib epoll selector (Linux) lends")
def test_a_reset_while_the_borrower_runs_a_handler_is_not_reported_to_the_poll_thread_every_pass(lends, poll, timer):
    # epoll reports errors and hang-ups whatever the interest: while the borrower is busy (here
    # in a handler it dispatched) the poll thread must not be told of the reset on every pass
    # (a spin, holding the interpreter lock from the borrower); the call then fails as it would.
    passes = [0]
    events = poll._poll
    woke = threading.Condition()

    def counted(*args):
        with woke:
            passes[0] += 1
            woke.notify_all()
        return events(*args)

    poll._poll = counted  # before the thread starts: its loop takes it once
    entered, release = threading.Event(), threading.Event()
    ran_on: list[int] = []

    def note() -> None:  # runs on the borrowing caller's thread, and keeps it busy
        ran_on.append(threading.get_ident())
        entered.set()
        release.wait(WAIT)

    client_side = links.rpc.Server({"note": note})
    with socket.create_server(("127.0.0.1", 0)) as listener:
        rpc = links.rpc.connect(
            f"127.0.0.1:{listener.getsockname()[1]}", server=client_side, poll_handler=poll, timer=timer, timeout=WAIT
        )  # fmt: skip
        raw, _ = listener.accept()
        with rpc, raw:
            raw.settimeout(WAIT)
            assert poll.sync(WAIT)
            fd = rpc._con.transport.fileno()
            failed: list[BaseException] = []

            def call() -> None:
                try:
                    rpc.call("hold", timeout=WAIT)
                except links.LinksError as e:
                    failed.append(e)

            caller = threading.Thread(target=call)
            caller.start()
            try:
                assert raw.recv(1 << 16)  # the request
                lends.wait_lent()  # the caller reads its socket now
                raw.sendall(msgpack.packb([2, "note", []]))
                assert entered.wait(WAIT)
                assert ran_on == [caller.ident]  # dispatched by the borrowing caller
                raw.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                raw.close()  # a reset, while the borrower is busy in the handler
                watcher = select.poll()
                watcher.register(fd, 0)  # errors and hang-ups are reported whatever the interest
                assert watcher.poll(int(WAIT * 1000)), "the reset did not reach the socket"
                assert poll.sync(WAIT)  # the poll thread was told of it by now
                before = passes[0]
                for _ in range(20):
                    assert poll.sync(WAIT)
                with woke:  # idle, the poll thread sleeps: a spin makes thousands of passes in this
                    woke.wait_for(lambda: passes[0] > before + 1000, 0.2)
                spent = passes[0] - before
            finally:
                release.set()
                caller.join(WAIT)
            assert spent <= 80, f"{spent} poll passes for 20 commands: the reset is reported on every pass"
            assert len(failed) == 1 and isinstance(failed[0], links.BrokenError), failed
            assert lends.active == 0
