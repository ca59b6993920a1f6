"""links.aio, from asyncio code on both ends: the subject of ``benchmarks/system/aio.py``.

Written the way an asyncio application would use it, as ``aio.py`` beside it is for asyncio
streams. The server is ``links.aio.serve`` with a handler per connection that reads with
``async for`` (counting each message) and, for W2, answers with ``await conn.send``. The
client is ``links.aio.connect``; W1 sends each message with ``await clt.send`` (variant
``send``) or ``await clt.send_many`` of ``params.batch`` (variant ``send_many``); W2 awaits
``send`` then ``recv`` per round trip; W4 runs 100 connections as 100 tasks on one loop, each
``await clt.send`` per message. ``flavor="uvloop"`` runs the same code on uvloop.
"""

from __future__ import annotations

import asyncio
import os
import sys
import time
from typing import Any

import links
import links.aio
from links.bench import HOST, Control, Params, Raw, Tally, payload, quiet_logs, rtt_result

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _asyncio_shared import drive, run  # noqa: E402


def serve(ctl: Control, params: Params, flavor: str = "asyncio") -> None:
    quiet_logs()
    tally = Tally(ctl, params)
    echo = params.workload == "w2"

    async def handle(conn: links.aio.AsyncClt) -> None:
        add = tally.add
        if echo:
            send = conn.send
            async for msg in conn:
                add(1, len(msg))
                await send(msg)
        else:
            async for msg in conn:
                add(1, len(msg))

    async def main() -> None:
        stopped = asyncio.Event()
        loop = asyncio.get_running_loop()
        server = await links.aio.serve(f"{HOST}:0", protocol=Raw, handler=handle, max_connections=params.clients + 8,
                                       backlog=1024)  # fmt: skip
        ctl.send(port=server.local_addr[1])
        ctl.on_line("stop", lambda: loop.call_soon_threadsafe(stopped.set))
        await stopped.wait()
        await server.aclose()
        tally.final()

    run(main(), flavor)
    links.shutdown()


def client(ctl: Control, params: Params, port: int, flavor: str = "asyncio") -> None:
    quiet_logs()
    data = payload(params.size)
    result: dict[str, Any] = {}
    warmed: list[int] = []
    go = asyncio.Event()

    async def connect() -> links.aio.AsyncClt:
        return await links.aio.connect(f"{HOST}:{port}", protocol=Raw, timeout=10.0)

    async def one_way() -> int:
        clt = await connect()
        send = clt.send
        for _ in range(params.warm):
            await send(data)
        warmed.append(1)
        if len(warmed) == params.clients:
            ctl.send(warmed=True)
        await go.wait()
        if params.variant == "send_many":
            batch = [data] * params.batch
            left = params.count
            while left:
                n = min(left, params.batch)
                await clt.send_many(batch if n == params.batch else batch[:n])
                left -= n
        else:
            for _ in range(params.count):
                await send(data)
        await linger_close(clt)
        return params.per_client

    async def ping_pong() -> None:
        clt = await connect()
        send, recv, clock = clt.send, clt.recv, time.perf_counter_ns
        rtts, received = [], 0
        for i in range(params.total):
            t0 = clock()
            await send(data)
            body = await recv()
            t1 = clock()
            received += len(body) == len(data)
            if i >= params.warm:
                rtts.append((t1 - t0) / 1000)
        await linger_close(clt)
        result.update(rtt_result(rtts, params.total, params.total * params.size, received))

    run(drive(ctl, params, result, go, one_way, ping_pong), flavor)
    links.shutdown()  # a close lingers until what is owed is written: the server counts it all
    ctl.send(result=result)
    ctl.wait_for("exit")


async def linger_close(clt: links.aio.AsyncClt) -> None:
    """Close: what the socket still owes is written by the poll thread first (links' close lingers)."""
    await clt.aclose()
