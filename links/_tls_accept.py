"""The server side of a TLS handshake: a just-accepted socket until its handshake is complete.

With ``Svc.bind(tls=context)`` the acceptor makes a ``TlsAccept`` per accepted socket. On the
poll thread it is a registered handler that advances the handshake as the client's bytes
arrive, never waiting, with a deadline on the timer (the service's ``handshake_timeout``); on
a user thread (``Svc.accept``) ``read(deadline)`` waits for it. Complete, the TLS transport
goes to the service (``Svc.admit``), which builds the connection over it as over a socket.

Until then every way out closes the socket and releases the gate permit, and says why:
``tls.handshake_failed`` (a certificate refused, a plaintext client, garbage) or
``tls.handshake_timeout`` (a peer that stalls, byte by byte or not at all).
"""

from __future__ import annotations

import ssl
from typing import TYPE_CHECKING, Any

from ._clock import time_left
from ._core._conid import Addr, format_addr
from ._core._status import TaskStatus
from ._errors import LinksError, TLSError
from ._gate import Permit
from ._tls import TlsTransport

if TYPE_CHECKING:
    import socket

    from ._poll import PollHandler
    from ._svc import Svc

__all__ = ["TlsAccept"]

#: Seconds a TLS handshake may take when the service sets no ``handshake_timeout``.
DEFAULT_TLS_HANDSHAKE_TIMEOUT = 10.0


class TlsAccept:
    """One accepted socket of a TLS service, until its handshake is complete."""

    poll_kind = "handshake"

    def __init__(self, svc: Svc, sock: socket.socket, context: ssl.SSLContext, permit: Permit, peer: Addr) -> None:
        self.svc = svc
        self.transport = TlsTransport.server(sock, context)
        self.permit = permit
        self.peer = peer
        self.con_id = f"{svc.name}<-{format_addr(peer)}"
        self.closed = False
        self.next: Any = None  # the next layer's handshake (a session's HELLO), once TLS's is done
        self._poll: PollHandler | None = None
        self._deadline: Any = None

    @property
    def timeout(self) -> float:
        limit = self.svc.handshake_timeout
        return DEFAULT_TLS_HANDSHAKE_TIMEOUT if limit is None else limit

    def fileno(self) -> int:
        return self.transport.fileno()

    def start(self, poll: PollHandler) -> None:
        """Poll thread: advance the handshake there, bounded by the deadline."""
        self._poll = poll

        def expire() -> TaskStatus:
            if not self.closed:
                poll.call_soon(lambda: self._abandon("tls.handshake_timeout"))
            return TaskStatus.TERMINATE

        # The deadline first: add() services the socket at once, and a handshake that
        # completes there must find the deadline to cancel.
        self._deadline = self.svc.timer_or_default().schedule(f"tls {self.con_id}", self.timeout, expire)
        poll.add(self)

    def read(self, deadline: float | None) -> bool:
        """User thread: advance the handshake until it is complete (True) or abandoned (False)."""
        while not self.closed:
            if not self.on_readable():
                return False
            if self.closed:
                return True if self.next is None else self.next.read(deadline)
            left = time_left(deadline)
            if left == 0.0:
                self._abandon("tls.handshake_timeout")
                return False
            self.transport.wait_readable(left)
        return True

    def on_readable(self) -> bool:
        if self.closed:
            return True
        try:
            done = self.transport.handshake_step()
        except LinksError as e:
            self._abandon("tls.handshake_failed" if isinstance(e, TLSError) else "peer_closed", str(e))
            return False
        if done:
            self._finish()
            self.next = self.svc.admit(self.transport, self.permit, self.peer)
            if self.next is not None and self._poll is not None:
                self.next.start(self._poll)
        return True

    def _finish(self) -> None:
        self.closed = True
        if self._deadline is not None:
            self._deadline.cancel()
        if self._poll is not None:
            self._poll.remove(self, "tls")

    def _abandon(self, reason: str, error: str | None = None) -> None:
        if self.closed:
            return
        fields = {"error": error} if error else {}
        if reason == "tls.handshake_timeout":
            self.svc.log.warning(reason, con_id=self.con_id, handshake_timeout=self.timeout)
        else:
            self.svc.log.warning("tls.handshake_failed", con_id=self.con_id, reason=reason, **fields)
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
