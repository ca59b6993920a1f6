"""grpcio on asyncio (``grpc.aio``): the same service as ``grpc_rpc.py``, both sides async.

gRPC's own advice for Python servers that want throughput is its asyncio API, so it runs
beside the thread-pool server. Server: ``grpc.aio.server`` with the generic handler of
``bench.Bench/Echo`` (an ``async def``). Client: one ``grpc.aio`` channel; ``seq`` awaits one
call at a time, ``pipe`` runs ``Params.batch`` coroutines that each await calls one after the
other until all are made, which keeps that many in flight.
"""

from __future__ import annotations

import asyncio
import os
import sys
import time

import grpc
import msgpack

from links.bench import HOST, Control, Params, Tally, payload, rtt_result

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from calls import WAIT_S, Window  # noqa: E402

SERVICE, METHOD = "bench.Bench", "Echo"


def serve(ctl: Control, params: Params) -> None:
    asyncio.run(_serve(ctl, params))


async def _serve(ctl: Control, params: Params) -> None:
    tally = Tally(ctl, params)

    async def echo(data: bytes, context: grpc.aio.ServicerContext) -> bytes:
        tally.add(1, len(data))
        return data

    handler = grpc.method_handlers_generic_handler(SERVICE, {
        METHOD: grpc.unary_unary_rpc_method_handler(echo, request_deserializer=msgpack.unpackb,
                                                    response_serializer=msgpack.packb),
    })  # fmt: skip
    server = grpc.aio.server()
    server.add_generic_rpc_handlers((handler,))
    port = server.add_insecure_port(f"{HOST}:0")
    await server.start()
    ctl.send(port=port)
    await asyncio.get_running_loop().run_in_executor(None, ctl.wait_for, "stop")
    await server.stop(None)
    tally.final()


def client(ctl: Control, params: Params, port: int) -> None:
    result = asyncio.run(_client(params, port))
    ctl.send(result=result)
    ctl.wait_for("exit")


async def _client(params: Params, port: int) -> dict:
    async with grpc.aio.insecure_channel(f"{HOST}:{port}") as channel:
        echo = channel.unary_unary(f"/{SERVICE}/{METHOD}", request_serializer=msgpack.packb,
                                   response_deserializer=msgpack.unpackb)  # fmt: skip
        if params.variant == "seq":
            return await _sequential(echo, params)
        return await asyncio.wait_for(_pipelined(echo, params), WAIT_S * 4)


async def _sequential(echo, params: Params) -> dict:
    data = payload(params.size)
    clock = time.perf_counter_ns
    rtts: list[float] = []
    received = 0
    for i in range(params.total):
        t0 = clock()
        reply = await echo(data)
        t1 = clock()
        received += reply == data
        if i >= params.warm:
            rtts.append((t1 - t0) / 1000)
    return rtt_result(rtts, params.total, params.total * params.size, received)


async def _pipelined(echo, params: Params) -> dict:
    window = Window(params)
    data = window.data
    left = [params.total]

    async def caller() -> None:
        while left[0] > 0:
            left[0] -= 1
            window.reply(await echo(data))

    await asyncio.gather(*(caller() for _ in range(min(params.batch, params.total))))
    return window.result()
