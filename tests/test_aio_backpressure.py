"""Back-pressure from a coroutine that does not read, both ways, and the pieces under it.

* A peer floods a coroutine that never reads: the connection's queue stays bounded (``max_queue``
  plus one read of the poll thread), links stops reading the socket, TCP holds the peer (its
  sends are refused), and the flood resumes, whole and in order, once the coroutine reads.
  Over TCP and over a ``links.mux`` channel (its stream stops granting window; the other
  channels of the same TCP connection carry on).
* ``PollHandler.pause_reading`` on a bare handler: no read while paused, its writer still
  serviced, read again on resume, closed by a shutdown while paused.
* The ``Inbox`` (Sans-I/O) against a model, with hypothesis: order, wake-ups, pause and resume.
"""

from __future__ import annotations

import asyncio
import socket
import threading

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import links
import links.aio
from helpers import WAIT, loop_factories, until
from links.aio._inbox import EMPTY, PAUSE, RESUME, WAKE, Inbox

LOOP_FACTORIES = loop_factories()

MAX_READ = 1 << 18  # the most one read of the poll thread takes (links._core._buffer)
PAD = "x" * 1000


class Chat(links.Protocol):
    framer = links.LengthPrefixFramer(header_size=4, max_frame_size=1 << 20)
    messenger = links.JsonMessenger()


def frame_size(i: int) -> int:
    return 4 + len(Chat.messenger.serialize({"i": i, "pad": PAD}))


def flood(send, start: int, limit: int = 200_000) -> int:
    """Send numbered messages until the peer is held (a send waits 0.2 s for room and gets
    none); the next number. ``limit`` ends a flood that is never held (the test then fails)."""
    i = start
    while i < start + limit:
        if send({"i": i, "pad": PAD}, timeout=0.2) is links.SendStatus.WOULD_BLOCK:
            return i
        i += 1
    return i


async def held_then_resumed(clt: links.aio.AsyncClt, send, max_queue: int) -> None:
    """The scenario, from a flooder thread using ``send`` (a threaded sender's)."""
    loop = asyncio.get_running_loop()
    sent = await loop.run_in_executor(None, flood, send, 0)
    assert sent < 200_000, "the flood was never held: nobody stopped reading"
    bound = max_queue + MAX_READ // frame_size(0) + 1
    assert clt.queued <= bound and clt._bridge.inbox.peak <= bound, (clt.queued, clt._bridge.inbox.peak, bound)
    assert clt._bridge.inbox.paused
    # Reading resumes the flood: everything sent arrives, in order, and more can follow.
    more = asyncio.ensure_future(loop.run_in_executor(None, lambda: [send({"i": sent + k, "pad": PAD}) for k in range(2000)]))
    for i in range(sent + 2000):
        msg = await clt.recv()
        assert msg["i"] == i
    statuses = await more
    assert all(s is links.SendStatus.COMPLETED for s in statuses)
    assert not clt._bridge.inbox.paused and clt.queued == 0


# The loop reads the connections of connect and serve, unless given a poll handler: both paths.
DRIVERS = pytest.mark.parametrize("driver", ["loop", "poll thread"])


@pytest.mark.asyncio
@DRIVERS
async def test_a_flood_into_a_coroutine_that_does_not_read_is_held_and_resumes(driver: str, poll) -> None:
    svc = links.Svc.bind("127.0.0.1:0", protocol=Chat, max_outbound=64 * 1024)
    sender = svc.into_sender_with_spawned_recver()
    try:
        options = {"poll_handler": poll} if driver == "poll thread" else {}
        clt = await links.aio.connect(f"127.0.0.1:{svc.local_addr[1]}", protocol=Chat, timeout=WAIT, max_queue=100,
                                      **options)  # fmt: skip
        assert (type(clt._bridge).__name__ == "LoopBridge") == (driver == "loop")
        await until(lambda: len(svc) == 1, "the service pooled the client")
        await held_then_resumed(clt, sender.send, 100)
        clt.close()
    finally:
        svc.close()


