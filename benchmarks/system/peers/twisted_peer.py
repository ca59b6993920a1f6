"""Twisted: ``Int32StringReceiver`` on the default reactor (epoll on Linux).

Server: ``stringReceived`` counts (or echoes with ``sendString``). Client: a streaming
producer registered with the transport, so it writes until Twisted says the buffer is full
(``pauseProducing``) and carries on when it has drained (``resumeProducing``): Twisted's own
way to send a stream without unbounded buffering. Twisted coalesces everything written in
one reactor pass into one ``send``, which is the batching it brings to the comparison.
``TCP_NODELAY`` is set on every connection, as the other peers do. W4 runs 100 connections
on one reactor.

Over TLS (``Params.tls``): ``listenSSL`` and ``connectSSL`` (Twisted's TLS, pyOpenSSL over
memory BIOs), with ``CertificateOptions`` built from the run's certificate files and held to
the same version and suite as the standard-library contexts of the other peers; the client
verifies the server's name through ``optionsForClientTLS``. The protocols are the same.
"""

from __future__ import annotations

import time
from typing import Any

from pathlib import Path

from twisted.internet import protocol, reactor, ssl
from twisted.internet.interfaces import IHandshakeListener
from twisted.protocols.basic import Int32StringReceiver
from zope.interface import implementer

from links.bench import (
    HOST,
    MAX_FRAME,
    TLS_CIPHER,
    TLS_SERVER_NAME,
    Control,
    Params,
    Tally,
    payload,
    rtt_result,
    tls_files,
)


def _pinned() -> dict[str, Any]:
    """``CertificateOptions`` arguments for the one version and suite of every TLS run."""
    return {"acceptableCiphers": ssl.AcceptableCiphers.fromOpenSSLCipherString(TLS_CIPHER),
            "raiseMinimumTo": ssl.TLSVersion.TLSv1_2, "lowerMaximumSecurityTo": ssl.TLSVersion.TLSv1_2}  # fmt: skip


def _server_options(directory: str) -> ssl.CertificateOptions:
    mine = ssl.PrivateCertificate.loadPEM(Path(tls_files(directory)[1]).read_text())
    return ssl.CertificateOptions(privateKey=mine.privateKey.original, certificate=mine.original, **_pinned())


def _client_options(directory: str) -> Any:
    ca = ssl.Certificate.loadPEM(Path(tls_files(directory)[0]).read_text())
    return ssl.optionsForClientTLS(TLS_SERVER_NAME, trustRoot=ca, extraCertificateOptions=_pinned())


@implementer(IHandshakeListener)
class _Negotiated:
    """Remembers the suite of a TLS connection once its handshake is complete (``result["tls"]``)."""

    negotiated = ""

    def handshakeCompleted(self) -> None:
        self.negotiated = self.transport.getHandle().get_cipher_name()  # type: ignore[attr-defined]


class _Counting(Int32StringReceiver):
    MAX_LENGTH = MAX_FRAME
    tally: Tally
    echo: bool

    def connectionMade(self) -> None:
        self.transport.setTcpNoDelay(True)

    def stringReceived(self, string: bytes) -> None:
        self.tally.add(1, len(string))
        if self.echo:
            self.sendString(string)


def serve(ctl: Control, params: Params) -> None:
    tally = Tally(ctl, params)
    factory = protocol.Factory()
    factory.protocol = type("Server", (_Counting,), {"tally": tally, "echo": params.workload == "w2"})
    if params.tls:
        port = reactor.listenSSL(0, factory, _server_options(params.tls), backlog=1024, interface=HOST)
    else:
        port = reactor.listenTCP(0, factory, backlog=1024, interface=HOST)
    ctl.send(port=port.getHost().port)
    ctl.on_line("stop", lambda: reactor.callFromThread(reactor.stop))
    reactor.run(installSignalHandlers=False)
    tally.final()


