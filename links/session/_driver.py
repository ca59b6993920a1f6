"""``SessionDriver``: a ``Session`` engine made safe for the runtime's threads, and wired to a connection.

The engine is plain state; three threads touch it: senders (``wrap``), the reading thread
(``receive``: acks trim the replay buffer) and the timer (heartbeat acks). One small lock
serializes those calls. It is never held across I/O, and it nests inside the connection's
write lock (write lock → session lock, never the reverse), so it cannot deadlock with a write.

When an ack frees replay-buffer space, senders waiting for room are woken through the
connection's ``changed`` condition: that is the back-pressure path.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
import time
from typing import TYPE_CHECKING, Any

from .._core._status import TaskStatus
from .._errors import BrokenError, ConnectTimeout, LinksError
from .._timer import TimerHandle
from . import _wire as wire
from ._engine import ServerSessions, Session, SessionState

if TYPE_CHECKING:
    from .._attachment import Attachment
    from .._connection import Connection
    from ._resumable import Resumable

__all__ = ["SessionDriver", "ServerRegistry"]


class SessionDriver:
    """The session of one logical connection, as its ``Connection`` and ``Link`` use it."""

    framer = wire.FRAMER  # the widest; a connection's Link reads with ``framer_for``

    @staticmethod
    def framer_for(app_framer: Any) -> Any:
        """The framer a connection reads with: the application's ``max_frame_size`` bounds
        every payload, plus the session's header."""
        return wire.data_framer(app_framer.max_frame_size)

    def __init__(self, engine: Session, config: Resumable, registry: ServerRegistry | None = None) -> None:
        self.engine = engine
        self.config = config
        self.registry = registry
        self.connection: Connection | None = None
        self._lock = threading.Lock()

    # -- the Link's side -------------------------------------------------------------------

    def receive(self, frame: memoryview) -> Any:
        engine = self.engine
        with self._lock:
            was_full = engine.replay.full
            payload = engine.receive(frame)
            freed = was_full and not engine.replay.full
        if freed and self.connection is not None:
            with self.connection.changed:
                self.connection.changed.notify_all()
        if payload is None and engine.ended_by == "peer" and self.connection is not None:
            self._peer_ended(self.connection)
        return payload

    @staticmethod
    def _peer_ended(connection: Connection) -> None:
        """The peer said BYE: end this side too, at once, answering with a BYE (the orderly
        close's goodbye). Every frame before the BYE was delivered already: a session's
        frames are read one at a time (``Link.next_message``)."""
        error = BrokenError(f"{connection.con_id}: the peer ended the session", "peer_closed")
        connection.close("peer_closed", error, orderly=True)  # idempotent: once per connection

    def wrap(self, payload: Any) -> bytes:
        with self._lock:
            return self.engine.wrap(payload)

    # -- the connection's side -------------------------------------------------------------

    def can_send(self) -> bool:
        return self.engine.can_send()

    def take_output(self) -> bytes:
        with self._lock:
            return self.engine.take_output()

    def replay_frames(self) -> bytes:
        """Client, once WELCOME said what the server has: every frame it is still missing."""
        with self._lock:
            return self.engine.replay_frames()

    def server_attach(self, peer_last_received: int, resumed: bool) -> bytes:
        """Server: attach to a new connection; WELCOME plus every frame the client is missing."""
        with self._lock:
            self.engine.attach(peer_last_received)
            return self.engine.welcome(resumed) + self.engine.replay_frames()

    def client_handshake(self, att: Attachment, deadline: float) -> None:
        """HELLO, then read on this thread until WELCOME (or REJECT: ``SessionLost``)."""
        self.send_hello(att)
        try:
            att.connection._drive(att, self.welcomed, deadline)
        except TimeoutError as e:
            raise ConnectTimeout(f"{att.con_id}: no session WELCOME in time") from e

    def send_hello(self, att: Attachment) -> None:
        """A client's first step on a new attachment, which never waits: HELLO, owed to its
        socket. What the server answers is read as usual, until ``welcomed()``.

        Raises:
            BrokenError: the socket failed at once.
        """
        with self._lock:
            hello = self.engine.start_client()
        connection = att.connection
        connection.write_lock.acquire()
        try:
            sent = connection.owe(att, hello)
        finally:
            connection._unlock(att)
        if not sent:
            raise BrokenError(f"{att.con_id}: the connection broke before its HELLO went out", "broken")

    def welcomed(self) -> bool:
        """Whether the server's WELCOME came (the session is attached again)."""
        return self.engine.state is SessionState.ATTACHED

    def liveness(self, att: Attachment) -> tuple[float, Callable[[], None], float]:
        """What the engine's liveness needs of the session on ``att`` (``links._liveness``):
        its beat interval, its beat (an ACK, which also keeps acks flowing when only one side
        sends) and the silence after which the peer is dead (``dead_after`` intervals)."""
        interval, connection = self.config.heartbeat_interval, att.connection

        def beat() -> None:
            if connection.write_lock.acquire(blocking=False):  # busy: data is flowing anyway
                try:
                    with self._lock:
                        frame = self.engine.tick()
                    # Owed, never waited for. A failed write ends the attachment there: nobody
                    # may be reading this socket (a user-thread reader that is not in recv),
                    # and the failed beat is how the cut gets noticed.
                    if frame and not connection.owe(att, frame):
                        connection.log.warning("heartbeat.failed", error="connection lost")
                finally:
                    connection._unlock(att)

        return interval, beat, interval * self.config.dead_after

    def detached(self, connection: Connection) -> None:
        with self._lock:
            self.engine.detach(connection.clock())  # the timer's clock, as the expiry's
        connection.log.info("session.detached", unacked=len(self.engine.replay))

    def say_goodbye(self, att: Attachment) -> None:
        """Write lock held, closing on purpose: owe ``att`` the BYE (if the session is attached,
        or answering the peer's), after every frame numbered before it."""
        if att.closed:
            return
        with self._lock:
            bye = self.engine.goodbye()
        if bye:
            try:
                att.outbound.owe(bye)
            except LinksError:
                pass  # the socket failed: a cut, which the peer's TTL covers

    def closed(self, connection: Connection) -> None:
        if self.registry is not None:
            self.registry.forget(self.engine)
        engine = self.engine
        if engine.ended_by is not None:
            connection.log.info("session.ended", by=engine.ended_by, unacked=len(engine.replay))


