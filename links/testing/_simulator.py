"""``Simulator``: the session engine over a seeded, simulated network, on a fake clock.

One client ``Session`` and one server ``ServerSessions`` talk through simulated TCP
connections. Everything random (what is sent, how many bytes arrive, when a connection is
cut, when each side notices, how time moves) comes from one ``random.Random(seed)``, so a
failing run reproduces from its seed alone. ``run(steps)`` does that many random actions,
then ``settle()`` heals the network and pumps until both sides are quiet, and returns a
``SimResult`` whose ``lost``, ``duplicated``, ``reordered`` and ``unexpected`` must all be 0.
The same actions are public methods, so a test can also script an exact scenario.

What the network model keeps from TCP, and what it breaks
    A connection carries two byte streams. A delivery hands the receiver a prefix of what is
    in flight (any number of bytes, so frames arrive in pieces). A cut keeps a random prefix
    of each direction's bytes in flight (they may still arrive) and loses the rest; whatever
    is written after the cut is lost. Each side notices a cut only when a later action says
    so: until then the client keeps writing into the dead connection, and the server keeps
    its session attached to it, so the client's new HELLO can arrive while the server still
    believes in the old connection. The server reads every connection it has not closed in
    any interleaving, so a stale HELLO or leftover bytes of an old connection can arrive
    after a newer connection's: the reorders that exist at connection boundaries.

The drivers modelled here follow the engine's protocol the way ``links.session``'s do:
    * client: on a new connection, ``start_client()``; after WELCOME, ``replay_frames()``
      before any new frame; new frames are written only while ATTACHED (frames wrapped
      before that wait in the replay buffer); on noticing a cut, ``detach(now)``.
    * server: the first frame of a connection goes to ``on_hello``; the previous owner's
      connection, if the server still has it open, is closed; then ``attach``, WELCOME and
      the replay; DATA is read only on the owner connection; noticing a cut detaches the
      session only if that connection still owns it.
    * both: ``take_output()`` after each batch of frames read, ``tick()`` at random, and a
      sender that finds ``can_send()`` False does not send (it tries again later): that is
      back-pressure, and it must never turn into loss.

What counts as a violation
    Each payload carries its stream (client generation, or server session index) and a
    counter starting at 1. A payload that skips ahead counts the skipped ones as ``lost``
    until they arrive (then ``reordered``); one already delivered is ``duplicated``. After
    ``settle()``, whatever the live session's two streams sent and did not deliver is lost.
    ``unexpected`` counts any exception the engine raises that the scenario does not allow,
    a payload that reaches the wrong session, or a network that does not settle; the first
    one ends the run.

Sessions that end for good
    With a finite ``detached_ttl`` the server forgets a session whose client stayed away
    too long; the client's next HELLO gets REJECT and it must raise ``SessionLost``, which
    is then an expected outcome (``sessions_lost``): the client starts a new session and the
    run goes on. What the ended session had not delivered is ``abandoned``, not lost. So is
    what the server sent on a session whose WELCOME never reached the client: its first
    handshake was cut and the client asked for a new session, or a first HELLO arrived
    late, after the client had its session. The server cannot tell such a session from a
    real one (its application sends on every session it has), and only its TTL ends it.
"""

from __future__ import annotations

import math
import random
import struct
from collections import deque
from dataclasses import dataclass
from typing import NoReturn

from .._core._buffer import ReceiveBuffer
from .._errors import ProtocolError
from ..session import _wire as wire
from ..session._engine import ServerSessions, Session, SessionLost, SessionRejected, SessionState
from ._clock import FakeClock

__all__ = ["Simulator", "SimResult"]

_PAYLOAD = struct.Struct("!IQ")  # stream id, counter
_FRAMER = wire.FRAMER
_ATTACHED = SessionState.ATTACHED
_HANDSHAKING = SessionState.HANDSHAKING
_LOST = SessionState.LOST


