"""``ConId``: who a connection is, for logs, ``repr`` and routing (``Svc.send_to``)."""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass

__all__ = ["ConId", "Role", "Addr", "parse_addr", "format_addr"]

Addr = tuple[str, int]


class Role(enum.Enum):
    """Which side opened the connection."""

    INITIATOR = "Initiator"
    ACCEPTOR = "Acceptor"


def parse_addr(addr: str | Addr, *, bind: bool = False) -> Addr:
    """Turn ``"host:port"`` (or an already split pair) into ``(host, port)``.

    Args:
        addr: ``"host:port"``, ``"[v6 address]:port"`` or a ``(host, port)`` pair.
        bind: the address is one to listen on, where port 0 means "any free port"; a port
            to connect to must be 1-65535.

    Raises:
        ValueError: the text has no ``:port``, the port is not a number, or it is out of
            range (the socket layer would silently wrap 70000 to 4464).
    """
    if isinstance(addr, tuple):
        host, port = addr[0], int(addr[1])
    else:
        host, sep, text = addr.rpartition(":")
        if not sep or not re.fullmatch(r"-?[0-9]+", text):
            raise ValueError(f"expected 'host:port', got {addr!r}")
        host, port = host.strip("[]") or "0.0.0.0", int(text)
    least = 0 if bind else 1
    if not least <= port <= 65535:
        raise ValueError(f"port out of range {least}-65535: {port}")
    return (host, port)


def format_addr(addr: Addr | None) -> str:
    """``host:port`` for logs and messages (``[v6 address]:port``, as ``parse_addr`` reads it)."""
    if addr is None:
        return "?"
    host = addr[0]
    return f"[{host}]:{addr[1]}" if ":" in host else f"{host}:{addr[1]}"


@dataclass(frozen=True, slots=True)
class ConId:
    """Identity of one connection: its role, a user-chosen name and both addresses.

    ``str()`` reads in the direction of the connection::

        Initiator(clt@127.0.0.1:50000->127.0.0.1:8080)
        Acceptor(svc@127.0.0.1:8080<-127.0.0.1:50000)
    """

    role: Role
    name: str
    local: Addr | None = None
    peer: Addr | None = None

    def __str__(self) -> str:
        local, peer = format_addr(self.local), format_addr(self.peer)
        if self.role is Role.INITIATOR:
            return f"Initiator({self.name}@{local}->{peer})"
        return f"Acceptor({self.name}@{local}<-{peer})"
