"""Resumable sessions: exactly-once, in-order delivery across connection cuts.

Pass ``session=links.session.Resumable(...)`` to ``links.Clt.connect`` (usually with
``reconnect=links.Backoff(...)``) and to ``links.Svc.bind``. Every message then carries a
sequence number and a cumulative ack; each side keeps what the other has not acknowledged and,
on every new connection, a HELLO/WELCOME handshake with a 16-byte random resume key tells each
side what the other missed. The result, while both processes live: every message is delivered
exactly once and in order, in both directions, across any number of cuts. A ``close()`` says
BYE and ends the session on both sides at once; only a cut leaves it waiting to resume. A process crash
loses what was only in memory; nothing here is written to disk.

The engine (``Session``, ``ServerSessions``) is Sans-I/O and can be driven without sockets;
``links.testing`` runs it over a simulated network.
"""

from ._engine import (
    ReplayBuffer as ReplayBuffer,
    ServerSessions as ServerSessions,
    Session as Session,
    SessionLost as SessionLost,
    SessionRejected as SessionRejected,
    SessionState as SessionState,
)
from ._resumable import Resumable as Resumable

__all__ = ["ReplayBuffer", "Resumable", "ServerSessions", "Session", "SessionLost", "SessionRejected", "SessionState"]