@dataclass(frozen=True)
class SimResult:
    """What one run did. ``ok`` when nothing was lost, duplicated, reordered or unexpected.

    ``sent_*``/``delivered_*`` count application messages over every session of the run;
    ``abandoned`` those of sessions that ended for good (expected, see the module docstring).
    The fault counters say which faults really fired; ``trace`` holds the last events.
    """

    seed: int
    config: str
    steps: int
    sent_c2s: int
    sent_s2c: int
    delivered_c2s: int
    delivered_s2c: int
    lost: int
    duplicated: int
    reordered: int
    unexpected: int
    abandoned: int
    connections: int
    cuts: int
    cuts_mid_handshake: int
    cuts_mid_replay: int
    cuts_mid_frame: int
    resumes: int
    replayed: int
    late_writes: int
    superseded: int
    blocked: int
    sessions_lost: int
    intruders_rejected: int
    trace: tuple[str, ...]

    @property
    def ok(self) -> bool:
        return not (self.lost or self.duplicated or self.reordered or self.unexpected)

    def describe(self) -> str:
        """Every counter and the trace, one per line: what a failing test prints."""
        counters = ", ".join(f"{k}={v}" for k, v in vars(self).items() if k not in ("seed", "config", "trace"))
        return "\n".join([f"seed={self.seed} ({self.config}): {counters}", *self.trace])


class _Violation(Exception):
    """Something the scenario does not allow happened: the run stops here."""


class _Stream:
    """One direction of one session, as the two applications see it."""

    __slots__ = ("sent", "delivered", "hi", "skipped")

    def __init__(self) -> None:
        self.sent = 0
        self.delivered = 0
        self.hi = 0  # highest counter delivered
        self.skipped: set[int] = set()  # counters jumped over (lost unless they turn up late)


class _Conn:
    """One simulated TCP connection: what is in flight each way, and who still has it open."""

    __slots__ = (
        "id", "alive", "server_open", "c2s", "s2c", "c2s_rx", "s2c_rx", "served", "welcomed",
        "c2s_written", "s2c_written", "c2s_read", "s2c_read", "c2s_replay_end", "s2c_replay_end",
    )  # fmt: skip

    def __init__(self, conn_id: int) -> None:
        self.id = conn_id
        self.alive = True  # False once cut (or closed by the server)
        self.server_open = True  # the server has not noticed or closed it
        self.c2s = bytearray()  # written by the client, not yet delivered
        self.s2c = bytearray()
        self.c2s_rx = ReceiveBuffer(capacity=256, read_size=64)
        self.s2c_rx = ReceiveBuffer(capacity=256, read_size=64)
        self.served: _Served | None = None  # the server session it carries, after HELLO
        self.welcomed = False  # the client got WELCOME on it
        self.c2s_written = self.s2c_written = self.c2s_read = self.s2c_read = 0
        self.c2s_replay_end = self.s2c_replay_end = 0  # stream offsets where each replay ends


class _Served:
    """A server session, with the connection that owns it and what its application sent."""

    __slots__ = ("index", "session", "owner", "stream")

    def __init__(self, index: int, session: Session) -> None:
        self.index = index
        self.session = session
        self.owner: _Conn | None = None
        self.stream = _Stream()  # server to client


class _Gen:
    """One client session (a new one after ``SessionLost``)."""

    __slots__ = ("index", "session", "stream")

    def __init__(self, index: int, session: Session) -> None:
        self.index = index
        self.session = session
        self.stream = _Stream()  # client to server


