"""The resumable-session engine, Sans-I/O: sequence numbers, acks, a replay buffer, a resume handshake.

One ``Session`` is one logical conversation that outlives TCP connections. Its state (the
resume key, the next sequence number to send, the last one received in order, the frames the
peer has not acknowledged yet) lives here, in plain Python, with time passed in as numbers.
The drivers feed it whole frames and write what it returns; tests and the simulator in
``links.testing`` drive it with no socket at all.

Per connection, the state machine is (``Session.state``)::

    DETACHED --start_client()--> HANDSHAKING --WELCOME--> ATTACHED --detach()--> DETACHED
        ^                             |                        |          (cut, either side)
        |                             +--REJECT--> LOST <------+ goodbye() or the peer's BYE
        +--(server) ServerSessions.on_hello() attaches directly, answering WELCOME

Rules, each one needed for exactly-once, in-order delivery across cuts:

1. Every DATA frame gets the next sequence number and stays in the replay buffer until the
   peer's cumulative ack covers it. Acks ride on every DATA frame and, when no data flows
   back, on standalone ACK frames (every ``ack_every`` frames received, and on ``tick()``).
2. A new connection starts with HELLO (client) → WELCOME (server), each carrying the last
   sequence number its sender received in order. Each side then trims what the other has,
   and replays the rest, in order, before any new frame: nothing is lost.
3. A DATA frame whose number is not above ``last_received`` was seen already (a replay of
   something whose ack was lost in the cut): it is dropped, so nothing is duplicated. One
   that skips ahead can only mean a broken peer: ``ProtocolError``.
4. The replay buffer is bounded in messages and bytes. When full, ``can_send()`` is False and
   the driver makes senders wait or answers ``WOULD_BLOCK``: back-pressure, never loss.
5. Resume keys are 16 random bytes from ``secrets``; an unknown or expired key gets REJECT,
   and the client raises ``SessionLost``: its peer no longer has the state to resume.

6. A close on purpose says so: ``goodbye()`` gives the BYE to send, the peer ends its side at
   once and answers with its own BYE (``ended_by`` says who began). Only a cut leaves a
   session detached, waiting for a resume.

What this cannot promise: anything across a process crash (all of this is in memory).
"""

from __future__ import annotations

import enum
import secrets
from collections import deque
from dataclasses import dataclass

from .._errors import LinksError, ProtocolError, SessionLost
from . import _wire as wire

__all__ = ["Session", "ServerSessions", "ReplayBuffer", "SessionLost", "SessionRejected", "SessionState"]


class SessionRejected(LinksError):
    """Server side: a HELLO was refused; ``reply`` is the REJECT frame to send before closing."""

    def __init__(self, message: str, reply: bytes) -> None:
        super().__init__(message)
        self.reply = reply


class SessionState(enum.Enum):
    """Where one side of a session is: ``HANDSHAKING`` (HELLO/WELCOME under way), ``ATTACHED``
    (a connection carries it), ``DETACHED`` (cut, waiting to resume) or ``LOST`` (over for good).
    """
    DETACHED = "detached"
    HANDSHAKING = "handshaking"
    ATTACHED = "attached"
    LOST = "lost"


class ReplayBuffer:
    """Frames sent but not yet acknowledged, oldest first, bounded in count and bytes."""

    __slots__ = ("_frames", "nbytes", "max_messages", "max_bytes")

    def __init__(self, max_messages: int, max_bytes: int) -> None:
        self._frames: deque[tuple[int, bytes]] = deque()
        self.nbytes = 0
        self.max_messages = max_messages
        self.max_bytes = max_bytes

    def __len__(self) -> int:
        return len(self._frames)

    @property
    def full(self) -> bool:
        """Whether the buffer is at ``max_messages`` or ``max_bytes``: senders then wait (back-pressure)."""
        return len(self._frames) >= self.max_messages or self.nbytes >= self.max_bytes

    def append(self, seq: int, frame: bytes) -> None:
        """Keep ``frame`` (sequence ``seq``) until an ack covers it. Never refuses: check ``full`` first."""
        self._frames.append((seq, frame))
        self.nbytes += len(frame)

    def trim(self, ack: int) -> int:
        """Forget every frame the cumulative ``ack`` covers; how many were dropped."""
        frames, dropped = self._frames, 0
        while frames and frames[0][0] <= ack:
            self.nbytes -= len(frames.popleft()[1])
            dropped += 1
        return dropped

    def frames(self) -> list[bytes]:
        """The kept frames, oldest first (a new list): what a resume replays."""
        return [f for _, f in self._frames]


