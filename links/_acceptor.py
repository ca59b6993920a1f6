"""``Acceptor``: a service's listening socket on the poll thread (or in ``Svc.accept``).

Each accepted socket first asks the service's gate for a permit: with none left it is closed
at once (``svc.rejected``). Then the stack decides who speaks first: a layer with a handshake
of its own (TLS, ``links._tls_accept``; a session's HELLO, ``links.session._accept``) gets the
socket and hands the connection back to the service when it is done; without one, the
connection is made at once (``Svc.connection_over``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ._clt import Clt
from ._core._conid import format_addr
from ._core._status import AcceptStatus
from ._sockets import accept as accept_socket
from ._sockets import set_liveness
from ._tls_accept import TlsAccept

if TYPE_CHECKING:
    import socket

    from ._svc import Svc

__all__ = ["Acceptor", "ACCEPT_BATCH"]

#: Accepts per readiness event: a bounded batch, so a connect storm cannot starve traffic.
ACCEPT_BATCH = 64


class Acceptor:
    """The listening socket's handler: gate check, then a ``Clt`` per accepted socket."""

    poll_kind = "acceptor"

    def __init__(self, svc: Svc, sock: socket.socket) -> None:
        self.svc = svc
        self.sock = sock
        self.con_id = svc.name  # for poll log lines

    def fileno(self) -> int:
        return self.sock.fileno()

    @property
    def closed(self) -> bool:
        return self.svc._closed

    def accept_once(self) -> tuple[AcceptStatus, Any]:
        """Accept one pending connection without waiting: a ``Clt``, or a layer's handshake
        to run first (a session's ``HelloReader``), or None.

        Raises:
            OSError: out of fds or buffers (logged by the caller; the listener stays usable).
        """
        accepted = accept_socket(self.sock)
        if accepted is None:
            return AcceptStatus.WOULD_BLOCK, None
        sock, peer = accepted
        svc = self.svc
        set_liveness(sock, **svc.liveness)
        permit = svc.gate.try_acquire()
        if permit is None:
            sock.close()
            svc.log.warning("svc.rejected", peer=format_addr(peer), max_connections=svc.gate.max_connections)
            return AcceptStatus.REJECTED, None
        # A layer's handshake goes first: TLS's (links._tls_accept), a session's HELLO; each
        # hands the connection on when it is done.
        if svc.tls is not None:
            return AcceptStatus.ACCEPTED, TlsAccept(svc, sock, svc.tls, permit, peer)
        if svc.session is not None:
            return AcceptStatus.ACCEPTED, svc.session.hello_reader(svc, sock, permit, peer)
        clt = svc.connection_over(sock, permit, peer)
        if clt is None and svc.mux is None:
            return AcceptStatus.REJECTED, None
        return AcceptStatus.ACCEPTED, clt  # with mux: None, its channels join as they open

    def on_readable(self) -> bool:
        """Poll thread: accept a bounded batch; every connection joins the live pool."""
        for _ in range(ACCEPT_BATCH):
            try:
                status, clt = self.accept_once()
            except OSError as e:
                # EMFILE and friends: the pending connection stays queued in the kernel.
                # Level-triggered polling reports the listener again next pass.
                self.svc.log.error("svc.accept_failed", error=repr(e))
                return True
            if status is AcceptStatus.WOULD_BLOCK:
                return True
            if isinstance(clt, Clt):
                self.svc._pool_spawned(clt)
            elif clt is not None:  # a layer's handshake (a session's HELLO) goes first
                assert self.svc._spawned_on is not None
                clt.start(self.svc._spawned_on)
        return True

    def on_poll_failure(self, error: BaseException | None) -> None:
        self.svc.close()

    def __repr__(self) -> str:
        return f"Acceptor({self.svc.name}@{format_addr(self.svc.local_addr)})"
