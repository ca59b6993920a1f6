"""The loop itself doing the I/O of links.aio connections (``links.aio._looppoll``), under
asyncio and uvloop.

* ``LoopPoller`` on bare handlers over socket pairs: a first look, one bounded unit of work per
  event for each ready fd in turn, ``remove``'s ``then`` after the fd is unwatched, a handler
  that raises removed while the others carry on, commands from another thread, writable
  interest, paused reading, ``sync``; the loop's end (shut down by its runner, or closed
  without that) closing what is left.
* Connections of ``aio.connect`` and ``aio.serve``: their callbacks and hooks run on the loop's
  thread; a peer that never reads makes a send wait without blocking the loop (and a threaded
  send made on the loop answers ``WOULD_BLOCK`` rather than wait for the loop it blocks); a
  peer sending garbage ends only its connection; TLS and sessions; the loop ending with
  connections open (what they owe still written; nothing left open).
"""

from __future__ import annotations

import asyncio
import os
import socket
import struct
import threading

import pytest

import links
import links.aio
import links.session
from helpers import addr, loop_factories, until
from helpers_tls import tls_contexts
from links.aio._looppoll import LoopPoller, loop_poller

LOOP_FACTORIES = loop_factories()


class Chat(links.Protocol):
    framer = links.LengthPrefixFramer(header_size=4, max_frame_size=1 << 20)
    messenger = links.JsonMessenger()


class Handler:
    """A bare pollable over one end of a socket pair: reads ``chunk`` bytes per event."""

    poll_kind = "test"

    def __init__(self, sock: socket.socket, chunk: int = 1, owe: int = 0) -> None:
        self.sock = sock
        self.sock.setblocking(False)
        self.chunk = chunk
        self.owe = owe  # on_writable calls still wanted
        self.closed = False
        self.got = bytearray()
        self.reads = 0
        self.writes = 0
        self.threads: set[int] = set()
        self.failures: list[BaseException | None] = []
        self.raise_on_read = False

    def fileno(self) -> int:
        return self.sock.fileno()

    def on_readable(self) -> bool:
        self.reads += 1
        self.threads.add(threading.get_ident())
        if self.raise_on_read:
            raise RuntimeError("handler bug")
        try:
            self.got += self.sock.recv(self.chunk)
        except BlockingIOError:
            pass
        return True

    def on_writable(self) -> bool:
        self.writes += 1
        self.owe -= 1
        return self.owe > 0

    def on_poll_failure(self, error: BaseException | None) -> None:
        self.failures.append(error)
        self.closed = True


@pytest.fixture
def pairs():
    made: list[socket.socket] = []

    def pair() -> tuple[socket.socket, socket.socket]:
        a, b = socket.socketpair()
        made.extend((a, b))
        return a, b

    yield pair
    for sock in made:
        sock.close()


async def echo(conn: links.aio.AsyncClt) -> None:
    async for msg in conn:
        await conn.send(msg)


# -- the poller on bare handlers --------------------------------------------------------------


@pytest.mark.asyncio
async def test_each_ready_fd_gets_one_bounded_turn_after_a_first_look(pairs) -> None:
    poller = loop_poller()
    assert loop_poller() is poller and poller.in_poll_thread()
    (a, a_peer), (b, b_peer) = pairs(), pairs()
    ha, hb = Handler(a), Handler(b)
    poller.add(ha)
    poller.add(hb)
    await until(lambda: ha.reads and hb.reads, "a first look at each")  # no bytes yet: still looked at
    a_peer.sendall(b"x" * 50)
    b_peer.sendall(b"y" * 50)
    await until(lambda: len(ha.got) == 50 and len(hb.got) == 50, "both drained")
    # One byte per event, level-triggered: each fd came back until drained, in turn with the other.
    assert ha.reads > 50 and hb.reads > 50
    assert poller.handler_count == 2
    poller.remove(ha)
    poller.remove(hb)
    assert poller.handler_count == 0


@pytest.mark.asyncio
async def test_remove_runs_then_after_the_fd_is_unwatched(pairs) -> None:
    poller = loop_poller()
    a, a_peer = pairs()
    handler = Handler(a, chunk=100)
    poller.add(handler)
    seen: list[object] = []

    def then() -> None:  # the fd is watched no more: closed here, its number reused, nothing fires
        seen.append(poller.handler_count)
        a.close()

    poller.remove(handler, "done", then=then)
    assert seen == [0]  # inline on the loop
    c, c_peer = pairs()
    other = Handler(c, chunk=100)
    poller.add(other)  # maybe on the very fd number: it is free
    c_peer.sendall(b"new")
    await until(lambda: other.got == b"new", "the new handler read")
    assert handler.got == b"" and not handler.failures
    poller.remove(other)


