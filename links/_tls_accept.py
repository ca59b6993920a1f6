"""The server side of a TLS handshake: a just-accepted socket until its handshake is complete.

With ``Svc.bind(tls=context)`` the acceptor makes a ``TlsAccept`` per accepted socket, a
``links._handshake.Handshake``: on the poll thread it advances as the client's bytes arrive,
never waiting, within the service's ``handshake_timeout``; on a user thread (``Svc.accept``)
it waits. Complete, the TLS transport goes to the service (``Svc.admit``), which builds the
connection over it as over a socket, or hands it to the session's HELLO first.

Every other way out closes the socket, releases the gate permit and says why:
``tls.handshake_failed`` (a certificate refused, a plaintext client, garbage) or
``tls.handshake_timeout`` (a peer that stalls, byte by byte or not at all).
"""

from __future__ import annotations

import ssl
from typing import TYPE_CHECKING, Any

from ._core._conid import Addr
from ._errors import LinksError, TLSError
from ._gate import Permit
from ._handshake import Handshake
from ._tls import TlsTransport

if TYPE_CHECKING:
    import socket

    from ._svc import Svc

__all__ = ["TlsAccept"]

#: Seconds a TLS handshake may take when the service sets no ``handshake_timeout``.
DEFAULT_TLS_HANDSHAKE_TIMEOUT = 10.0


class TlsAccept(Handshake):
    """One accepted socket of a TLS service, until its handshake is complete."""

    timeout_reason = "tls.handshake_timeout"
    done_reason = "tls"

    def __init__(self, svc: Svc, sock: socket.socket, context: ssl.SSLContext, permit: Permit, peer: Addr) -> None:
        super().__init__(svc, TlsTransport.server(sock, context), permit, peer)

    @property
    def timeout(self) -> float:
        limit = self.svc.handshake_timeout
        return DEFAULT_TLS_HANDSHAKE_TIMEOUT if limit is None else limit

    def step(self) -> None:
        transport = self.transport
        assert isinstance(transport, TlsTransport)
        try:
            done = transport.handshake_step()
        except LinksError as e:
            self.abandon("tls.handshake_failed" if isinstance(e, TLSError) else "peer_closed", error=str(e))
            return
        if done:
            self.finish()
            self.hand_on(self.svc.admit(transport, self.permit, self.peer))

    def log_abandoned(self, reason: str, fields: dict[str, Any]) -> None:
        if reason == self.timeout_reason:
            self.svc.log.warning(reason, con_id=self.con_id, handshake_timeout=self.timeout)
        else:
            self.svc.log.warning("tls.handshake_failed", con_id=self.con_id, reason=reason, **fields)
