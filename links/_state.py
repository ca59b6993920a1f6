"""``ConnState``: where a logical connection is in its life, and the moves it may make.

::

    OPENING ──open──▶ HANDSHAKING ──publish──▶ CONNECTED ──lost──▶ DETACHED
                          ▲   │                                      │
                          │   └──────────handshake failed───────────▶│
                          └─────────────open (redial, resume)─────────┘

    any state but CLOSED ──close──▶ CLOSING ──▶ CLOSED

* OPENING: made, no socket yet (dialing).
* HANDSHAKING: an attachment is open and its handshakes run (a session's HELLO/WELCOME,
  the protocol's login); it is not yet the connection's current attachment.
* CONNECTED: an attachment is current; senders write to it.
* DETACHED: its attachment was lost; a redial (``reconnect=``) or a session resume may bring
  the next one. Senders wait (or, with a session, fill the replay buffer).
* CLOSING: ``close()`` began: the protocol's ``on_close`` may still send its goodbye.
* CLOSED: for good; every later call raises.

``TRANSITIONS`` is the table the engine keeps to: ``Connection._move`` refuses any other
move. Whether the poll thread reads the connection (``spawned``) is not a state of its life
but where it is read, and stays a separate setting.
"""

from __future__ import annotations

import enum

__all__ = ["ConnState", "TRANSITIONS", "ENDING"]


class ConnState(enum.Enum):
    OPENING = "opening"
    HANDSHAKING = "handshaking"
    CONNECTED = "connected"
    DETACHED = "detached"
    CLOSING = "closing"
    CLOSED = "closed"


_S = ConnState

#: state -> the states it may move to.
TRANSITIONS: dict[ConnState, frozenset[ConnState]] = {
    _S.OPENING: frozenset({_S.HANDSHAKING, _S.CLOSING}),
    _S.HANDSHAKING: frozenset({_S.CONNECTED, _S.DETACHED, _S.CLOSING}),
    _S.CONNECTED: frozenset({_S.DETACHED, _S.CLOSING}),
    _S.DETACHED: frozenset({_S.HANDSHAKING, _S.CLOSING}),
    _S.CLOSING: frozenset({_S.CLOSED}),
    _S.CLOSED: frozenset(),
}

#: Closing or closed: nothing new starts.
ENDING = frozenset({_S.CLOSING, _S.CLOSED})
