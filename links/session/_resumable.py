"""``Resumable``: the settings of resumable sessions, for ``Clt.connect`` and ``Svc.bind``."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ._accept import HelloReader
from ._driver import ServerRegistry, SessionDriver
from ._engine import Session

__all__ = ["Resumable"]


@dataclass
class Resumable:
    """Exactly-once, in-order delivery across connection cuts (see ``links.session``).

    Args:
        detached_ttl: server: seconds a session whose connection dropped waits for its client
            to resume before it is closed for good (its unacknowledged messages with it).
        max_messages, max_bytes: bounds of each side's replay buffer; a sender that would
            exceed them waits (or gets ``WOULD_BLOCK``): back-pressure, never silent loss.
        ack_every: frames received before a standalone ACK is sent when no data flows back.
        heartbeat_interval: seconds between session heartbeats on an idle connection.
        dead_after: heartbeat intervals of silence after which the peer is declared dead
            (the client then reconnects; the server detaches the session).
        handshake_timeout: seconds a new connection has to complete HELLO/WELCOME.

    Known limit: on a spawned service, a resume writes WELCOME and the replay (up to
    ``max_bytes``) on the poll thread; a resuming client that then stops reading holds that
    thread up to the transport's ``stall_timeout``. Keep ``max_bytes`` proportionate, or run
    the service's acceptor on a user thread (``Svc.accept``).
    """

    detached_ttl: float = 30.0
    max_messages: int = 4096
    max_bytes: int = 4 << 20
    ack_every: int = 32
    heartbeat_interval: float = 1.0
    dead_after: int = 3
    handshake_timeout: float = 5.0

    def __post_init__(self) -> None:
        # Each check says what is allowed, so that nan (false in every comparison) fails it.
        for name in ("detached_ttl", "heartbeat_interval", "handshake_timeout"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be a positive number of seconds, not {getattr(self, name)!r}")
        for name in ("max_messages", "max_bytes", "ack_every", "dead_after"):
            if not getattr(self, name) >= 1:
                raise ValueError(f"{name} must be at least 1, not {getattr(self, name)!r}")
        self._registry: ServerRegistry | None = None

    def client_driver(self) -> SessionDriver:
        """A fresh client session (one per ``Clt``)."""
        engine = Session(max_messages=self.max_messages, max_bytes=self.max_bytes, ack_every=self.ack_every)
        return SessionDriver(engine, self)

    def hello_reader(self, svc: Any, sock: Any, permit: Any, peer: Any) -> HelloReader:
        """A service's just-accepted socket, read until its HELLO (``links.session._accept``)."""
        return HelloReader(svc, sock, permit, peer)

    def registry(self) -> ServerRegistry:
        """The server's session registry (one per ``Svc`` using this object)."""
        if self._registry is None:
            self._registry = ServerRegistry(self)
        return self._registry
