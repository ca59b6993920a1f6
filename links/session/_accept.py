"""The server side of a session's handshake: a just-accepted socket until its HELLO, then
a new session, a resumed one, or a refusal.

``Svc`` knows nothing of sessions: with ``session=Resumable(...)`` its acceptor asks the
``Resumable`` for a ``HelloReader`` per accepted socket (``Resumable.hello_reader``), and
the reader hands the socket back through ``admit`` once the HELLO is whole. A new session
is a new logical connection, which joins the service's pool (``Svc.admitted``); a resumed
one carries on over the new socket (same ``con_id``, same pool entry) and nothing joins.

A HELLO is read with a limit fit for a HELLO (``_wire.HELLO_FRAMER``), within the session's
``handshake_timeout``: on the poll thread through a timer deadline, on a user thread
(``Svc.accept``) by waiting on the socket. Until ``Connection.open`` owns the socket, every
way out closes it and releases its gate permit: a client that resets right after its HELLO
must not keep a slot.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from .._callbacks import DevNullCallback
from .._clt import Clt
from .._connection import Connection
from .._core._buffer import ReceiveBuffer
from .._core._conid import Addr, Role, format_addr
from .._errors import FrameTooLarge, LinksError
from .._gate import Permit
from .._handshake import Handshake
from .._tls import peer_identity
from .._transport import Transport
from . import _wire
from ._driver import SessionDriver
from ._engine import SessionRejected

if TYPE_CHECKING:
    import socket

    from .._svc import Svc

__all__ = ["HelloReader", "admit"]


class HelloReader(Handshake):
    """A just-accepted socket of a session service, until its first frame (HELLO) is whole
    (a ``links._handshake.Handshake``); then it hands the socket to ``admit``."""

    timeout_reason = "session.handshake_timeout"
    done_reason = "hello"

    def __init__(self, svc: Svc, sock: socket.socket | Transport, permit: Permit, peer: Addr) -> None:
        # A socket, or a TLS transport over one already (under TLS).
        super().__init__(svc, sock if isinstance(sock, Transport) else Transport(sock), permit, peer)
        self.sock = sock
        self._buffer = ReceiveBuffer(capacity=256, read_size=256)

    @property
    def timeout(self) -> float:
        assert self.svc.session is not None
        return self.svc.session.handshake_timeout

    def step(self) -> None:
        try:
            n = self.transport.recv_into(self._buffer.writable())
        except LinksError:
            self.abandon("peer_closed")
            return
        if n == 0:
            return  # nothing yet
        self._buffer.commit(n)
        try:
            frame = self._buffer.next_frame(_wire.HELLO_FRAMER)
        except FrameTooLarge as e:
            self.svc.log.warning("frame.too_large", con_id=self.con_id, size=e.size, max_frame_size=e.max_frame_size)
            self.abandon("frame.too_large")
            return
        if frame is None:
            return
        hello = bytes(frame)
        leftover = self._buffer.take_pending()  # a client waits for WELCOME, but be exact
        self.finish()
        admit(self.svc, self.sock, self.permit, self.peer, hello, leftover)

    def log_abandoned(self, reason: str, fields: dict[str, Any]) -> None:
        self.svc.log.info("session.abandoned", con_id=self.con_id, reason=reason)


def admit(svc: Svc, sock: socket.socket, permit: Permit, peer_addr: Addr, hello: bytes, leftover: bytes) -> None:
    """A whole HELLO arrived on ``sock``: start a session, resume one, or refuse."""
    registry, config = svc.registry, svc.session
    assert registry is not None and config is not None
    peer = format_addr(peer_addr)  # from accept(): getpeername() fails once the peer reset
    try:
        engine, owner, resumed, peer_last = registry.hello(memoryview(hello))
    except (SessionRejected, LinksError) as e:
        svc.log.warning("session.rejected", peer=peer, reason=str(e))
        _refuse(sock, permit, e.reply if isinstance(e, SessionRejected) else b"")
        return
    except Exception as e:  # a bug must not cost a gate slot either
        svc.log.error("svc.accept_failed", peer=peer, error=repr(e))
        _refuse(sock, permit, b"")
        return
    if owner is not None:
        con: Connection = owner
        old = con.attachment
        if old is not None:
            con.lost(old, "superseded", None)
    else:
        driver = SessionDriver(engine, config, registry)
        con = Connection(
            Role.ACCEPTOR, svc.name, protocol_factory=svc.protocol,
            callback=DevNullCallback() if svc.callback is None else svc.callback,
            timer=svc.timer_or_default(), poll=svc.poll_or_default, session=driver, **svc.limits,
        )  # fmt: skip
        driver.connection = con
        registry.set_owner(engine, con)
    # Before open(): the Clt gives the connection its sender, the ``con`` that on_connect
    # gets (a session's hooks see the logical connection's sender).
    clt = Clt(con) if owner is None else None
    try:
        att = con.open(sock, time.monotonic(), permit, wait=False)
        if leftover:
            att.link.receive_data(leftover)
        con.publish(att, lambda: driver_of(con).server_attach(peer_last, resumed))
    except Exception as e:
        svc.log.error("svc.accept_failed", peer=peer, error=repr(e))
        if clt is not None:
            con.close("accept_failed")  # forget the session it had just started
        return
    if clt is None:
        con.log.info("session.resumed", peer=peer, resumes=engine.resumes)
        return
    svc.log.info(
        "svc.accepted", con_id=str(con.con_id), in_use=svc.gate.in_use, max_connections=svc.gate.max_connections,
        **peer_identity(getattr(sock, "peer_certificate", None)),
    )  # fmt: skip
    con.log.info("session.started", peer=peer)
    svc.admitted(clt)


def driver_of(con: Connection) -> SessionDriver:
    driver = con.session
    assert isinstance(driver, SessionDriver)
    return driver


def _refuse(sock: socket.socket, permit: Permit, reply: bytes) -> None:
    transport = sock if isinstance(sock, Transport) else Transport(sock)
    try:
        if reply:
            transport.send_some(reply)  # best effort: a REJECT the client can read before EOF
    except LinksError:
        pass
    transport.close()
    permit.release()