@pytest.mark.asyncio
async def test_a_handler_that_raises_is_removed_and_the_others_carry_on(pairs, logs) -> None:
    poller = loop_poller()
    (a, _), (b, b_peer) = pairs(), pairs()
    bad, good = Handler(a), Handler(b, chunk=100)
    bad.raise_on_read = True
    poller.add(bad)
    poller.add(good)
    await until(lambda: bad.failures, "the bad handler failed")
    assert isinstance(bad.failures[0], RuntimeError) and poller.handler_count == 1
    assert any(e["event"] == "poll.handler_failed" and "handler bug" in e["error"] for e in logs.entries)
    b_peer.sendall(b"still")
    await until(lambda: good.got == b"still", "the other handler read")
    poller.remove(good)


@pytest.mark.asyncio
async def test_commands_from_another_thread_run_on_the_loop(pairs) -> None:
    poller = loop_poller()
    loop_thread = threading.get_ident()
    a, a_peer = pairs()
    handler = Handler(a, chunk=100)
    ran: list[int] = []
    removed = asyncio.Event()
    loop = asyncio.get_running_loop()

    def elsewhere() -> None:
        assert not poller.in_poll_thread()
        poller.add(handler)
        poller.call_soon(lambda: ran.append(threading.get_ident()))
        assert poller.sync(5.0)  # both ran by now
        a_peer.sendall(b"hi")

    await loop.run_in_executor(None, elsewhere)
    await until(lambda: handler.got == b"hi", "read on the loop")
    assert ran == [loop_thread] and handler.threads == {loop_thread}

    def remove() -> None:
        poller.remove(handler, then=lambda: (ran.append(threading.get_ident()), loop.call_soon(removed.set)))

    await loop.run_in_executor(None, remove)
    await asyncio.wait_for(removed.wait(), 10.0)
    assert ran == [loop_thread, loop_thread] and poller.handler_count == 0


@pytest.mark.asyncio
async def test_writable_interest_until_nothing_is_owed(pairs) -> None:
    poller = loop_poller()
    (a, _), (b, b_peer) = pairs(), pairs()
    writer = Handler(a, owe=3)  # registered to write only: never read
    poller.want_writable(writer)
    await until(lambda: writer.writes == 3 and poller.handler_count == 0, "written, then forgotten")
    assert writer.reads == 0
    both = Handler(b, chunk=100, owe=2)
    poller.add(both)
    poller.want_writable(both)
    await until(lambda: both.writes == 2, "written")
    b_peer.sendall(b"read")
    await until(lambda: both.got == b"read", "still read once nothing is owed")
    assert poller.handler_count == 1
    poller.remove(both)


@pytest.mark.asyncio
async def test_paused_reading_reads_nothing_until_resumed(pairs) -> None:
    poller = loop_poller()
    a, a_peer = pairs()
    handler = Handler(a, chunk=100)
    poller.add(handler)
    await until(lambda: handler.reads, "first look")
    poller.pause_reading(handler)
    a_peer.sendall(b"held")
    reads = handler.reads
    for _ in range(50):  # loop turns: the bytes are there, nobody reads them
        await asyncio.sleep(0)
    assert handler.reads == reads and handler.got == b""
    poller.pause_reading(handler, False)
    await until(lambda: handler.got == b"held", "read after resuming")
    poller.remove(handler)


