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
        detached_ttl: server: seconds a session whose connection was cut waits for its client
            to resume before it is closed for good (its unacknowledged messages with it). A
            ``close()`` on either side is no cut: its BYE ends the session on both at once.
        max_messages, max_bytes: bounds of each side's replay buffer; a sender that would
            exceed them waits (or gets ``WOULD_BLOCK``): back-pressure, never silent loss.
        ack_every: frames received before a standalone ACK is sent when no data flows back.
        heartbeat_interval: seconds between session heartbeats on an idle connection.
        dead_after: heartbeat intervals of silence after which the peer is declared dead
            (the client then reconnects; the server detaches the session).
        handshake_timeout: seconds a new connection has to complete HELLO/WELCOME.
        max_sessions: server: sessions it keeps at most, attached or detached (None: twice the
            service's ``max_connections``). A new session beyond it takes the place of the
            detached one that waited longest (``session.evicted``); with none detached it is
            refused (REJECT, ``busy``). So a service's replay buffers hold at most
            ``max_sessions * max_bytes``.

    A resume's WELCOME and replay are owed to the new socket (``links._outbound``): a resuming
    client that stops reading costs its own connection, never the poll thread.
    """

    detached_ttl: float = 30.0
    max_messages: int = 4096
    max_bytes: int = 4 << 20
    ack_every: int = 32
    heartbeat_interval: float = 1.0
    dead_after: int = 3
    handshake_timeout: float = 5.0
    max_sessions: int | None = None

    def __post_init__(self) -> None:
        # Each check says what is allowed, so that nan (false in every comparison) fails it.
        for name in ("detached_ttl", "heartbeat_interval", "handshake_timeout"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be a positive number of seconds, not {getattr(self, name)!r}")
        if self.max_sessions is not None and not self.max_sessions >= 1:
            raise ValueError(f"max_sessions must be at least 1, not {self.max_sessions!r}")
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

    def registry(self, max_connections: int = 128) -> ServerRegistry:
        """The server's session registry (one per ``Svc`` using this object), bounded by
        ``max_sessions``, or twice the service's ``max_connections``."""
        if self._registry is None:
            bound = self.max_sessions if self.max_sessions is not None else 2 * max_connections
            self._registry = ServerRegistry(self, bound)
        return self._registry