class Session:
    """One side of one resumable session (Sans-I/O; the caller serializes access).

    Args:
        max_messages, max_bytes: bounds of the replay buffer (back-pressure beyond them).
        ack_every: send a standalone ACK after this many frames received with no data to
            carry the ack.
    """

    def __init__(self, *, max_messages: int = 4096, max_bytes: int = 4 << 20, ack_every: int = 32) -> None:
        self.key = wire.NO_KEY
        self.state = SessionState.DETACHED
        self.next_seq = 1
        self.last_received = 0
        self.peer_acked = 0
        self.replay = ReplayBuffer(max_messages, max_bytes)
        self.ack_every = ack_every
        self._ack_sent = 0
        self.resumes = 0  # connections after the first that picked the session up again
        self.duplicates_dropped = 0
        self.late_frames_dropped = 0  # read off a given-up connection after the detach
        self.detached_at: float | None = None
        self.ended_by: str | None = None  # "local" or "peer": who said BYE first
        self.bye_sent = False
        self.bye_received = False

    def __repr__(self) -> str:
        return (
            f"Session({self.key.hex()[:8]}, {self.state.value}, next_seq={self.next_seq}, "
            f"last_received={self.last_received}, unacked={len(self.replay)})"
        )

    # -- connection lifecycle ------------------------------------------------------------

    def start_client(self) -> bytes:
        """Client, on a new connection: the HELLO to send first."""
        if self.state is SessionState.LOST:
            raise SessionLost("session was lost; start a new one")
        self.state = SessionState.HANDSHAKING
        return wire.encode_hello(self.key, self.last_received)

    def detach(self, now: float | None = None) -> None:
        """The connection carrying this session ended (either side noticed)."""
        if self.state is not SessionState.LOST:
            self.state = SessionState.DETACHED
            self.detached_at = now

    def attach(self, peer_last_received: int) -> None:
        """A handshake told us what the peer has: trim that, and start a new connection.

        Raises:
            ProtocolError: the peer claims frames that were never sent.
        """
        if peer_last_received >= self.next_seq:
            raise ProtocolError(
                f"peer claims to have frame {peer_last_received}, but only {self.next_seq - 1} were sent"
            )
        self._acked(peer_last_received)
        self.state = SessionState.ATTACHED
        self.detached_at = None
        self._ack_sent = self.last_received  # the handshake itself tells the peer

    def replay_frames(self) -> bytes:
        """Every frame the peer has not acknowledged, in order: what a new connection starts with.

        Call it at the moment the new connection becomes the one senders write to (the driver
        holds its write lock), so no frame numbered in between can be missed.
        """
        return b"".join(self.replay.frames())

    def welcome(self, resumed: bool) -> bytes:
        """Server: the WELCOME for a new connection of this session."""
        return wire.encode_welcome(resumed, self.key, self.last_received)

    def goodbye(self) -> bytes:
        """The BYE to send, once, on a close on purpose or in answer to the peer's; the session
        is then over (LOST). Empty while not attached (a cut already left the session to its
        TTL: nothing can carry a BYE) or once said."""
        if self.bye_sent or (self.state is not SessionState.ATTACHED and not self.bye_received):
            return b""
        self.bye_sent = True
        self.ended_by = self.ended_by or "local"
        self.state = SessionState.LOST
        return wire.encode_bye(self.last_received)

    @property
    def acknowledged(self) -> bool:
        """Both sides said BYE: the session ended on both, each knowing what the other has."""
        return self.bye_sent and self.bye_received

    # -- frames in ----------------------------------------------------------------------

    def receive(self, frame: memoryview) -> memoryview | bytes | None:
        """Process one whole frame; the application payload to deliver, or None.

        Raises:
            SessionLost: the server rejected our resume (client, while handshaking).
            ProtocolError / DecodeError: the peer broke the session protocol.
        """
        msg = wire.decode(frame)
        state = self.state
        if state is SessionState.ATTACHED:
            if isinstance(msg, wire.Data):  # the frame that counts: first, alone on its path
                return self._data(msg)
            if isinstance(msg, wire.Ack):
                self._acked(msg.ack)
                return None
        if isinstance(msg, wire.Bye) and state is not SessionState.HANDSHAKING and not self.bye_received:
            return self._bye(msg)
        if state is SessionState.HANDSHAKING:
            if isinstance(msg, wire.Welcome):
                return self._welcomed(msg)
            if isinstance(msg, wire.Reject):
                self.state = SessionState.LOST
                name = wire.RejectReason.NAMES.get(msg.reason, str(msg.reason))
                raise SessionLost(f"server rejected the session ({name}): {msg.text}")
        elif state is not SessionState.ATTACHED and isinstance(msg, (wire.Data, wire.Ack)):
            # Read from the connection that was just given up, by a reader that took its frames
            # from the buffer as another thread detached the session: not the peer's fault.
            # Dropped: unacknowledged, a DATA is replayed after the resume, and acks are redone.
            # Or, after our BYE, what the peer sent before reading it: not acknowledged either.
            if state is SessionState.LOST and self.ended_by is None:
                raise ProtocolError(f"unexpected {type(msg).__name__} on a lost session")
            self.late_frames_dropped += 1
            return None
        raise ProtocolError(f"unexpected {type(msg).__name__} while {self.state.value}")

    def _data(self, msg: wire.Data) -> memoryview | bytes | None:
        self._acked(msg.ack)
        if msg.seq <= self.last_received:
            self.duplicates_dropped += 1
            return None
        if msg.seq != self.last_received + 1:
            raise ProtocolError(f"gap: expected frame {self.last_received + 1}, got {msg.seq}")
        self.last_received = msg.seq
        return msg.payload

    def _bye(self, bye: wire.Bye) -> None:
        """The peer ended the session (or answered our BYE), acknowledging what it received."""
        self._acked(bye.last_received)
        self.bye_received = True
        self.ended_by = self.ended_by or "peer"
        self.state = SessionState.LOST
        return None

    def _welcomed(self, welcome: wire.Welcome) -> None:
        """Client: the server accepted (or resumed) the session; queue what it is missing."""
        if self.key != wire.NO_KEY and (welcome.key != self.key or not welcome.resumed):
            self.state = SessionState.LOST
            raise SessionLost("server answered with a different session")
        if self.key == wire.NO_KEY:
            self.key = welcome.key
        else:
            self.resumes += 1
        self.attach(welcome.last_received)
        return None

    def take_output(self) -> bytes:
        """An ACK, if ``ack_every`` frames arrived since the peer was last told."""
        if self.state is SessionState.ATTACHED and self.last_received - self._ack_sent >= self.ack_every:
            return self._ack()
        return b""

    def tick(self) -> bytes:
        """Heartbeat: an ACK of everything received (also proof of life on an idle link)."""
        return self._ack() if self.state is SessionState.ATTACHED else b""

    def _ack(self) -> bytes:
        self._ack_sent = self.last_received
        return wire.encode_ack(self.last_received)

    def _acked(self, ack: int) -> None:
        if ack > self.peer_acked:
            if ack >= self.next_seq:
                raise ProtocolError(f"peer acknowledged frame {ack}, but only {self.next_seq - 1} were sent")
            self.peer_acked = ack
            self.replay.trim(ack)

    # -- frames out ---------------------------------------------------------------------

    def can_send(self) -> bool:
        """False while the replay buffer is full (the driver applies back-pressure)."""
        return not self.replay.full and self.state is not SessionState.LOST

    def wrap(self, payload: bytes | bytearray | memoryview) -> bytes:
        """Number a payload, keep it for replay, and return its DATA frame.

        Works while detached too: the frame waits in the replay buffer for the next connection.
        """
        if self.state is SessionState.LOST:
            raise SessionLost("session was lost")
        seq = self.next_seq
        self.next_seq = seq + 1
        frame = wire.encode_data(seq, self.last_received, payload)
        self._ack_sent = self.last_received
        self.replay.append(seq, frame)
        return frame