@pytest.mark.parametrize("loop_name", list(LOOP_FACTORIES))
def test_the_loops_end_closes_what_is_left(loop_name: str, pairs) -> None:
    """Shut down by its runner, the loop closes every handler; a loop closed without that is
    found closed by the next command, which closes what is left; sync never waits on it."""
    (a, _), (b, _) = pairs(), pairs()
    reader, writer = Handler(a), Handler(b, owe=1_000_000)

    async def main() -> LoopPoller:
        poller = loop_poller()
        poller.add(reader)
        await until(lambda: reader.reads, "first look")
        return poller

    with asyncio.Runner(loop_factory=LOOP_FACTORIES[loop_name]) if hasattr(asyncio, "Runner") else _skip() as runner:
        poller = runner.run(main())
    assert reader.failures == [None] and poller.handler_count == 0
    with pytest.raises(RuntimeError):
        poller.add(Handler(b))

    loop = LOOP_FACTORIES[loop_name]()
    poller = loop.run_until_complete(_poller_with(writer))
    elsewhere: list[object] = []
    thread = threading.Thread(target=lambda: elsewhere.append(poller.sync()))
    thread.start()
    thread.join(10.0)
    assert elsewhere == [False]  # the loop is not running: nothing would answer, and it does not wait
    ran: list[str] = []
    thread = threading.Thread(target=lambda: poller.remove(writer, then=lambda: ran.append("then")))
    thread.start()  # posted to the stopped loop, which will never run it
    thread.join(10.0)
    loop.close()
    assert ran == []

    def refused() -> None:
        with pytest.raises(RuntimeError):
            poller.call_soon(lambda: None)

    thread = threading.Thread(target=refused)
    thread.start()  # finds the loop closed: what was posted and never run is done there and then
    thread.join(10.0)
    assert ran == ["then"] and writer.failures == [None] and poller.handler_count == 0


async def _poller_with(handler: Handler) -> LoopPoller:
    poller = loop_poller()
    poller.want_writable(handler)
    return poller


def _skip():
    pytest.skip("asyncio.Runner is Python 3.11+")


# -- connections the loop drives ---------------------------------------------------------------


@pytest.mark.asyncio
async def test_callbacks_and_hooks_run_on_the_loops_thread() -> None:
    loop_thread = threading.get_ident()
    threads: set[int] = set()

    class Seen(links.Callback):
        def on_recv(self, con_id: links.ConId, msg: object) -> None:
            threads.add(threading.get_ident())

    class Hooked(Chat):
        def on_recv(self, msg: object) -> None:
            threads.add(threading.get_ident())

    async with await links.aio.serve("127.0.0.1:0", protocol=Hooked, handler=echo, callback=Seen()) as server:
        assert isinstance(server.svc.poll_or_default(), LoopPoller)
        async with await links.aio.connect(addr(server), protocol=Hooked, callback=Seen(), timeout=5.0) as clt:
            await clt.send_many([{"n": i} for i in range(20)])
            assert [await clt.recv() for _ in range(20)] == [{"n": i} for i in range(20)]
    assert threads == {loop_thread}


@pytest.mark.asyncio
async def test_a_wrapped_threaded_clt_stays_on_its_poll_thread() -> None:
    from links.aio._bridge import Bridge, LoopBridge

    async with await links.aio.serve("127.0.0.1:0", protocol=Chat, handler=echo) as server:
        loop = asyncio.get_running_loop()
        threaded = await loop.run_in_executor(None, lambda: links.Clt.connect(addr(server), protocol=Chat, timeout=5.0))
        clt = links.aio.wrap(threaded)
        assert type(clt._bridge) is Bridge and not isinstance(clt._con._poll(), LoopPoller)
        await clt.send({"n": 1})
        assert await clt.recv() == {"n": 1}
        clt.close()
        async with await links.aio.connect(addr(server), protocol=Chat, timeout=5.0) as driven:
            assert type(driven._bridge) is LoopBridge


@pytest.mark.asyncio
async def test_a_peer_that_never_reads_makes_a_send_wait_without_blocking_the_loop() -> None:
    listener = socket.create_server(("127.0.0.1", 0))
    loop = asyncio.get_running_loop()
    try:
        accepting = loop.run_in_executor(None, listener.accept)
        clt = await links.aio.connect(f"127.0.0.1:{listener.getsockname()[1]}", protocol=Chat, timeout=5.0,
                                      max_outbound=1024)  # fmt: skip
        peer, _ = await accepting
        with peer:
            big = {"pad": "x" * 60_000}
            while clt.send_nowait(big) is links.SendStatus.COMPLETED:
                pass
            # The threaded sender, called on the loop: waiting would wait for the loop it blocks.
            assert clt.sender.send(big) is links.SendStatus.WOULD_BLOCK
            sending = asyncio.ensure_future(clt.send(big))
            ticks = 0
            while ticks < 100:  # the loop turns while the send waits
                ticks += 1
                await asyncio.sleep(0)
            assert not sending.done()
            peer.setblocking(False)
            drained = 0

            async def read_some() -> None:
                nonlocal drained
                while not sending.done():
                    try:
                        drained += len(peer.recv(1 << 20))
                    except BlockingIOError:
                        await asyncio.sleep(0)

            await asyncio.wait_for(asyncio.gather(sending, read_some()), 10.0)  # room came from the loop's writer
            assert drained > 0
            clt.close()
    finally:
        listener.close()