class ServerRegistry:
    """The server's sessions, thread-safe, with expiry of detached ones on the timer."""

    def __init__(self, config: Resumable, max_sessions: int | None = None) -> None:
        self.config = config
        self.sessions = ServerSessions(
            config.detached_ttl, max_sessions=max_sessions, max_messages=config.max_messages,
            max_bytes=config.max_bytes, ack_every=config.ack_every,
        )  # fmt: skip
        self._lock = threading.Lock()
        self._expiry: TimerHandle | None = None
        self.clock: Callable[[], float] = time.monotonic  # the timer's, once start_expiry has it

    def hello(self, frame: memoryview) -> tuple[Session, Any, bool, int]:
        """Answer a HELLO (see ``ServerSessions.on_hello``); raises ``SessionRejected``."""
        now = self.clock()  # one instant for both: on_hello expires too
        expired: list[Any] = []
        evicted: list[Any] = []
        try:
            with self._lock:
                expired = self.sessions.expire(now)
                try:
                    return self.sessions.on_hello(frame, now)
                finally:
                    evicted = self.sessions.take_evicted()
        finally:
            # Whatever the answer, a REJECT included (the HELLO may name the very session that
            # just expired): the owners of what expired are closed, or nothing ever would.
            self._close_expired(expired)
            self._close_expired(evicted, "session.evicted", "session_evicted")

    def set_owner(self, engine: Session, owner: Any) -> None:
        with self._lock:
            self.sessions.set_owner(engine, owner)

    def forget(self, engine: Session) -> None:
        with self._lock:
            self.sessions.forget(engine)

    def start_expiry(self, timer: Any) -> None:
        """Check for expired detached sessions a few times per TTL."""
        if self._expiry is not None:
            return
        self.clock = timer.clock.monotonic

        def sweep() -> TaskStatus:
            with self._lock:
                expired = self.sessions.expire(self.clock())
            self._close_expired(expired)
            return TaskStatus.COMPLETED

        self._expiry = timer.schedule("session expiry", max(self.config.detached_ttl / 4, 0.01), sweep)

    def stop(self) -> None:
        if self._expiry is not None:
            self._expiry.cancel()
            self._expiry = None  # a later service on the same settings starts its own

    @staticmethod
    def _close_expired(owners: list[Any], event: str = "session.expired", reason: str = "session_expired") -> None:
        for owner in owners:
            if owner is not None:
                owner.log.info(event)
                owner.close(reason, BrokenError(f"detached session ended ({reason})", reason))


