"""asyncio streams, on the stdlib event loop or on uvloop: the same code for both.

Written the way the asyncio documentation teaches: the server reads each frame with
``readexactly(4)`` then ``readexactly(n)``; the client writes each frame and awaits
``drain()`` (which returns at once until the transport's buffer passes its high-water mark).
asyncio sets ``TCP_NODELAY`` on its TCP transports itself. W4 runs 100 client connections as
100 tasks on one loop.

Over TLS (``Params.tls``): ``start_server(ssl=)`` and ``open_connection(ssl=, server_hostname=)``
with the pinned contexts of ``links.bench``; the streams code is the same.
"""

from __future__ import annotations

import asyncio
import os
import ssl
import sys
import time
from typing import Any

from links.bench import (
    HEADER,
    HOST,
    MAX_FRAME,
    TLS_SERVER_NAME,
    Control,
    Params,
    Tally,
    payload,
    rtt_result,
    tls_client_context,
    tls_server_context,
)

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _asyncio_shared import drive, run  # noqa: E402


def serve(ctl: Control, params: Params, flavor: str = "asyncio") -> None:
    tally = Tally(ctl, params)
    echo = params.workload == "w2"

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        readexactly, unpack, add = reader.readexactly, HEADER.unpack, tally.add
        try:
            while True:
                header = await readexactly(4)
                (length,) = unpack(header)
                body = await readexactly(length)
                add(1, len(body))
                if echo:
                    writer.write(header + body)  # one message in flight: no drain needed
        except (asyncio.IncompleteReadError, ConnectionError, ssl.SSLError):
            pass  # the peer closed; the completion check tells whether anything was lost
        writer.close()

    async def main() -> None:
        stopped = asyncio.Event()
        loop = asyncio.get_running_loop()
        tls = tls_server_context(params.tls) if params.tls else None
        server = await asyncio.start_server(handle, HOST, 0, backlog=1024, limit=MAX_FRAME, ssl=tls)
        ctl.send(port=server.sockets[0].getsockname()[1])
        ctl.on_line("stop", lambda: loop.call_soon_threadsafe(stopped.set))
        await stopped.wait()
        server.close()
        tally.final()

    run(main(), flavor)


def client(ctl: Control, params: Params, port: int, flavor: str = "asyncio") -> None:
    data = payload(params.size)
    result: dict[str, Any] = {}
    tls = {"ssl": tls_client_context(params.tls), "server_hostname": TLS_SERVER_NAME} if params.tls else {}
    negotiated: list[str] = []

    async def connect() -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        reader, writer = await asyncio.open_connection(HOST, port, limit=MAX_FRAME, **tls)
        cipher = writer.get_extra_info("cipher")  # None for a plain connection
        negotiated.append(cipher[0] if cipher else "")
        return reader, writer

    warmed: list[int] = []
    go = asyncio.Event()  # binds to the loop that first waits on it (3.10+)

    async def one_way() -> int:
        _, writer = await connect()
        write, drain, pack = writer.write, writer.drain, HEADER.pack
        for _ in range(params.warm):
            write(pack(len(data)) + data)
            await drain()
        warmed.append(1)
        if len(warmed) == params.clients:
            ctl.send(warmed=True)  # the harness answers "go" once the server counted them all
        await go.wait()
        for _ in range(params.count):
            write(pack(len(data)) + data)
            await drain()
        writer.close()
        await writer.wait_closed()  # everything written has left the transport's buffer
        return params.per_client

    async def ping_pong() -> None:
        reader, writer = await connect()
        write, readexactly, pack, unpack, clock = (
            writer.write,
            reader.readexactly,
            HEADER.pack,
            HEADER.unpack,
            time.perf_counter_ns,
        )
        rtts, received = [], 0
        for i in range(params.total):
            t0 = clock()
            write(pack(len(data)) + data)
            (length,) = unpack(await readexactly(4))
            body = await readexactly(length)
            t1 = clock()
            received += len(body) == len(data)
            if i >= params.warm:
                rtts.append((t1 - t0) / 1000)
        writer.close()
        await writer.wait_closed()
        result.update(rtt_result(rtts, params.total, params.total * params.size, received))

    run(drive(ctl, params, result, go, one_way, ping_pong), flavor)
    result["tls"] = min(negotiated, default="")  # "" if any connection was not over TLS
    ctl.send(result=result)
    ctl.wait_for("exit")
