"""links.aio on real loopback sockets, under asyncio and uvloop: send and recv, batches in
order with few loop wake-ups, cancellation and timeouts that lose nothing, close from either
side waking every waiter, serve with handlers and broadcast, wrapping a threaded ``Clt`` and a
``links.mux`` channel, and a loop that closes while links still holds connections."""

from __future__ import annotations

import asyncio
import socket
import struct
import subprocess
import sys
import textwrap
import threading

import pytest

import links
import links.aio
from helpers import addr, loop_factories, until
from helpers_tls import tls_contexts

LOOP_FACTORIES = loop_factories()


class Chat(links.Protocol):
    framer = links.LengthPrefixFramer(header_size=4, max_frame_size=1 << 20)
    messenger = links.JsonMessenger()


async def echo(conn: links.aio.AsyncClt) -> None:
    async for msg in conn:
        await conn.send(msg)


def threaded_svc(**options: object) -> tuple[links.Svc, links.SvcSender]:
    svc = links.Svc.bind("127.0.0.1:0", protocol=Chat, name="svc", **options)
    return svc, svc.into_sender_with_spawned_recver()


async def wait_pooled(svc: links.Svc, n: int = 1) -> None:
    await until(lambda: len(svc) >= n, f"{n} connection(s) pooled")


# -- a connection ------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_send_and_recv_over_serve_and_connect(request: pytest.FixtureRequest) -> None:
    assert ("uvloop" in type(asyncio.get_running_loop()).__module__) == ("[uvloop]" in request.node.name)
    async with await links.aio.serve("127.0.0.1:0", protocol=Chat, handler=echo) as server:
        async with await links.aio.connect(addr(server), protocol=Chat, timeout=2.0, name="c") as clt:
            assert clt.send_nowait({"n": 0}) is links.SendStatus.COMPLETED
            await clt.send({"n": 1})
            await clt.send_many([{"n": 2}, {"n": 3}])
            got = [await clt.recv() for _ in range(4)]
            assert got == [{"n": i} for i in range(4)]
            assert clt.is_connected()
            assert "c@" in str(clt.con_id)


@pytest.mark.asyncio
async def test_messages_arrive_in_order_with_one_wakeup_per_batch() -> None:
    svc, sender = threaded_svc()
    try:
        clt = await links.aio.connect(addr(svc), protocol=Chat, timeout=2.0)
        await wait_pooled(svc)
        bridge = clt._bridge
        wakeups = 0
        woken = bridge._woken

        def counting() -> None:
            nonlocal wakeups
            wakeups += 1
            woken()

        bridge._woken = counting  # type: ignore[method-assign]
        n = 5000
        waiting = asyncio.ensure_future(clt.recv())
        await until(lambda: bridge.inbox.waiting, "recv waiting")
        assert sender.send_many([{"i": i} for i in range(n)], timeout=5.0) is links.SendStatus.COMPLETED
        got = [await waiting] + [await clt.recv() for _ in range(n - 1)]
        assert got == [{"i": i} for i in range(n)]
        # One wake-up per read the poll thread made at most, never one per message.
        assert 1 <= wakeups < n // 20
        await clt.aclose()
    finally:
        svc.close()


@pytest.mark.asyncio
async def test_handshake_messages_come_first() -> None:
    """A message read during connect (kept for recv) reaches the coroutine before the rest."""

    class Greeted(Chat):
        def is_connected(self) -> bool:
            return self.greeted

        def __init__(self) -> None:
            self.greeted = False

        def on_recv(self, msg: object) -> None:
            self.greeted = True

    class Greeter(Chat):
        def on_connect(self, con: links.Handle) -> None:
            con.send({"hello": 1})

    svc = links.Svc.bind("127.0.0.1:0", protocol=Greeter)
    sender = svc.into_sender_with_spawned_recver()
    try:
        clt = await links.aio.connect(addr(svc), protocol=Greeted, timeout=2.0)
        await wait_pooled(svc)
        sender.send({"after": 2})
        assert await clt.recv() == {"hello": 1}
        assert await clt.recv() == {"after": 2}
        clt.close()
    finally:
        svc.close()


# -- cancellation and timeouts ----------------------------------------------------------------


