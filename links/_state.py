"""``ConnState``: where a logical connection is in its life.

::

    DISCONNECTED --publish--> CONNECTED --lost--> DISCONNECTED (redialing, or a session detached)
         |                        |
         +--------close-----------+--close--> CLOSED (for good; every later call raises)

A connection starts DISCONNECTED (opening and handshaking its first attachment), is
CONNECTED while an attachment is current, goes back to DISCONNECTED when that attachment
is lost and a reconnect or a session resume may follow, and ends CLOSED. ``TRANSITIONS``
is the table the engine keeps to; a test checks every transition it makes against it.
"""

from __future__ import annotations

import enum

__all__ = ["ConnState", "TRANSITIONS"]


class ConnState(enum.Enum):
    CONNECTED = "connected"  # an attachment is up
    DISCONNECTED = "disconnected"  # not yet, or between attachments: redialing, or a session waiting to resume
    CLOSED = "closed"  # for good


#: state -> the states it may move to.
TRANSITIONS: dict[ConnState, frozenset[ConnState]] = {
    ConnState.DISCONNECTED: frozenset({ConnState.CONNECTED, ConnState.CLOSED}),
    ConnState.CONNECTED: frozenset({ConnState.DISCONNECTED, ConnState.CLOSED}),
    ConnState.CLOSED: frozenset(),
}