@pytest.mark.asyncio
async def test_a_peer_sending_garbage_ends_only_its_connection() -> None:
    ended: list[str] = []

    async def handler(conn: links.aio.AsyncClt) -> None:
        try:
            async for msg in conn:
                await conn.send(msg)
        finally:
            ended.append(str(conn.con_id))

    async with await links.aio.serve("127.0.0.1:0", protocol=Chat, handler=handler) as server:
        loop = asyncio.get_running_loop()
        port = server.local_addr[1]
        good = await links.aio.connect(addr(server), protocol=Chat, timeout=5.0)
        bad = await loop.run_in_executor(None, lambda: socket.create_connection(("127.0.0.1", port)))
        with bad:
            bad.sendall(struct.pack("!I", 5) + b"{nope" + struct.pack("!I", (1 << 20) + 1))
            await until(lambda: len(ended) == 1, "the garbage connection ended")
            assert await loop.run_in_executor(None, bad.recv, 100) == b""  # closed on it
        await good.send({"still": 1})
        assert await good.recv() == {"still": 1}
        good.close()


@pytest.mark.asyncio
async def test_tls_and_a_session_on_the_loop() -> None:
    server_ctx, client_ctx = tls_contexts()
    async with await links.aio.serve("127.0.0.1:0", protocol=Chat, handler=echo, tls=server_ctx) as server:
        async with await links.aio.connect(addr(server), protocol=Chat, timeout=5.0, tls=client_ctx) as clt:
            assert isinstance(clt._con._poll(), LoopPoller)
            await clt.send_many([{"n": i} for i in range(200)])
            assert [await clt.recv() for _ in range(200)] == [{"n": i} for i in range(200)]
    session = {"heartbeat_interval": 0.05, "dead_after": 40}
    async with await links.aio.serve("127.0.0.1:0", protocol=Chat, handler=echo,
                                     session=links.session.Resumable(**session)) as server:  # fmt: skip
        async with await links.aio.connect(addr(server), protocol=Chat, timeout=5.0,
                                           session=links.session.Resumable(**session)) as clt:  # fmt: skip
            for i in range(50):
                await clt.send({"s": i})
            assert [await clt.recv() for _ in range(50)] == [{"s": i} for i in range(50)]


@pytest.mark.parametrize("loop_name", list(LOOP_FACTORIES))
def test_the_loop_ending_with_connections_open(loop_name: str) -> None:
    """``asyncio.run``'s end closes the loop's connections, writing what they owe first; a loop
    closed without that leaves nothing open once the connection is closed from another thread."""
    store = links.StoreCallback()
    svc = links.Svc.bind("127.0.0.1:0", protocol=Chat, callback=store)
    svc.into_sender_with_spawned_recver()
    fds = len(os.listdir("/proc/self/fd"))
    n, pad = 200, "x" * 20_000
    try:

        async def main() -> links.aio.AsyncClt:
            clt = await links.aio.connect(addr(svc), protocol=Chat, timeout=5.0, max_outbound=1 << 24)
            for i in range(n):  # 4 MB: more than the socket takes at once
                assert clt.send_nowait({"i": i, "pad": pad}) is links.SendStatus.COMPLETED
            return clt  # left open

        if not hasattr(asyncio, "Runner"):
            _skip()
        with asyncio.Runner(loop_factory=LOOP_FACTORIES[loop_name]) as runner:
            clt = runner.run(main())
        assert not clt.is_connected()
        with pytest.raises(links.ClosedError):
            clt.sender.send({"late": 1})
        assert store.find_recv(lambda m: m.get("i") == n - 1, timeout=10.0)  # what it owed was written

        loop = LOOP_FACTORIES[loop_name]()
        clt = loop.run_until_complete(links.aio.connect(addr(svc), protocol=Chat, timeout=5.0))
        loop.close()
        done = threading.Thread(target=lambda: clt.sender.send({"from": "thread"}, timeout=1.0))
        done.start()
        done.join(10.0)
        assert not done.is_alive()
        closer = threading.Thread(target=clt.close)
        closer.start()
        closer.join(10.0)
        assert not closer.is_alive() and not clt.is_connected()
    finally:
        svc.close()
    assert len(os.listdir("/proc/self/fd")) <= fds