@pytest.mark.asyncio
async def test_a_cancelled_recv_loses_nothing() -> None:
    svc, sender = threaded_svc()
    try:
        clt = await links.aio.connect(addr(svc), protocol=Chat, timeout=2.0)
        await wait_pooled(svc)
        task = asyncio.ensure_future(clt.recv())
        await until(lambda: clt._bridge.inbox.waiting, "recv waiting")
        task.cancel()
        sender.send({"kept": 1})  # may race the cancellation: it must not matter
        with pytest.raises(asyncio.CancelledError):
            await task
        assert await clt.recv() == {"kept": 1}
        clt.close()
    finally:
        svc.close()


@pytest.mark.asyncio
async def test_recv_under_timeouts_takes_every_message_once_in_order() -> None:
    svc, sender = threaded_svc()
    try:
        clt = await links.aio.connect(addr(svc), protocol=Chat, timeout=2.0)
        await wait_pooled(svc)
        n = 300
        feeder = threading.Thread(target=lambda: [sender.send({"i": i}) for i in range(n)])
        feeder.start()
        got: list[object] = []
        timeouts = 0
        while len(got) < n:
            try:
                got.append(await asyncio.wait_for(clt.recv(), timeout=0.0005))
            except asyncio.TimeoutError:
                timeouts += 1
        feeder.join()
        assert got == [{"i": i} for i in range(n)]
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(clt.recv(), timeout=0.01)  # nothing more: it times out
        sender.send({"last": 1})
        assert await asyncio.wait_for(clt.recv(), timeout=5.0) == {"last": 1}
        clt.close()
    finally:
        svc.close()


@pytest.mark.asyncio
async def test_asyncio_timeout_context() -> None:
    if sys.version_info < (3, 11):
        pytest.skip("asyncio.timeout is Python 3.11+")
    async with await links.aio.serve("127.0.0.1:0", protocol=Chat, handler=echo) as server:
        clt = await links.aio.connect(addr(server), protocol=Chat, timeout=2.0)
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.01):
                await clt.recv()
        await clt.send({"x": 1})
        async with asyncio.timeout(5.0):
            assert await clt.recv() == {"x": 1}
        await clt.aclose()


# -- closing -----------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_local_close_wakes_every_waiter() -> None:
    svc, _ = threaded_svc()
    try:
        clt = await links.aio.connect(addr(svc), protocol=Chat, timeout=2.0)
        waiters = [asyncio.ensure_future(clt.recv()) for _ in range(3)]

        async def iterate() -> list[object]:
            return [msg async for msg in clt]

        iterating = asyncio.ensure_future(iterate())
        await until(lambda: clt._bridge.inbox.waiting and len(clt._bridge._waiters) == 4, "4 waiters")
        await clt.aclose()
        for waiter in waiters:
            with pytest.raises(links.ClosedError):
                await waiter
        assert await iterating == []
        with pytest.raises(links.ClosedError):
            await clt.send({"late": 1})
        with pytest.raises(links.ClosedError):
            clt.send_nowait({"late": 1})
    finally:
        svc.close()


@pytest.mark.asyncio
async def test_peer_close_wakes_waiters_after_what_it_sent() -> None:
    svc, sender = threaded_svc()
    try:
        clt = await links.aio.connect(addr(svc), protocol=Chat, timeout=2.0)
        await wait_pooled(svc)
        waiter = asyncio.ensure_future(clt.recv())
        await until(lambda: clt._bridge.inbox.waiting, "recv waiting")
        sender.send_many([{"i": 1}, {"i": 2}])
        svc.close()  # the peer closes after sending
        assert await waiter == {"i": 1}
        assert [msg async for msg in clt] == [{"i": 2}]  # then the iteration ends
        with pytest.raises(links.BrokenError):
            await clt.recv()
    finally:
        svc.close()


@pytest.mark.asyncio
async def test_client_close_ends_the_server_handler() -> None:
    ended = asyncio.Event()
    seen: list[object] = []

    async def handler(conn: links.aio.AsyncClt) -> None:
        async for msg in conn:
            seen.append(msg)
        ended.set()

    async with await links.aio.serve("127.0.0.1:0", protocol=Chat, handler=handler) as server:
        clt = await links.aio.connect(addr(server), protocol=Chat, timeout=2.0)
        await clt.send({"bye": 1})
        await clt.aclose()
        await asyncio.wait_for(ended.wait(), 10.0)
        assert seen == [{"bye": 1}]
        await until(lambda: server.handlers == 0, "handler task gone")


