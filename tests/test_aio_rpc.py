"""Request/response from asyncio on real loopback sockets, under asyncio and uvloop: awaited
calls and notifications, many at once, timeouts (``asyncio.timeout`` and ``timeout=``),
cancellation retiring the call, ``async def`` handlers that await without holding other calls
back, one that raises, the connection closing under awaiting calls, calls back to an asyncio
client, and an event loop closed (or never given) under pending async handlers."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest

import links
import links.aio
import links.rpc
from helpers import loop_factories, until
from links.rpc import CallTimeout, RemoteError

LOOP_FACTORIES = loop_factories()
WAIT = 5.0


class Holds:
    """An ``async def`` handler whose calls wait until the test releases them, by key."""

    def __init__(self) -> None:
        self.started: list[Any] = []
        self._events: dict[Any, asyncio.Event] = {}
        self._values: dict[Any, Any] = {}

    async def hold(self, key: Any) -> Any:
        event = self._events.setdefault(key, asyncio.Event())
        self.started.append(key)
        await event.wait()
        return self._values[key]

    def release(self, key: Any, value: Any) -> None:
        self._values[key] = value
        self._events.setdefault(key, asyncio.Event()).set()


def make_server(**kwargs: Any) -> tuple[links.rpc.Server, Holds]:
    server = links.rpc.Server(**kwargs)
    holds = Holds()
    server.add("hold", holds.hold)

    @server.method
    def add(a: int, b: int) -> int:
        return a + b

    @server.method
    async def nap(seconds: float, value: Any) -> Any:
        await asyncio.sleep(seconds)
        return value

    @server.method
    async def fail(message: str) -> None:
        await asyncio.sleep(0)
        raise ValueError(message)

    return server, holds


@asynccontextmanager
async def served(**kwargs: Any) -> AsyncIterator[tuple[links.aio.AsyncRpcService, links.rpc.Server, Holds]]:
    server, holds = make_server(**{k: kwargs.pop(k) for k in ("max_running",) if k in kwargs})
    async with await links.aio.serve_rpc("127.0.0.1:0", server, **kwargs) as service:
        yield service, server, holds


async def connect(service: Any, **kwargs: Any) -> links.aio.AsyncPeer:
    return await links.aio.connect_rpc(f"127.0.0.1:{service.local_addr[1]}", timeout=WAIT, **kwargs)


# -- calling ------------------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_await_call_call_async_and_notify(request: pytest.FixtureRequest) -> None:
    assert ("uvloop" in type(asyncio.get_running_loop()).__module__) == ("[uvloop]" in request.node.name)
    notes: list[str] = []
    async with served() as (service, server, _):

        @server.method
        async def note(text: str) -> None:
            notes.append(text)

        async with await connect(service) as rpc:
            assert await rpc.call("add", 2, 3, timeout=WAIT) == 5
            assert await rpc.call("nap", 0, {"a": [1, b"\x00"]}) == {"a": [1, b"\x00"]}
            future = rpc.call_async("add", 1, 1, timeout=WAIT)
            assert isinstance(future, asyncio.Future) and await future == 2
            assert await rpc.notify("note", "hi") is links.SendStatus.COMPLETED
            assert rpc.notify_nowait("note", "there") is links.SendStatus.COMPLETED
            await until(lambda: notes == ["hi", "there"], "both notifications handled")
            assert rpc.in_flight == 0 and rpc.con_id is not None


@pytest.mark.asyncio
async def test_many_concurrent_awaited_calls_each_get_their_own_result() -> None:
    async with served() as (service, _, _), await connect(service) as rpc:
        calls = [rpc.call("add", i, i) if i % 2 else rpc.call("nap", 0, i) for i in range(2000)]
        results = await asyncio.wait_for(asyncio.gather(*calls), WAIT * 4)
        assert results == [2 * i if i % 2 else i for i in range(2000)]
        assert rpc.in_flight == 0


@pytest.mark.asyncio
async def test_calls_beyond_max_in_flight_wait_for_room_within_their_timeout() -> None:
    async with served() as (service, _, holds), await connect(service, max_in_flight=2) as rpc:
        first, second = rpc.call_async("hold", 1), rpc.call_async("hold", 2)
        with pytest.raises(CallTimeout, match="not sent"):
            await rpc.call("add", 1, 1, timeout=0.05)
        third = rpc.call_async("add", 2, 2, timeout=WAIT)  # waits for room, the loop running
        await until(lambda: holds.started == [1, 2], "both held")
        assert not third.done()
        holds.release(1, "one")
        assert await first == "one" and await third == 4
        holds.release(2, "two")
        assert await second == "two" and rpc.in_flight == 0


# -- deadlines and cancellation ------------------------------------------------------------------


@pytest.mark.asyncio
async def test_asyncio_timeout_retires_the_call_and_its_late_reply_is_dropped(logs) -> None:
    if sys.version_info < (3, 11):
        pytest.skip("asyncio.timeout is Python 3.11+")
    async with served() as (service, _, holds), await connect(service) as rpc:
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.05):
                await rpc.call("hold", "late")
        assert rpc.in_flight == 0
        holds.release("late", "too late")
        await until(lambda: logs.matching("rpc.late_reply"), "the late reply dropped")
        assert await rpc.call("add", 1, 2, timeout=WAIT) == 3  # never another call's reply
        assert not logs.matching("rpc.unknown_reply")


@pytest.mark.asyncio
async def test_timeout_argument_raises_call_timeout() -> None:
    async with served() as (service, _, holds), await connect(service) as rpc:
        with pytest.raises(CallTimeout) as e:
            await rpc.call("hold", "slow", timeout=0.05)
        assert isinstance(e.value, TimeoutError) and rpc.in_flight == 0
        future = rpc.call_async("hold", "slow-too", timeout=0.05)
        with pytest.raises(CallTimeout):
            await future
        holds.release("slow", None)
        holds.release("slow-too", None)


@pytest.mark.asyncio
async def test_cancelling_the_awaiting_task_retires_the_call(logs) -> None:
    async with served() as (service, _, holds), await connect(service) as rpc:
        task = asyncio.ensure_future(rpc.call("hold", "task"))
        future = rpc.call_async("hold", "future")
        await until(lambda: sorted(holds.started) == ["future", "task"], "both calls running")
        assert rpc.in_flight == 2
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert future.cancel()
        await until(lambda: rpc.in_flight == 0, "both calls retired")  # the future's callbacks: next turn
        holds.release("task", 1)
        holds.release("future", 2)
        await until(lambda: len(logs.matching("rpc.late_reply")) == 2, "both late replies dropped")
        assert await rpc.call("add", 2, 2) == 4


# -- async handlers ---------------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_async_handlers_that_await_do_not_hold_other_calls_back() -> None:
    async with served() as (service, _, holds), await connect(service) as rpc:
        held = [rpc.call_async("hold", key, timeout=WAIT) for key in "abc"]
        await until(lambda: len(holds.started) == 3, "three handlers awaiting")
        assert await rpc.call("add", 1, 1, timeout=WAIT) == 2  # a sync handler meanwhile
        assert await rpc.call("nap", 0.01, "z", timeout=WAIT) == "z"  # and another async one
        for key in "cba":
            holds.release(key, key.upper())
        assert await asyncio.gather(*held) == ["A", "B", "C"]


@pytest.mark.asyncio
async def test_an_async_handler_that_raises_gives_an_error_reply(logs) -> None:
    async with served() as (service, server, _), await connect(service) as rpc:
        with pytest.raises(RemoteError) as e:
            await rpc.call("fail", "no good", timeout=WAIT)
        assert (e.value.type, e.value.message) == ("ValueError", "no good")
        assert await rpc.notify("fail", "nobody hears") is links.SendStatus.COMPLETED
        await until(lambda: logs.matching("rpc.notification_failed", method="fail"), "the failure logged")
        assert await rpc.call("add", 1, 1) == 2  # the connection stays


@pytest.mark.asyncio
async def test_async_handlers_count_against_max_running() -> None:
    async with served(max_running=2) as (service, _, holds), await connect(service) as rpc:
        held = [rpc.call_async("hold", key) for key in (1, 2)]
        await until(lambda: len(holds.started) == 2, "two running")
        with pytest.raises(RemoteError) as e:
            await rpc.call("nap", 0, 3, timeout=WAIT)
        assert e.value.type == "Busy"
        assert await rpc.call("add", 1, 2) == 3  # a sync handler is not counted
        holds.release(1, 1)
        holds.release(2, 2)
        assert await asyncio.gather(*held) == [1, 2]
        assert await rpc.call("nap", 0, 3, timeout=WAIT) == 3


@pytest.mark.asyncio
async def test_the_server_calls_an_asyncio_client_back_and_its_async_handler_answers() -> None:
    client_side = links.rpc.Server()

    @client_side.method
    async def ping(n: int) -> str:
        await asyncio.sleep(0)
        return f"pong {n}"

    async with served() as (service, _, _), await connect(service, server=client_side) as rpc:
        assert client_side.loop is asyncio.get_running_loop()
        await until(lambda: service.peers(), "the service sees the client")
        (back,) = service.peers()
        assert await back.call("ping", 7, timeout=WAIT) == "pong 7"
        assert await rpc.call("add", 1, 1) == 2


@pytest.mark.asyncio
async def test_wrap_rpc_awaits_a_peer_made_with_the_threaded_api() -> None:
    async with served() as (service, _, _):
        peer = await asyncio.to_thread(links.rpc.connect, f"127.0.0.1:{service.local_addr[1]}", timeout=WAIT)
        rpc = links.aio.wrap_rpc(peer)
        try:
            assert await rpc.call("nap", 0, "from a coroutine") == "from a coroutine"
            assert await asyncio.to_thread(peer.call, "add", 20, 22, timeout=WAIT) == 42  # a thread, same peer
        finally:
            await rpc.aclose()


# -- the end of a connection ------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_closing_fails_every_awaiting_call() -> None:
    async with served() as (service, _, holds):
        rpc = await connect(service)
        calls = [asyncio.ensure_future(rpc.call("hold", i)) for i in range(5)]
        await until(lambda: len(holds.started) == 5, "five calls running")
        await rpc.aclose()
        for outcome in await asyncio.wait_for(asyncio.gather(*calls, return_exceptions=True), WAIT):
            assert isinstance(outcome, links.ClosedError)
        with pytest.raises(links.ClosedError):
            await rpc.call("add", 1, 1)


@pytest.mark.asyncio
async def test_the_service_going_away_fails_awaiting_calls_with_broken_error() -> None:
    async with served() as (service, _, holds):
        rpc = await connect(service)
        calls = [rpc.call_async("hold", i) for i in range(3)]
        await until(lambda: len(holds.started) == 3, "three calls running")
    for outcome in await asyncio.wait_for(asyncio.gather(*calls, return_exceptions=True), WAIT):
        assert isinstance(outcome, links.BrokenError)
    rpc.close()


# -- the loop the handlers run on -------------------------------------------------------------------


@pytest.mark.parametrize("loop_name", list(LOOP_FACTORIES))
def test_a_loop_closed_under_pending_async_handlers_makes_them_error_replies(loop_name: str, logs) -> None:
    loop = LOOP_FACTORIES[loop_name]()
    server, holds = make_server(loop=loop)
    svc = links.rpc.serve("127.0.0.1:0", server)
    try:
        with links.rpc.connect(f"127.0.0.1:{svc.local_addr[1]}", timeout=WAIT) as rpc:
            started = rpc.call_async("hold", "started", timeout=WAIT)
            loop.run_until_complete(until(lambda: holds.started == ["started"], "the handler awaiting"))
            queued = rpc.call_async("hold", "queued", timeout=WAIT)  # posted to the loop, never run
            assert rpc.call("add", 1, 1, timeout=WAIT) == 2  # the poll thread went past it
            loop.close()  # stopped and closed, its tasks never cancelled
            for future in (started, queued):
                error = future.exception(WAIT)
                assert isinstance(error, RemoteError) and error.type == "RuntimeError", error
            with pytest.raises(RemoteError, match="closed"):
                rpc.call("hold", "after", timeout=WAIT)  # a closed loop: answered at once
            assert rpc.call("add", 2, 2, timeout=WAIT) == 4
        assert not [e for e in logs.entries if e["event"] in ("poll.handler_failed", "poll.command_failed")]
    finally:
        svc.close()
        if not loop.is_closed():
            loop.close()


@pytest.mark.parametrize("loop_name", list(LOOP_FACTORIES))
def test_a_loop_shut_down_by_its_runner_cancels_pending_handlers_into_error_replies(loop_name: str) -> None:
    if sys.version_info < (3, 11):
        pytest.skip("asyncio.Runner is Python 3.11+")
    server, holds = make_server()
    svc = links.rpc.serve("127.0.0.1:0", server)
    try:
        with links.rpc.connect(f"127.0.0.1:{svc.local_addr[1]}", timeout=WAIT) as rpc:
            pending: list[Any] = []

            async def main() -> None:
                server.loop = asyncio.get_running_loop()
                pending.append(rpc.call_async("hold", "x", timeout=WAIT))
                await until(lambda: holds.started == ["x"], "the handler awaiting")

            with asyncio.Runner(loop_factory=LOOP_FACTORIES[loop_name]) as runner:
                runner.run(main())  # the runner's close cancels the task left
            error = pending[0].exception(WAIT)
            assert isinstance(error, RemoteError) and error.type == "CancelledError"
    finally:
        svc.close()


def test_an_async_handler_without_a_loop_gets_an_error_reply() -> None:
    server, _ = make_server()
    svc = links.rpc.serve("127.0.0.1:0", server)
    try:
        with links.rpc.connect(f"127.0.0.1:{svc.local_addr[1]}", timeout=WAIT) as rpc:
            with pytest.raises(RemoteError, match="needs an event loop"):
                rpc.call("nap", 0, 1, timeout=WAIT)
            assert rpc.call("add", 1, 1, timeout=WAIT) == 2
    finally:
        svc.close()
