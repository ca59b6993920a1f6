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
from .._clock import time_left
from .._clt import Clt
from .._connection import Connection
from .._core._buffer import ReceiveBuffer
from .._core._conid import Addr, Role, format_addr
from .._core._status import TaskStatus
from .._errors import FrameTooLarge, LinksError
from .._gate import Permit
from .._tls import peer_identity
from .._transport import Transport
from . import _wire
from ._driver import SessionDriver
from ._engine import SessionRejected

if TYPE_CHECKING:
    import socket

    from .._poll import PollHandler
    from .._svc import Svc

__all__ = ["HelloReader", "admit"]


class HelloReader:
    """A just-accepted socket of a session service, until its first frame (HELLO) is whole.

    On the poll thread it is a registered handler with a deadline on the timer; on a user
    thread (``Svc.accept``) ``read(deadline)`` waits for the frame. Either way it then hands
    the socket to ``admit`` and is done.
    """

    poll_kind = "handshake"

    def __init__(self, svc: Svc, sock: socket.socket, permit: Permit, peer: Addr) -> None:
        self.svc = svc
        self.sock = sock
        # Raw socket calls live in a transport alone (a TLS one already, under TLS).
        self.transport = sock if isinstance(sock, Transport) else Transport(sock)
        self.permit = permit
        self.peer = peer
        self.con_id = f"{svc.name}<-{format_addr(peer)}"
        self.closed = False
        self._buffer = ReceiveBuffer(capacity=256, read_size=256)
        self._poll: PollHandler | None = None
        self._deadline: Any = None

    def fileno(self) -> int:
        return self.transport.fileno()

    def start(self, poll: PollHandler) -> None:
        """Poll thread: wait for the HELLO there, bounded by the handshake timeout."""
        assert self.svc.session is not None
        self._poll = poll
        timeout = self.svc.session.handshake_timeout

        def expire() -> TaskStatus:
            if not self.closed:
                poll.call_soon(lambda: self._abandon("session.handshake_timeout"))
            return TaskStatus.TERMINATE

        # The deadline first: on the poll thread add() services the socket at once, and a
        # HELLO already there finishes it, which must find the deadline to cancel.
        self._deadline = self.svc.timer_or_default().schedule(f"hello {self.con_id}", timeout, expire)
        poll.add(self)

    def read(self, deadline: float | None) -> bool:
        """User thread: read until the HELLO is admitted (True) or abandoned/timed out (False)."""
        while not self.closed:
            if not self.on_readable():
                return False
            if self.closed:
                return True
            left = time_left(deadline)
            if left == 0.0:
                self._abandon("session.handshake_timeout")
                return False
            self.transport.wait_readable(left)
        return True

    def on_readable(self) -> bool:
        if self.closed:
            return True
        try:
            n = self.transport.recv_into(self._buffer.writable())
        except LinksError:
            self._abandon("peer_closed")
            return False
        if n == 0:
            return True  # nothing yet
        self._buffer.commit(n)
        try:
            frame = self._buffer.next_frame(_wire.HELLO_FRAMER)
        except FrameTooLarge as e:
            self.svc.log.warning("frame.too_large", con_id=self.con_id, size=e.size, max_frame_size=e.max_frame_size)
            self._abandon("frame.too_large")
            return False
        if frame is None:
            return True
        hello = bytes(frame)
        leftover = self._buffer.take_pending()  # a client waits for WELCOME, but be exact
        self._finish()
        admit(self.svc, self.sock, self.permit, self.peer, hello, leftover)
        return True

    def _finish(self) -> None:
        self.closed = True
        if self._deadline is not None:
            self._deadline.cancel()
        if self._poll is not None:
            self._poll.remove(self, "hello")

    def _abandon(self, reason: str) -> None:
        if self.closed:
            return
        self.svc.log.info("session.abandoned", con_id=self.con_id, reason=reason)
        self.closed = True
        if self._deadline is not None:
            self._deadline.cancel()
        self.permit.release()
        if self._poll is not None:
            self._poll.remove(self, reason, then=self.transport.close)
        else:
            self.transport.close()

    def on_poll_failure(self, error: BaseException | None) -> None:
        self._abandon("poll_shutdown" if error is None else "failed")


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
