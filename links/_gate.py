"""``ConnectionGate``: at most ``max_connections`` live connections on one listener.

The acceptor asks for a ``Permit`` before it builds a connection. When none is left, the new
socket is closed at once and ``svc.rejected`` is logged: refusing cleanly beats accepting a
connection we cannot serve. The permit travels with the connection and is released exactly
once when it ends, whichever half (or clone, or the peer) ends it first: ``release()`` is
idempotent under a lock, so racing closers cannot release it twice and over-count the gate.
"""

from __future__ import annotations

import threading

__all__ = ["ConnectionGate", "Permit"]


class Permit:
    """One slot of a gate, held by one connection."""

    __slots__ = ("_gate", "_released")

    def __init__(self, gate: ConnectionGate) -> None:
        self._gate = gate
        self._released = False

    def release(self) -> None:
        """Give the slot back. Safe to call any number of times from any thread."""
        gate = self._gate
        with gate._lock:
            if self._released:
                return
            self._released = True
            gate._in_use -= 1

    @property
    def released(self) -> bool:
        """Whether ``release()`` was called: True once the slot went back to the gate."""
        return self._released


class ConnectionGate:
    """Counts live connections against a maximum."""

    def __init__(self, max_connections: int) -> None:
        if max_connections < 1:
            raise ValueError("max_connections must be at least 1")
        self.max_connections = max_connections
        self._in_use = 0
        self._lock = threading.Lock()

    def try_acquire(self) -> Permit | None:
        """A permit, or None when the gate is full."""
        with self._lock:
            if self._in_use >= self.max_connections:
                return None
            self._in_use += 1
        return Permit(self)

    @property
    def in_use(self) -> int:
        """How many permits are held now (live connections on the listener); never raises."""
        return self._in_use

    @property
    def available(self) -> int:
        """How many more connections the gate would admit now (``max_connections - in_use``)."""
        return self.max_connections - self._in_use

    def __repr__(self) -> str:
        return f"ConnectionGate({self._in_use}/{self.max_connections})"