@pytest.mark.asyncio
@DRIVERS
async def test_a_served_connection_that_does_not_read_holds_its_client(driver: str, poll) -> None:
    """The other way: the server's handler does not read; the threaded client is held."""
    conns: list[links.aio.AsyncClt] = []
    ready = asyncio.Event()

    async def handler(conn: links.aio.AsyncClt) -> None:
        conns.append(conn)
        ready.set()
        await asyncio.Event().wait()

    options = {"poll_handler": poll} if driver == "poll thread" else {}
    async with await links.aio.serve("127.0.0.1:0", protocol=Chat, handler=handler, max_queue=50, **options) as server:
        loop = asyncio.get_running_loop()
        port = server.local_addr[1]
        clt = await loop.run_in_executor(None, lambda: links.Clt.connect(f"127.0.0.1:{port}", protocol=Chat, timeout=WAIT, max_outbound=64 * 1024))
        try:
            await asyncio.wait_for(ready.wait(), WAIT)
            assert (type(conns[0]._bridge).__name__ == "LoopBridge") == (driver == "loop")
            await held_then_resumed(conns[0], clt.send, 50)
        finally:
            clt.close()


@pytest.mark.asyncio
async def test_a_mux_channel_that_does_not_read_holds_only_its_own_sender() -> None:
    svc = links.Svc.bind("127.0.0.1:0", protocol=Chat, mux=True, max_outbound=64 * 1024)
    pool = svc.into_sender_with_spawned_recver()
    loop = asyncio.get_running_loop()
    mux = await loop.run_in_executor(None, lambda: links.mux.connect(f"127.0.0.1:{svc.local_addr[1]}", timeout=WAIT))
    try:
        slow = links.aio.wrap(await loop.run_in_executor(None, lambda: mux.open(protocol=Chat)), max_queue=20)
        other = links.aio.wrap(await loop.run_in_executor(None, lambda: mux.open(protocol=Chat)))
        await slow.send("hello")  # so the service knows which pooled channel is which
        await other.send("hello")
        await until(lambda: len(svc) == 2, "the service pooled both channels")
        slow_id, other_id = svc.con_ids()

        async def check_other_still_flows() -> None:
            assert pool.send_to(other_id, {"other": 1}, timeout=WAIT) is links.SendStatus.COMPLETED
            assert await asyncio.wait_for(other.recv(), WAIT) == {"other": 1}

        def send_slow(msg: object, timeout: float | None = None) -> links.SendStatus:
            return pool.send_to(slow_id, msg, timeout)

        sent = await loop.run_in_executor(None, flood, send_slow, 0)
        assert sent < 200_000
        assert slow._bridge.inbox.paused and slow.queued <= 20 + MAX_READ // frame_size(0) + 1
        await check_other_still_flows()  # one held channel holds no other
        for i in range(sent):
            assert (await slow.recv())["i"] == i
        assert send_slow({"i": sent, "pad": PAD}, WAIT) is links.SendStatus.COMPLETED
        assert (await slow.recv())["i"] == sent
        slow.close()
        other.close()
    finally:
        mux.close()
        svc.close()


# -- PollHandler.pause_reading on a bare handler ---------------------------------------------


class Counting:
    poll_kind = "recver"

    def __init__(self, sock: socket.socket) -> None:
        sock.setblocking(False)
        self.sock, self.closed, self.reads, self.writes, self.failed = sock, False, 0, 0, []

    def fileno(self) -> int:
        return self.sock.fileno()

    def on_readable(self) -> bool:
        self.reads += 1
        try:
            self.sock.recv(1 << 16)
        except BlockingIOError:
            pass
        return True

    def on_writable(self) -> bool:
        self.writes += 1
        return False

    def on_poll_failure(self, error: BaseException | None) -> None:
        self.failed.append(error)


def passes(poll: links.PollHandler, n: int = 2) -> None:
    """Let the poll thread make a few passes (each sync wakes it and waits for the command)."""
    for _ in range(n):
        assert poll.sync(WAIT)


