"""links: a ``links.rpc.Server`` served on a ``Svc``, a ``links.rpc.connect`` client.

Server: ``links.rpc.serve`` (the acceptor and every receiver on the poll thread), ``echo``
registered with ``@server.method`` and run there (it never blocks: the default, and what the
README says to use for such handlers). Client: ``links.rpc.connect``; ``seq`` makes each call
with ``call`` on the calling thread, ``pipe`` keeps ``Params.batch`` calls in flight with
``call_async`` and the same window as grpcio's futures (``calls.pipelined_futures``), and
``pipe_many`` refills that window with ``call_many``, whose requests go out in one write
(``calls.pipelined_batches``).
"""

from __future__ import annotations

import os
import sys
from functools import partial

import links
import links.rpc
from links.bench import HOST, Control, Params, Tally, quiet_logs

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from calls import pipelined_batches, pipelined_futures, sequential  # noqa: E402


def serve(ctl: Control, params: Params) -> None:
    quiet_logs()
    tally = Tally(ctl, params)
    server = links.rpc.Server()

    @server.method
    def echo(data: bytes) -> bytes:
        tally.add(1, len(data))
        return data

    svc = links.rpc.serve(f"{HOST}:0", server, max_connections=16)
    ctl.send(port=svc.local_addr[1])
    ctl.wait_for("stop")
    tally.final()
    svc.close()
    links.shutdown()


def client(ctl: Control, params: Params, port: int) -> None:
    quiet_logs()
    with links.rpc.connect(f"{HOST}:{port}", timeout=10, max_in_flight=max(params.batch, 1)) as rpc:
        # No timeout on the calls, as grpcio's are made: the harness bounds the measurement.
        if params.variant == "seq":
            result = sequential(partial(rpc.call, "echo"), params)
        elif params.variant == "pipe":
            result = pipelined_futures(partial(rpc.call_async, "echo"), params)
        else:  # pipe_many: the window refilled with one call_many (one write) per batch
            call_many = rpc.call_many
            result = pipelined_batches(lambda count, data: call_many([("echo", (data,))] * count), params)
    links.shutdown()
    ctl.send(result=result)
    ctl.wait_for("exit")
