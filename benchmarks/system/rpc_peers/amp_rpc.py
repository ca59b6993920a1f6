"""Twisted AMP: ``callRemote`` of an ``Echo`` command on the default reactor (epoll on Linux).

``Echo`` takes one ``String`` argument and answers it back; the server's ``AMP`` subclass
answers through ``@Echo.responder``. ``seq``: each reply's callback times the call and makes
the next one. ``pipe``: ``Params.batch`` calls are made at once and each reply's callback makes
one more, so that many stay in flight. ``TCP_NODELAY`` on both ends, as the other peers have it.
"""

from __future__ import annotations

import os
import sys
import time
from typing import Any

from twisted.internet import protocol, reactor
from twisted.protocols import amp

from links.bench import HOST, Control, Params, Tally, payload, rtt_result

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from calls import Window  # noqa: E402


class Echo(amp.Command):
    arguments = [(b"data", amp.String())]
    response = [(b"data", amp.String())]


class _NoDelay(amp.AMP):
    def connectionMade(self) -> None:
        super().connectionMade()
        self.transport.setTcpNoDelay(True)


def serve(ctl: Control, params: Params) -> None:
    tally = Tally(ctl, params)

    class Server(_NoDelay):
        @Echo.responder
        def echo(self, data: bytes) -> dict[str, bytes]:
            tally.add(1, len(data))
            return {"data": data}

    factory = protocol.Factory.forProtocol(Server)
    port = reactor.listenTCP(0, factory, interface=HOST)
    ctl.send(port=port.getHost().port)
    ctl.on_line("stop", lambda: reactor.callFromThread(reactor.stop))
    reactor.run(installSignalHandlers=False)
    tally.final()


def client(ctl: Control, params: Params, port: int) -> None:
    out: dict[str, Any] = {}

    def failed(reason: Any) -> None:
        out["error"] = str(reason)
        reactor.stop()

    def connected(proto: amp.AMP) -> None:
        (_sequential if params.variant == "seq" else _pipelined)(proto, params, out)

    creator = protocol.ClientCreator(reactor, _NoDelay)
    creator.connectTCP(HOST, port).addCallbacks(connected, failed)
    reactor.run(installSignalHandlers=False)
    result = out.get("result") or {"sent": 0, "bytes": 0, "received": 0, "p50": float("nan"), "p99": float("nan")}
    ctl.send(result=result)
    ctl.wait_for("exit")


def _sequential(proto: amp.AMP, params: Params, out: dict[str, Any]) -> None:
    data = payload(params.size)
    clock = time.perf_counter_ns
    rtts: list[float] = []
    state = {"i": 0, "received": 0, "t0": 0}

    def call() -> None:
        state["t0"] = clock()
        proto.callRemote(Echo, data=data).addCallbacks(answered, stop)

    def answered(reply: dict[str, bytes]) -> None:
        t1 = clock()
        state["received"] += reply["data"] == data
        if state["i"] >= params.warm:
            rtts.append((t1 - state["t0"]) / 1000)
        state["i"] += 1
        if state["i"] < params.total:
            call()
        else:
            out["result"] = rtt_result(rtts, state["i"], state["i"] * params.size, state["received"])
            stop(None)

    def stop(_: Any) -> None:
        proto.transport.loseConnection()
        reactor.stop()

    call()


def _pipelined(proto: amp.AMP, params: Params, out: dict[str, Any]) -> None:
    window = Window(params)
    data = window.data
    issued = [0]

    def call() -> None:
        issued[0] += 1
        proto.callRemote(Echo, data=data).addCallbacks(answered, stop)

    def answered(reply: dict[str, bytes]) -> None:
        if window.reply(reply["data"]):
            out["result"] = window.result()
            stop(None)
        elif issued[0] < params.total:
            call()

    def stop(_: Any) -> None:
        proto.transport.loseConnection()
        reactor.stop()

    for _ in range(min(params.batch, params.total)):
        call()