def test_pause_reading_stops_reads_keeps_the_writer_and_resumes(poll: links.PollHandler) -> None:
    a, b = socket.socketpair()
    try:
        handler = Counting(a)
        poll.add(handler)
        passes(poll)
        poll.pause_reading(handler)
        passes(poll)
        reads = handler.reads
        b.send(b"data while paused")
        passes(poll, 3)
        assert handler.reads == reads  # readable, but not read
        poll.want_writable(handler)  # the writer is still serviced
        passes(poll)
        assert handler.writes == 1
        poll.pause_reading(handler)  # twice: the same
        poll.pause_reading(handler, False)
        passes(poll, 3)
        assert handler.reads > reads
        assert poll.handler_count == 1
        poll.pause_reading(handler, False)  # not paused: nothing happens
        poll.pause_reading(handler)
        passes(poll)
        poll.shutdown(WAIT)  # a paused handler is still closed by a shutdown
        assert handler.failed == [None]
    finally:
        a.close()
        b.close()


def test_pause_reading_of_a_removed_handler_is_ignored(poll: links.PollHandler) -> None:
    a, b = socket.socketpair()
    try:
        handler = Counting(a)
        poll.add(handler)
        poll.pause_reading(handler)
        poll.remove(handler)
        poll.pause_reading(handler, False)
        passes(poll)
        assert poll.handler_count == 0
        b.send(b"x")
        passes(poll)
        assert not handler.failed
    finally:
        a.close()
        b.close()


# -- the Inbox, against a model --------------------------------------------------------------

ops = st.lists(st.sampled_from(["push", "append", "take", "wait", "woken", "close"]), max_size=300)


@settings(max_examples=300, deadline=None)
@given(ops=ops, high=st.integers(1, 8), low_gap=st.integers(1, 8))
def test_inbox_against_a_model(ops: list[str], high: int, low_gap: int) -> None:
    low = max(0, high - low_gap)
    inbox = Inbox(high, low)
    queue: list[int] = []
    n = 0
    paused = waiting = pending = ended = False
    for op in ops:
        if op in ("push", "append") and not ended:
            if op == "push":
                orders = inbox.push(n)
            else:  # the driver's way: append without the lock, then orders only if needed
                inbox.queue.append(n)
                orders = inbox.pushed() if inbox.needs_orders() else 0
            queue.append(n)
            n += 1
            expect_wake = waiting and not pending
            pending = pending or expect_wake
            assert bool(orders & WAKE) == expect_wake
            expect_pause = len(queue) >= high and not paused
            paused = paused or expect_pause
            assert bool(orders & PAUSE) == expect_pause
        elif op == "take":
            msg, orders = inbox.take()
            if not queue:
                assert msg is EMPTY and orders == 0
                continue
            assert msg == queue.pop(0)  # in order, each once
            expect_resume = paused and len(queue) <= low and not ended
            paused = paused and not expect_resume
            assert bool(orders & RESUME) == expect_resume
        elif op == "wait":  # a last look after saying so: what came meanwhile is taken
            msg = inbox.wait()
            assert msg == (queue.pop(0) if queue else EMPTY)
            waiting = True
        elif op == "woken":
            inbox.woken()
            waiting = pending = False
        elif op == "close":
            orders = inbox.close(None)
            expect_wake = not ended and waiting and not pending
            pending = pending or expect_wake
            ended = True
            assert bool(orders & WAKE) == expect_wake
        assert inbox.paused == paused and len(inbox) == len(queue)


def test_inbox_refuses_marks_that_cannot_work() -> None:
    for bad in (0, -1, True, 1.5, "8"):
        with pytest.raises(ValueError):
            Inbox(bad)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        Inbox(4, 4)
    assert Inbox(1).low == 0 and Inbox(10).low == 5


def test_threads_pushing_while_the_loop_takes_lose_nothing() -> None:
    """The bridge's lock around the inbox: a pushing thread and a taking one, every message once."""
    inbox = Inbox(64)
    lock = threading.Lock()
    n = 20_000

    def push() -> None:
        for i in range(n):
            with lock:
                inbox.push(i)

    thread = threading.Thread(target=push)
    thread.start()
    got = []
    while len(got) < n:
        with lock:
            msg, _ = inbox.take()
        if msg is not EMPTY:
            got.append(msg)
    thread.join()
    assert got == list(range(n))