@pytest.mark.asyncio
async def test_a_send_waiting_for_room_is_woken_by_close() -> None:
    svc = links.Svc.bind("127.0.0.1:0", protocol=Chat)  # never reads: the client's socket fills
    try:
        clt = await links.aio.connect(addr(svc), protocol=Chat, timeout=2.0, max_outbound=1024)
        big = {"pad": "x" * 60_000}
        while clt.send_nowait(big) is links.SendStatus.COMPLETED:
            pass
        sending = asyncio.ensure_future(clt.send(big))
        await until(lambda: bool(clt._bridge._room), "send waiting for room")
        clt.close()
        with pytest.raises(links.ClosedError):
            await sending
    finally:
        svc.close()


# -- serving --------------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_serve_runs_a_handler_per_connection_and_broadcasts() -> None:
    joined: list[links.ConId] = []

    async def handler(conn: links.aio.AsyncClt) -> None:
        joined.append(conn.con_id)
        async for msg in conn:
            await conn.send({"echo": msg, "by": str(conn.con_id)})

    server = await links.aio.serve("127.0.0.1:0", protocol=Chat, handler=handler, max_connections=4, name="srv")
    try:
        a = await links.aio.connect(addr(server), protocol=Chat, timeout=2.0, name="a")
        b = await links.aio.connect(addr(server), protocol=Chat, timeout=2.0, name="b")
        await a.send("hi a")
        await b.send("hi b")
        ra, rb = await a.recv(), await b.recv()
        assert ra["echo"] == "hi a" and rb["echo"] == "hi b" and ra["by"] != rb["by"]
        assert len(joined) == 2 and len(server.con_ids()) == 2
        assert server.broadcast({"all": 1}) == 2
        assert await a.recv() == {"all": 1} and await b.recv() == {"all": 1}
        assert server.send_to(server.con_ids()[0], {"one": 1}) is links.SendStatus.COMPLETED
        assert await a.recv() == {"one": 1}
        await server.aclose()  # handlers end (their connections close), clients see the end
        assert server.handlers == 0
        with pytest.raises(links.BrokenError):
            await a.recv()
        with pytest.raises(links.BrokenError):
            await b.recv()
    finally:
        await server.aclose()


@pytest.mark.asyncio
async def test_a_failing_handler_ends_only_its_connection(logs) -> None:
    async def handler(conn: links.aio.AsyncClt) -> None:
        msg = await conn.recv()
        if msg == "boom":
            raise RuntimeError("handler bug")
        await conn.send("fine")
        await conn.recv()

    async with await links.aio.serve("127.0.0.1:0", protocol=Chat, handler=handler) as server:
        bad = await links.aio.connect(addr(server), protocol=Chat, timeout=2.0)
        good = await links.aio.connect(addr(server), protocol=Chat, timeout=2.0)
        await bad.send("boom")
        with pytest.raises(links.BrokenError):
            await bad.recv()
        await good.send("ok")
        assert await good.recv() == "fine"
        assert any(e["event"] == "aio.handler_failed" and "handler bug" in e["error"] for e in logs.entries)


@pytest.mark.asyncio
async def test_server_aclose_cancels_handlers_that_ignore_the_close() -> None:
    cancelled = asyncio.Event()

    async def stubborn(conn: links.aio.AsyncClt) -> None:
        try:
            await asyncio.Event().wait()  # never reads, never returns by itself
        except asyncio.CancelledError:
            cancelled.set()
            raise

    server = await links.aio.serve("127.0.0.1:0", protocol=Chat, handler=stubborn)
    clt = await links.aio.connect(addr(server), protocol=Chat, timeout=2.0)
    await until(lambda: server.handlers == 1, "handler running")
    await server.aclose()
    assert cancelled.is_set() and server.handlers == 0
    clt.close()


# -- wrapping the threaded API --------------------------------------------------------------


@pytest.mark.asyncio
async def test_wrap_a_threaded_clt_shared_with_a_thread() -> None:
    store = links.StoreCallback()
    svc, sender = threaded_svc(callback=store)
    try:
        loop = asyncio.get_running_loop()
        threaded = await loop.run_in_executor(None, lambda: links.Clt.connect(addr(svc), protocol=Chat, timeout=2.0))
        clt = links.aio.wrap(threaded)
        with pytest.raises(links.ClosedError):
            threaded.send({"spent": 1})  # its halves moved: the threaded face is the sender
        thread = threading.Thread(target=lambda: clt.sender.send({"from": "thread"}))
        thread.start()
        await clt.send({"from": "loop"})
        thread.join()
        await wait_pooled(svc)
        sender.send({"to": "loop"})
        assert await clt.recv() == {"to": "loop"}
        assert store.find_recv(lambda m: m == {"from": "thread"}, timeout=5.0)
        assert store.find_recv(lambda m: m == {"from": "loop"}, timeout=5.0)
        clt.sender.close()  # closing the threaded face closes the awaitable one
        with pytest.raises(links.ClosedError):
            await clt.recv()
    finally:
        svc.close()


