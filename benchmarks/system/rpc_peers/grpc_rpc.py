"""grpcio: unary calls through generic handlers, msgpack serializers (no protobuf codegen).

Server: ``grpc.server`` on a ``ThreadPoolExecutor`` (10 workers, as gRPC's own examples),
one generic handler for the service ``bench.Bench`` with the method ``Echo``, whose request
and response are msgpack. Client: one insecure channel and its ``unary_unary`` callable;
``seq`` calls it (the blocking call), ``pipe`` keeps ``Params.batch`` calls in flight with
``.future()``.
"""

from __future__ import annotations

import os
import sys
from concurrent.futures import ThreadPoolExecutor

import grpc
import msgpack

from links.bench import HOST, Control, Params

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from calls import LockedTally, pipelined_futures, sequential  # noqa: E402

SERVICE, METHOD = "bench.Bench", "Echo"
WORKERS = 10


def serve(ctl: Control, params: Params) -> None:
    tally = LockedTally(ctl, params)

    def echo(data: bytes, context: grpc.ServicerContext) -> bytes:
        tally.add(len(data))
        return data

    handler = grpc.method_handlers_generic_handler(SERVICE, {
        METHOD: grpc.unary_unary_rpc_method_handler(echo, request_deserializer=msgpack.unpackb,
                                                    response_serializer=msgpack.packb),
    })  # fmt: skip
    server = grpc.server(ThreadPoolExecutor(max_workers=WORKERS))
    server.add_generic_rpc_handlers((handler,))
    port = server.add_insecure_port(f"{HOST}:0")
    server.start()
    ctl.send(port=port)
    ctl.wait_for("stop")
    server.stop(None).wait()
    tally.final()


def client(ctl: Control, params: Params, port: int) -> None:
    with grpc.insecure_channel(f"{HOST}:{port}") as channel:
        echo = channel.unary_unary(f"/{SERVICE}/{METHOD}", request_serializer=msgpack.packb,
                                   response_deserializer=msgpack.unpackb)  # fmt: skip
        if params.variant == "seq":
            result = sequential(echo, params)
        else:
            result = pipelined_futures(echo.future, params)
    ctl.send(result=result)
    ctl.wait_for("exit")