@dataclass
class _Entry:
    session: Session
    owner: object  # whatever the driver attached (its logical connection), or None


class ServerSessions:
    """The server's sessions by resume key, with detached ones kept for ``detached_ttl``.

    Args:
        detached_ttl: seconds a detached session may wait for its client to come back.
        session_args: passed to each new ``Session`` (buffer bounds, ack policy).
    """

    def __init__(self, detached_ttl: float = 30.0, max_sessions: int | None = None, **session_args: int) -> None:
        self.detached_ttl = detached_ttl
        self.max_sessions = max_sessions
        self.session_args = session_args
        self._by_key: dict[bytes, _Entry] = {}
        self.evicted: list[object] = []  # owners of sessions evicted to make room (take_evicted)

    def __len__(self) -> int:
        return len(self._by_key)

    def on_hello(self, frame: memoryview, now: float) -> tuple[Session, object | None, bool, int]:
        """Resolve the first frame of a new connection to a session.

        Returns:
            ``(session, previous_owner, resumed, peer_last_received)``. The caller ends the
            previous owner's old connection if it still has one, then calls
            ``session.attach(peer_last_received)`` and writes ``session.welcome(resumed)`` and
            ``session.replay_frames()``, all while no sender can number a frame in between.

        Raises:
            SessionRejected: unknown or expired key, or not a valid HELLO (send ``reply``,
                then close).
            DecodeError: not a session frame at all.
        """
        self.expire(now)
        hello = wire.decode(frame)
        if not isinstance(hello, wire.Hello) or hello.version != wire.VERSION:
            raise SessionRejected("expected HELLO", wire.encode_reject(wire.RejectReason.BAD_HELLO, "expected HELLO v1"))
        if hello.key == wire.NO_KEY:
            if hello.last_received != 0:
                raise SessionRejected(
                    "new session claims received frames",
                    wire.encode_reject(wire.RejectReason.BAD_HELLO, "a new session has received nothing"),
                )
            self._make_room()
            session = Session(**self.session_args)
            session.key = secrets.token_bytes(wire.KEY_SIZE)
            self._by_key[session.key] = _Entry(session, None)
            return session, None, False, 0
        entry = self._by_key.get(hello.key)
        if entry is None:
            raise SessionRejected(
                "unknown or expired resume key",
                wire.encode_reject(wire.RejectReason.UNKNOWN_KEY, "unknown or expired session"),
            )
        session = entry.session
        if hello.last_received >= session.next_seq:
            raise SessionRejected(
                "resume claims frames never sent",
                wire.encode_reject(wire.RejectReason.BAD_HELLO, "last_received is beyond what was sent"),
            )
        session.resumes += 1
        return session, entry.owner, True, hello.last_received

    def _make_room(self) -> None:
        """At ``max_sessions``, a new session takes the place of the detached one that waited
        longest (its owner is to be closed: ``take_evicted``); with none detached, it is
        refused (the attached ones are live clients, bounded by the service's gate).

        Raises:
            SessionRejected: every session is attached.
        """
        if self.max_sessions is None or len(self._by_key) < self.max_sessions:
            return
        detached = [
            (e.session.detached_at, key) for key, e in self._by_key.items()
            if e.session.state is SessionState.DETACHED and e.session.detached_at is not None
        ]  # fmt: skip
        if not detached:
            raise SessionRejected("too many sessions", wire.encode_reject(wire.RejectReason.BUSY, "too many sessions"))
        entry = self._by_key.pop(min(detached)[1])
        entry.session.state = SessionState.LOST
        self.evicted.append(entry.owner)

    def take_evicted(self) -> list[object]:
        """The owners of sessions evicted to make room since the last call (the driver closes them); clears the list."""
        evicted, self.evicted = self.evicted, []
        return evicted

    def set_owner(self, session: Session, owner: object) -> None:
        """Record ``owner`` (the connection that serves it) for ``session``; a forgotten session is ignored."""
        entry = self._by_key.get(session.key)
        if entry is not None:
            entry.owner = owner

    def expire(self, now: float) -> list[object]:
        """Forget detached sessions older than the TTL; their owners (for the driver to close)."""
        dead = [
            key for key, e in self._by_key.items()
            if e.session.state is SessionState.DETACHED and e.session.detached_at is not None
            and now - e.session.detached_at >= self.detached_ttl
        ]  # fmt: skip
        owners = []
        for key in dead:
            entry = self._by_key.pop(key)
            entry.session.state = SessionState.LOST
            owners.append(entry.owner)
        return owners

    def forget(self, session: Session) -> None:
        """Drop a session for good (its logical connection was closed on purpose)."""
        self._by_key.pop(session.key, None)
        session.state = SessionState.LOST