@pytest.mark.asyncio
async def test_wrap_a_mux_channel() -> None:
    async def handler(conn: links.aio.AsyncClt) -> None:
        async for msg in conn:
            await conn.send({"echo": msg})

    async with await links.aio.serve("127.0.0.1:0", protocol=Chat, handler=handler, mux=True) as server:
        loop = asyncio.get_running_loop()
        mux = await loop.run_in_executor(None, lambda: links.mux.connect(addr(server), timeout=2.0))
        try:
            chans = [links.aio.wrap(await loop.run_in_executor(None, lambda: mux.open(protocol=Chat))) for _ in range(3)]
            for i, chan in enumerate(chans):
                await chan.send(i)
            assert [await chan.recv() for chan in chans] == [{"echo": i} for i in range(3)]
            assert server.broadcast("all") == 3
            assert [await chan.recv() for chan in chans] == ["all"] * 3
            for chan in chans:
                await chan.aclose()
        finally:
            mux.close()


def test_wrap_needs_a_running_loop_and_an_unsplit_clt() -> None:
    svc, _ = threaded_svc()
    try:
        clt = links.Clt.connect(addr(svc), protocol=Chat, timeout=2.0)
        with pytest.raises(RuntimeError):
            links.aio.wrap(clt)  # no running loop
        clt.split()

        async def spent() -> None:
            with pytest.raises(links.ClosedError):
                links.aio.wrap(clt)
            with pytest.raises(ValueError):
                await links.aio.connect(addr(svc), protocol=Chat, max_queue=0)

        asyncio.run(spent())
        clt.close()
    finally:
        svc.close()


# -- connect off the loop ---------------------------------------------------------------------


@pytest.mark.asyncio
async def test_connect_runs_off_the_loop_and_a_cancelled_one_closes_what_it_made() -> None:
    svc, _ = threaded_svc()
    try:
        ticks = 0

        async def ticker() -> None:
            nonlocal ticks
            while True:
                ticks += 1
                await asyncio.sleep(0)

        tick = asyncio.ensure_future(ticker())
        clt = await links.aio.connect(addr(svc), protocol=Chat, timeout=2.0)
        assert ticks > 0  # the loop ran while it dialed
        tick.cancel()
        clt.close()
        with pytest.raises(links.ConnectTimeout):
            await links.aio.connect("127.0.0.1:1", protocol=Chat, timeout=0.2, retry_after=0.05)
        dialing = asyncio.ensure_future(links.aio.connect(addr(svc), protocol=Chat, timeout=2.0))
        await asyncio.sleep(0)
        dialing.cancel()
        with pytest.raises(asyncio.CancelledError):
            await dialing
        await until(lambda: len(svc) == 0 and not any(t.name == "links-aio" for t in threading.enumerate()),
                    "the connection made for nobody closed")  # fmt: skip
    finally:
        svc.close()


# -- the loop closes while links still has connections ----------------------------------------


@pytest.mark.parametrize("loop_name", list(LOOP_FACTORIES))
def test_a_closed_loop_drops_wakeups_and_nothing_hangs(loop_name: str, logs) -> None:
    svc, sender = threaded_svc()
    loop = LOOP_FACTORIES[loop_name]()
    try:

        async def main() -> links.aio.AsyncClt:
            clt = await links.aio.connect(addr(svc), protocol=Chat, timeout=2.0)
            asyncio.ensure_future(clt.recv())  # left waiting when the loop stops
            await until(lambda: clt._bridge.inbox.waiting, "recv waiting")
            return clt

        clt = loop.run_until_complete(main())
    finally:
        loop.close()
    try:
        assert svc.poll_or_default().sync()
        assert len(svc) == 1
        for i in range(50):  # each would wake the closed loop
            sender.send({"i": i})
        assert sender.send({"last": 1}) is links.SendStatus.COMPLETED
        clt.close()
        assert svc.poll_or_default().sync()
        assert not [e for e in logs.entries if e["event"] in ("poll.handler_failed", "poll.command_failed")]
    finally:
        svc.close()