class _Sender(_Negotiated, Int32StringReceiver):
    """Sends ``warm`` messages, waits for ``go()``, sends ``count`` more, then closes.

    A streaming producer: Twisted calls ``pauseProducing`` from inside ``sendString`` once its
    buffer passes the limit, and ``resumeProducing`` when it has drained.
    """

    MAX_LENGTH = MAX_FRAME

    def __init__(self, data: bytes, params: Params, warmed: Any, done: Any) -> None:
        self.data, self.params, self.warmed, self.done = data, params, warmed, done
        self.sent = 0
        self.limit = params.warm  # raised to the total by go()
        self.paused = False

    def connectionMade(self) -> None:
        self.transport.setTcpNoDelay(True)
        self.transport.registerProducer(self, True)
        self._produce()

    def pauseProducing(self) -> None:
        self.paused = True

    def resumeProducing(self) -> None:
        self.paused = False
        self._produce()

    def go(self) -> None:
        self.limit = self.params.per_client
        if not self.paused:
            self._produce()

    def _produce(self) -> None:
        send, data = self.sendString, self.data
        while self.sent < self.limit and not self.paused:
            send(data)
            self.sent += 1
        if self.sent == self.params.warm and self.limit == self.params.warm:
            self.limit = -1  # report once
            self.warmed(self)
        elif self.sent == self.params.per_client and self.transport.producer is not None:
            self.transport.unregisterProducer()
            self.transport.loseConnection()  # after the buffered data is written

    def stopProducing(self) -> None:
        self.limit = self.sent

    def connectionLost(self, reason: Any = None) -> None:
        self.done(self)


class _PingPong(_Negotiated, Int32StringReceiver):
    MAX_LENGTH = MAX_FRAME

    def __init__(self, data: bytes, params: Params, done: Any) -> None:
        self.data, self.params, self.done = data, params, done
        self.i = self.received = 0
        self.rtts: list[float] = []
        self.t0 = 0

    def connectionMade(self) -> None:
        self.transport.setTcpNoDelay(True)
        self.t0 = time.perf_counter_ns()
        self.sendString(self.data)

    def stringReceived(self, string: bytes) -> None:
        t1 = time.perf_counter_ns()
        self.received += len(string) == len(self.data)
        if self.i >= self.params.warm:
            self.rtts.append((t1 - self.t0) / 1000)
        self.i += 1
        if self.i == self.params.total:
            self.transport.loseConnection()
            return
        self.t0 = time.perf_counter_ns()
        self.sendString(self.data)

    def connectionLost(self, reason: Any = None) -> None:
        self.done(self)


def client(ctl: Control, params: Params, port: int) -> None:
    data = payload(params.size)
    finished: list[Any] = []
    warmed: list[Any] = []
    result: dict[str, Any] = {}

    def all_warmed(proto: Any) -> None:
        warmed.append(proto)
        if len(warmed) == params.clients:
            ctl.send(warmed=True)  # the harness answers "go" once the server counted them all

    def go() -> None:
        result["t0"] = time.perf_counter()
        for proto in warmed:
            proto.go()

    def done(proto: Any) -> None:
        finished.append(proto)
        if len(finished) == params.clients:
            reactor.stop()

    class Factory(protocol.ClientFactory):
        def buildProtocol(self, addr: Any) -> Any:
            if params.workload == "w2":
                return _PingPong(data, params, done)
            return _Sender(data, params, all_warmed, done)

        def clientConnectionFailed(self, connector: Any, reason: Any) -> None:
            finished.append(None)
            if len(finished) == params.clients:
                reactor.stop()

    factory = Factory()
    if params.workload != "w2":
        ctl.on_line("go", lambda: reactor.callFromThread(go))
    for _ in range(params.clients):
        if params.tls:
            reactor.connectSSL(HOST, port, factory, _client_options(params.tls))
        else:
            reactor.connectTCP(HOST, port, factory)
    reactor.run(installSignalHandlers=False)
    if params.workload == "w2":
        (p,) = finished
        ok = p is not None and p.rtts
        result = (
            rtt_result(p.rtts, p.i, p.i * params.size, p.received) if ok else {"sent": 0, "bytes": 0, "received": 0}
        )
    else:
        sent = sum(p.sent for p in finished if p is not None)
        result.update(sent=sent, bytes=sent * params.size, received=0)
    # "" if any connection was not over TLS
    result["tls"] = min((p.negotiated if p is not None else "" for p in finished), default="")
    ctl.send(result=result)
    ctl.wait_for("exit")
