"""``ConId``: who a connection is, for logs, ``repr`` and routing (``Svc.send_to``)."""

from __future__ import annotations

import enum
from dataclasses import dataclass

__all__ = ["ConId", "Role", "Addr", "parse_addr", "format_addr"]

Addr = tuple[str, int]


class Role(enum.Enum):
    """Which side opened the connection."""

    INITIATOR = "Initiator"
    ACCEPTOR = "Acceptor"


def parse_addr(addr: str | Addr) -> Addr:
    """Turn ``"host:port"`` (or an already split pair) into ``(host, port)``.

    Raises:
        ValueError: the text has no ``:port`` or the port is not a number.
    """
    if isinstance(addr, tuple):
        return (addr[0], int(addr[1]))
    host, sep, port = addr.rpartition(":")
    if not sep or not port.isdigit():
        raise ValueError(f"expected 'host:port', got {addr!r}")
    return (host.strip("[]") or "0.0.0.0", int(port))


def format_addr(addr: Addr | None) -> str:
    return "?" if addr is None else f"{addr[0]}:{addr[1]}"


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