@pytest.mark.parametrize("loop_name", list(LOOP_FACTORIES))
def test_interpreter_exits_with_connections_open_after_the_loop_closed(loop_name: str) -> None:
    script = textwrap.dedent(
        f"""
        import asyncio, threading, links, links.aio
        from test_aio import Chat, LOOP_FACTORIES

        svc = links.Svc.bind("127.0.0.1:0", protocol=Chat)
        sender = svc.into_sender_with_spawned_recver()

        async def main():
            clt = await links.aio.connect(f"127.0.0.1:{{svc.local_addr[1]}}", protocol=Chat, timeout=2.0)
            asyncio.ensure_future(clt.recv())
            await asyncio.sleep(0)
            return clt

        loop = LOOP_FACTORIES[{loop_name!r}]()
        clt = loop.run_until_complete(main())
        loop.close()
        for i in range(100):
            sender.send({{"i": i}})
        print("done", flush=True)
        """
    )
    tests_dir = str(__import__("pathlib").Path(__file__).parent)
    proc = subprocess.run(
        [sys.executable, "-c", script], cwd=tests_dir, capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "done" in proc.stdout
    assert "Traceback" not in proc.stderr


# -- reconnect --------------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_recv_carries_on_across_a_reconnect() -> None:
    from links.testing import FaultProxy

    svc, sender = threaded_svc()
    try:
        with FaultProxy(svc.local_addr) as proxy:
            host, port = proxy.addr
            clt = await links.aio.connect(
                f"{host}:{port}", protocol=Chat, timeout=2.0,
                reconnect=links.Backoff(initial=0.01, maximum=0.05, factor=2.0, jitter=0.0),
            )  # fmt: skip
            await wait_pooled(svc)
            sender.send({"before": 1})
            assert await clt.recv() == {"before": 1}
            waiter = asyncio.ensure_future(clt.recv())
            await until(lambda: clt._bridge.inbox.waiting, "recv waiting")
            before = svc.con_ids()
            proxy.reset()  # the cut: the client redials through the proxy
            await until(lambda: svc.con_ids() not in ([], before), "reconnected")
            assert sender.send({"after": 2}, timeout=2.0) is links.SendStatus.COMPLETED
            assert await asyncio.wait_for(waiter, 10.0) == {"after": 2}
            await clt.send({"up": 3})
            clt.close()
    finally:
        svc.close()


@pytest.mark.asyncio
async def test_a_hostile_frame_ends_only_that_connection() -> None:
    """A raw peer sends a frame over ``max_frame_size``: that connection's recv raises
    ``BrokenError`` (reason ``frame.too_large``) after the good message before it; another
    connection on the same loop carries on."""
    listener = socket.create_server(("127.0.0.1", 0))
    try:
        port = listener.getsockname()[1]
        loop = asyncio.get_running_loop()
        accepting = loop.run_in_executor(None, listener.accept)
        clt = await links.aio.connect(f"127.0.0.1:{port}", protocol=Chat, timeout=2.0)
        peer, _ = await accepting
        with peer:
            good = Chat.messenger.serialize({"ok": 1})
            peer.sendall(struct.pack("!I", len(good)) + good + struct.pack("!I", (1 << 20) + 1) + b"x" * 64)
            assert await clt.recv() == {"ok": 1}
            with pytest.raises(links.BrokenError) as raised:
                await clt.recv()
            assert raised.value.reason == "frame.too_large"
            assert [m async for m in clt] == []
        async with await links.aio.serve("127.0.0.1:0", protocol=Chat, handler=echo) as server:
            other = await links.aio.connect(addr(server), protocol=Chat, timeout=2.0)
            await other.send("still")
            assert await other.recv() == "still"
            other.close()
    finally:
        listener.close()


@pytest.mark.asyncio
async def test_serve_and_connect_over_tls_with_private_runtime_threads(poll: links.PollHandler, timer: links.Timer) -> None:
    """Options reach Svc.bind and Clt.connect unchanged: TLS both ways (the server's handshake
    on the poll thread, the client's off the loop), and a poll handler and timer of one's own."""
    server_ctx, client_ctx = tls_contexts()
    runtime = {"poll_handler": poll, "timer": timer}
    async with await links.aio.serve("127.0.0.1:0", protocol=Chat, handler=echo, tls=server_ctx, **runtime) as server:
        port = server.local_addr[1]
        async with await links.aio.connect(f"127.0.0.1:{port}", protocol=Chat, timeout=5.0, tls=client_ctx, **runtime) as clt:
            await clt.send_many([{"n": i} for i in range(100)])
            assert [await clt.recv() for _ in range(100)] == [{"n": i} for i in range(100)]
            assert clt.sender.peer_certificate is not None