class Simulator:
    """A client and a server session engine over a simulated network; see the module docstring.

    Args:
        seed: the only source of randomness.
        max_messages, max_bytes, ack_every: the engines' settings (None: drawn from the seed,
            often tiny, so back-pressure happens).
        detached_ttl: seconds the server keeps a detached session; ``math.inf`` never forgets
            one, None draws it from the seed (finite for about one seed in five).
        intruders: whether random steps include HELLOs with random keys (None: from the seed).
        trace_size: how many of the last events ``SimResult.trace`` keeps.
    """

    def __init__(
        self,
        seed: int,
        *,
        max_messages: int | None = None,
        max_bytes: int | None = None,
        ack_every: int | None = None,
        detached_ttl: float | None = None,
        intruders: bool | None = None,
        trace_size: int = 64,
    ) -> None:
        rng = self._rng = random.Random(seed)
        self.seed = seed
        if max_messages is None:
            max_messages = rng.choice((1, 2, 4, 16, 4096))
        if max_bytes is None:
            max_bytes = 100 if rng.random() < 0.2 else 4 << 20  # 100 bytes: about three frames
        if ack_every is None:
            ack_every = rng.choice((1, 2, 3, 8, 32))
        if detached_ttl is None:
            detached_ttl = rng.choice((0.05, 0.2)) if rng.random() < 0.2 else math.inf
        if intruders is None:
            intruders = rng.random() < 0.1
        self.intruders = intruders
        self._session_args = {"max_messages": max_messages, "max_bytes": max_bytes, "ack_every": ack_every}
        self.clock = FakeClock()
        self.registry = ServerSessions(detached_ttl, **self._session_args)
        self._gens = [_Gen(0, Session(**self._session_args))]
        self._served: list[_Served] = []
        self._by_key: dict[bytes, _Served] = {}
        self._conns: list[_Conn] = []  # every connection, oldest first
        self._server_conns: list[_Conn] = []  # those the server still has open
        self._cconn: _Conn | None = None  # the client's connection, until it notices it died
        self._trace: deque[tuple] = deque(maxlen=trace_size)
        self._step = 0
        self._settled = False
        self.duplicated = self.reordered = self.unexpected = 0
        self.cuts = self.cuts_mid_handshake = self.cuts_mid_replay = self.cuts_mid_frame = 0
        self.replayed = self.late_writes = self.superseded = self.blocked = 0
        self.sessions_lost = self.intruders_rejected = 0
        args = ", ".join(f"{k}={v}" for k, v in self._session_args.items())
        self.config = f"{args}, detached_ttl={detached_ttl}, intruders={intruders}"

    # -- what a test looks at ------------------------------------------------------------

    @property
    def client(self) -> Session:
        """The client's current session."""
        return self._gens[-1].session

    @property
    def server_session(self) -> Session | None:
        """The server's side of the client's session (None before the client has one)."""
        served = self._peer()
        return served.session if served else None

    def in_flight(self, direction: str) -> int:
        """Bytes written and not yet delivered on connections whose receiver still reads them."""
        if direction == "s2c":
            return len(self._cconn.s2c) if self._cconn else 0
        return sum(len(c.c2s) for c in self._server_conns)

    # -- the random driver ---------------------------------------------------------------

    def run(self, steps: int) -> SimResult:
        """Do ``steps`` random actions, settle, and return the result."""
        rng = self._rng.random
        try:
            for _ in range(steps):
                self._step += 1
                r = rng() * 100.0
                if r < 18:
                    self.client_send()
                elif r < 36:
                    self._random_server_send()
                elif r < 66:
                    self._random_delivery()
                elif r < 70:
                    self.tick_client()
                elif r < 74:
                    self.tick_server()
                elif r < 77:
                    self.cut()
                elif r < 83:
                    self.notice_client()
                elif r < 89:
                    self._notice_one_server()
                elif r < 97:
                    self.reconnect()
                elif r < 98:
                    self.advance(0.1 + rng() * 0.4)  # a stall: long enough to expire a session
                elif r < 99:
                    self.expire()
                elif self.intruders:
                    self.intrude()
                self.clock.advance(rng() * 0.002)
            self.settle()
        except _Violation:
            pass  # counted and traced where it was raised
        return self.result()

    def _random_delivery(self) -> None:
        rng = self._rng
        candidates = [(c, "c2s") for c in self._server_conns if c.c2s]
        if self._cconn is not None and self._cconn.s2c:
            candidates.append((self._cconn, "s2c"))
        if not candidates:
            return
        conn, direction = candidates[rng.randrange(len(candidates))]
        pending = len(conn.c2s if direction == "c2s" else conn.s2c)
        self._deliver(conn, direction, pending if rng.random() < 0.5 else rng.randint(1, pending))

    def _random_server_send(self) -> None:
        """Usually on the client's session; sometimes on another one the server still has
        (one whose first WELCOME never reached the client: the server cannot know that)."""
        alive = [s for s in self._served if s.session.state is not _LOST]
        if alive:
            self._server_send_on(alive[-1] if len(alive) == 1 else alive[self._rng.randrange(len(alive))])

    def _notice_one_server(self) -> None:
        dead = [c for c in self._server_conns if not c.alive]
        if dead:
            self._server_close(dead[self._rng.randrange(len(dead))], "noticed")

    # -- actions (public, so tests can script a scenario) ---------------------------------

    def client_send(self, count: int = 1) -> int:
        """The client application sends ``count`` messages; how many back-pressure let through."""
        sent = 0
        for _ in range(count):
            gen = self._gens[-1]
            session = gen.session
            if not session.can_send():
                self.blocked += 1
                self._event("c.blocked", len(session.replay))
                break
            stream = gen.stream
            stream.sent += 1
            frame = session.wrap(_PAYLOAD.pack(gen.index, stream.sent))
            sent += 1
            self._event("c.send", gen.index, stream.sent)
            if self._cconn is not None and session.state is _ATTACHED:
                self._write_c2s(self._cconn, frame)
        return sent

    def server_send(self, count: int = 1) -> int:
        """The server application sends ``count`` messages on the client's session."""
        served = self._peer()
        sent = 0
        while served is not None and sent < count and self._server_send_on(served):
            sent += 1
        return sent

    def _server_send_on(self, served: _Served) -> bool:
        session = served.session
        if session.state is _LOST:
            return False
        if not session.can_send():
            self.blocked += 1
            self._event("s.blocked", served.index, len(session.replay))
            return False
        stream = served.stream
        stream.sent += 1
        frame = session.wrap(_PAYLOAD.pack(served.index, stream.sent))
        self._event("s.send", served.index, stream.sent)
        owner = served.owner
        if owner is not None and owner.server_open and session.state is _ATTACHED:
            self._write_s2c(owner, frame)
        return True

    def deliver(self, direction: str, nbytes: int | None = None, conn: int | None = None) -> int:
        """Deliver up to ``nbytes`` (None: all) in flight, in ``"c2s"`` or ``"s2c"``; how many.

        The server reads every connection it still has open, oldest first, or only the one
        whose id (as traced, from 1) is ``conn``; the client reads only its current one.
        """
        delivered = 0
        if direction == "s2c":
            conns = [self._cconn] if self._cconn is not None else []
        else:
            conns = [c for c in self._server_conns if conn is None or c.id == conn]
        for c in conns:
            pending = len(c.c2s if direction == "c2s" else c.s2c)
            n = pending if nbytes is None else min(pending, nbytes - delivered)
            if n:
                self._deliver(c, direction, n)
                delivered += n
            if nbytes is not None and delivered >= nbytes:
                break
        return delivered

    def cut(self, keep_c2s: int | None = None, keep_s2c: int | None = None) -> bool:
        """Cut the client's connection; each direction keeps a prefix of its bytes in flight
        (None: a random one). False when there was no live connection to cut."""
        conn = self._cconn
        if conn is None or not conn.alive:
            return False
        rng = self._rng
        keep_c2s = rng.randint(0, len(conn.c2s)) if keep_c2s is None else min(keep_c2s, len(conn.c2s))
        keep_s2c = rng.randint(0, len(conn.s2c)) if keep_s2c is None else min(keep_s2c, len(conn.s2c))
        self.cuts += 1
        if not conn.welcomed:
            self.cuts_mid_handshake += 1
        if conn.c2s_read + keep_c2s < conn.c2s_replay_end or conn.s2c_read + keep_s2c < conn.s2c_replay_end:
            self.cuts_mid_replay += 1
        if _ends_mid_frame(conn.c2s_rx, conn.c2s, keep_c2s) or _ends_mid_frame(conn.s2c_rx, conn.s2c, keep_s2c):
            self.cuts_mid_frame += 1
        del conn.c2s[keep_c2s:]
        del conn.s2c[keep_s2c:]
        conn.alive = False
        self._event("cut", conn.id, f"keep c2s={keep_c2s} s2c={keep_s2c}")
        return True

    def notice_client(self) -> bool:
        """The client notices that its connection died (and detaches)."""
        conn = self._cconn
        if conn is None or conn.alive:
            return False
        self._cconn = None
        self._gens[-1].session.detach(self.clock.monotonic())
        self._event("c.noticed", conn.id)
        return True

    def notice_server(self) -> int:
        """The server notices every dead connection it still has open; how many."""
        dead = [c for c in self._server_conns if not c.alive]
        for conn in dead:
            self._server_close(conn, "noticed")
        return len(dead)

    def reconnect(self) -> bool:
        """The client, with no connection, dials a new one and sends HELLO."""
        if self._cconn is not None:
            return False
        session = self._gens[-1].session
        try:
            hello = session.start_client()
        except SessionLost as e:
            self._violation(f"start_client on a lost session: {e}")
        conn = _Conn(len(self._conns) + 1)
        self._conns.append(conn)
        self._server_conns.append(conn)
        self._cconn = conn
        self._event("c.connect", conn.id, f"last_received={session.last_received}")
        self._write_c2s(conn, hello)
        return True

    def tick_client(self) -> None:
        frame = self._gens[-1].session.tick()
        if frame and self._cconn is not None:
            self._write_c2s(self._cconn, frame)

    def tick_server(self) -> None:
        """A heartbeat on every connection the server has open with a session."""
        for conn in self._server_conns:
            served = conn.served
            if served is not None and served.owner is conn:
                frame = served.session.tick()
                if frame:
                    self._write_s2c(conn, frame)

    def advance(self, seconds: float) -> None:
        self.clock.advance(seconds)
        self._event("clock", round(self.clock.monotonic(), 4))

    def expire(self) -> None:
        """The server's sweep of detached sessions older than the TTL."""
        for owner in self.registry.expire(self.clock.monotonic()):
            if owner is not None and owner.server_open:
                self._violation(f"an expired session's connection {owner.id} was still open")
        self._event("s.expire")

    def intrude(self, key: bytes | None = None, last_received: int = 0) -> wire.Reject:
        """A stranger's HELLO with a random (or given) key: it must be rejected, and nothing
        else may change. Returns the decoded REJECT."""
        key = self._rng.randbytes(wire.KEY_SIZE) if key is None else key
        hello = memoryview(wire.encode_hello(key, last_received))
        try:
            accepted = self.registry.on_hello(hello, self.clock.monotonic())
        except SessionRejected as e:
            self.intruders_rejected += 1
            self._event("intruder.rejected")
            reject = wire.decode(memoryview(e.reply))
            assert isinstance(reject, wire.Reject)
            return reject
        self._violation(f"a random resume key was accepted: {accepted[0]!r}")

    # -- settling --------------------------------------------------------------------------

    def settle(self, max_rounds: int = 100) -> None:
        """Stop the faults: both sides notice every cut, the client reconnects, everything in
        flight is delivered and both sides ack, until nothing is left to move."""
        for _ in range(max_rounds):
            self._step += 1
            self.notice_client()
            self.notice_server()
            self.reconnect()
            while self.deliver("c2s") + self.deliver("s2c"):
                pass
            if self._cconn is not None and self._cconn.welcomed:
                self.tick_client()
                self.tick_server()
                while self.deliver("c2s") + self.deliver("s2c"):
                    pass
            if self._quiet():
                self._settled = True
                self._event("settled")
                return
        self._violation("the network did not settle")

    def _quiet(self) -> bool:
        gen, served = self._gens[-1], self._peer()
        conn = self._cconn
        return (
            conn is not None and conn.welcomed and served is not None and served.owner is conn
            and gen.session.key == served.session.key and gen.session.state is _ATTACHED
            and served.session.state is _ATTACHED and not gen.session.replay and not served.session.replay
            and gen.stream.delivered == gen.stream.sent and served.stream.delivered == served.stream.sent
        )  # fmt: skip

    def result(self) -> SimResult:
        gens, served = self._gens, self._served
        live_gen = gens[-1]
        live_served = self._by_key.get(live_gen.session.key)
        live = (live_gen.stream, live_served.stream if live_served is not None else None)
        lost = abandoned = 0
        for stream in [g.stream for g in gens] + [s.stream for s in served]:
            missing = stream.sent - stream.delivered
            if stream not in live:
                abandoned += missing
            elif self._settled:
                lost += missing
            else:
                lost += len(stream.skipped)  # before settling, only gaps are certain losses
        return SimResult(
            seed=self.seed,
            config=self.config,
            steps=self._step,
            sent_c2s=sum(g.stream.sent for g in gens),
            sent_s2c=sum(s.stream.sent for s in served),
            delivered_c2s=sum(g.stream.delivered for g in gens),
            delivered_s2c=sum(s.stream.delivered for s in served),
            lost=lost,
            duplicated=self.duplicated,
            reordered=self.reordered,
            unexpected=self.unexpected,
            abandoned=abandoned,
            connections=len(self._conns),
            cuts=self.cuts,
            cuts_mid_handshake=self.cuts_mid_handshake,
            cuts_mid_replay=self.cuts_mid_replay,
            cuts_mid_frame=self.cuts_mid_frame,
            resumes=sum(g.session.resumes for g in gens),
            replayed=self.replayed,
            late_writes=self.late_writes,
            superseded=self.superseded,
            blocked=self.blocked,
            sessions_lost=self.sessions_lost,
            intruders_rejected=self.intruders_rejected,
            trace=tuple(f"{step:5d} {name} {' '.join(map(str, args))}".rstrip() for step, name, *args in self._trace),
        )

    # -- the wire --------------------------------------------------------------------------

    def _write_c2s(self, conn: _Conn, data: bytes) -> None:
        if conn.alive:
            conn.c2s += data
            conn.c2s_written += len(data)
        else:
            self.late_writes += 1  # into a connection the client does not know is dead

    def _write_s2c(self, conn: _Conn, data: bytes) -> None:
        if conn.alive:
            conn.s2c += data
            conn.s2c_written += len(data)
        else:
            self.late_writes += 1

    def _deliver(self, conn: _Conn, direction: str, n: int) -> None:
        if direction == "c2s":
            conn.c2s_rx.feed(conn.c2s[:n])
            del conn.c2s[:n]
            conn.c2s_read += n
            self._event("c2s", conn.id, n)
            self._server_read(conn)
        else:
            conn.s2c_rx.feed(conn.s2c[:n])
            del conn.s2c[:n]
            conn.s2c_read += n
            self._event("s2c", conn.id, n)
            self._client_read(conn)

    # -- the client's driver ---------------------------------------------------------------

    def _client_read(self, conn: _Conn) -> None:
        gen = self._gens[-1]
        session = gen.session
        rx = conn.s2c_rx
        while conn is self._cconn:
            frame = rx.next_frame(_FRAMER)
            if frame is None:
                break
            handshaking = session.state is _HANDSHAKING
            try:
                payload = session.receive(frame)
            except SessionLost as e:
                self._client_lost(conn, str(e))
                return
            except ProtocolError as e:
                self._violation(f"client: {type(e).__name__}: {e}")
            if payload is not None:
                stream_id, n = _PAYLOAD.unpack(payload)
                served = self._served[stream_id] if stream_id < len(self._served) else None
                if served is None or served.session.key != session.key:
                    self._violation(f"client got server stream {stream_id}, not its session's")
                self._arrive("c.recv", served.stream, stream_id, n)
            elif handshaking and session.state is _ATTACHED:
                conn.welcomed = True
                self._event("c.welcomed", conn.id, f"resumes={session.resumes} peer_acked={session.peer_acked}")
                self._replay_c2s(conn, session)
        if conn is self._cconn:
            out = session.take_output()
            if out:
                self._write_c2s(conn, out)

    def _replay_c2s(self, conn: _Conn, session: Session) -> None:
        frames = session.replay_frames()
        if frames:
            self.replayed += len(session.replay)
            self._event("c.replay", conn.id, len(session.replay))
            self._write_c2s(conn, frames)
            conn.c2s_replay_end = conn.c2s_written

    def _client_lost(self, conn: _Conn, why: str) -> None:
        """REJECT: allowed only if the server really forgot this session (expired)."""
        gen = self._gens[-1]
        served = self._by_key.get(gen.session.key)
        if served is None or served.session.state is not _LOST:
            self._violation(f"SessionLost for a session the server still has: {why}")
        self.sessions_lost += 1
        self._event("c.SessionLost", gen.index, why)
        conn.alive = False
        self._cconn = None
        self._gens.append(_Gen(len(self._gens), Session(**self._session_args)))

    # -- the server's driver ---------------------------------------------------------------

    def _server_read(self, conn: _Conn) -> None:
        rx = conn.c2s_rx
        while conn.server_open:
            frame = rx.next_frame(_FRAMER)
            if frame is None:
                break
            served = conn.served
            if served is None:
                self._hello(conn, frame)
                continue
            if served.owner is not conn:
                self._violation(f"server read DATA on connection {conn.id}, which no longer owns its session")
            session = served.session
            try:
                payload = session.receive(frame)
            except (ProtocolError, SessionLost) as e:
                self._violation(f"server: {type(e).__name__}: {e}")
            if payload is not None:
                stream_id, n = _PAYLOAD.unpack(payload)
                gen = self._gens[stream_id] if stream_id < len(self._gens) else None
                if gen is None or gen.session.key != session.key:
                    self._violation(f"server got client stream {stream_id}, not its session's")
                self._arrive("s.recv", gen.stream, stream_id, n)
        served = conn.served
        if served is not None and conn.server_open:
            out = served.session.take_output()
            if out:
                self._write_s2c(conn, out)

    def _hello(self, conn: _Conn, frame: memoryview) -> None:
        try:
            session, owner, resumed, peer_last = self.registry.on_hello(frame, self.clock.monotonic())
        except SessionRejected as e:
            self._event("s.rejected", conn.id, str(e))
            self._write_s2c(conn, e.reply)
            self._server_close(conn, "rejected", graceful=True)
            return
        except ProtocolError as e:
            self._violation(f"server: HELLO did not decode: {e}")
        served = self._by_key.get(session.key)
        if served is None:
            if resumed:
                self._violation("on_hello resumed a session it never created")
            served = _Served(len(self._served), session)
            self._served.append(served)
            self._by_key[session.key] = served
        elif owner is not served.owner:
            self._violation(f"on_hello returned owner {owner!r}, not connection {served.owner.id}")
        old, served.owner = served.owner, conn
        if old is not None and old is not conn and old.server_open:
            self.superseded += 1
            self._server_close(old, "superseded")  # no detach: the session moves to ``conn``
        self.registry.set_owner(session, conn)
        conn.served = served
        session.attach(peer_last)
        self._event("s.welcome", conn.id, f"session={served.index} resumed={resumed} peer_last={peer_last}")
        self._write_s2c(conn, session.welcome(resumed))
        frames = session.replay_frames()
        if frames:
            self.replayed += len(session.replay)
            self._event("s.replay", conn.id, len(session.replay))
            self._write_s2c(conn, frames)
            conn.s2c_replay_end = conn.s2c_written

    def _server_close(self, conn: _Conn, why: str, graceful: bool = False) -> None:
        """The server stops reading a connection; detach its session if it still owns it.

        A graceful close (after a REJECT) lets what was written reach the client; any other
        close looks like a cut to the client."""
        conn.server_open = False
        self._server_conns.remove(conn)
        if conn.alive:
            conn.alive = False
            conn.c2s.clear()
            if not graceful:
                del conn.s2c[self._rng.randint(0, len(conn.s2c)) :]
        served = conn.served
        if served is not None and served.owner is conn:
            served.session.detach(self.clock.monotonic())
        self._event("s.close", conn.id, why)

    def _peer(self) -> _Served | None:
        """The server's record of the client's current session."""
        return self._by_key.get(self._gens[-1].session.key)

    # -- bookkeeping -----------------------------------------------------------------------

    def _arrive(self, who: str, stream: _Stream, stream_id: int, n: int) -> None:
        if n == stream.hi + 1:
            stream.hi = n
            stream.delivered += 1
        elif n > stream.hi + 1:
            self._event(f"{who}.GAP", stream_id, f"expected {stream.hi + 1}, got {n}")
            stream.skipped.update(range(stream.hi + 1, n))
            stream.hi = n
            stream.delivered += 1
        elif n in stream.skipped:
            self._event(f"{who}.REORDERED", stream_id, n)
            stream.skipped.discard(n)
            stream.delivered += 1
            self.reordered += 1
        else:
            self._event(f"{who}.DUPLICATE", stream_id, n)
            self.duplicated += 1
            return
        self._event(who, stream_id, n)

    def _event(self, name: str, *args: object) -> None:
        self._trace.append((self._step, name, *args))

    def _violation(self, message: str) -> NoReturn:
        self.unexpected += 1
        self._event("UNEXPECTED", message)
        raise _Violation(message)


def _ends_mid_frame(rx: ReceiveBuffer, in_flight: bytearray, keep: int) -> bool:
    """Whether what the receiver has plus the kept prefix ends inside a frame."""
    data = rx.take_pending()
    rx.feed(data)  # put it back: only looking
    data += in_flight[:keep]
    start = 0
    while start < len(data):
        size = _FRAMER.frame_length(data, start, len(data))
        if size is None:
            return True
        start += size
    return False
