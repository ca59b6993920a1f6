"""``Simulator``: the shipped session layer over a seeded, simulated network, on a fake clock.

A client ``Clt`` and a ``Svc``, both with ``session=links.session.Resumable(...)``, talk over
``memory_socket_pair()`` ends, with a ``links.Timer`` driven by hand on a ``FakeClock``. What
runs is what users run: ``Connection`` (opening, publishing, losing, closing, its state
machine), ``Attachment``, ``Link``, ``Outbound`` and ``Transport``, the ``SessionDriver`` and
``ServerRegistry``, the ``Session`` engine, the service's ``HelloReader`` and ``admit``, its
pool and ``SvcSender``, the session heartbeats, dead-peer checks, HELLO deadlines and expiry
sweeps on the timer. Everything random (what is sent, how many bytes arrive, when a
connection is cut, when each side notices, how time moves) comes from one
``random.Random(seed)``, and nothing waits on real time or on another thread, so a failing run
reproduces from its seed alone. ``run(steps)`` does that many random actions, then
``settle()`` heals the network and pumps until both sides are quiet, and returns a
``SimResult`` whose ``lost``, ``duplicated``, ``reordered`` and ``unexpected`` must all be 0.
The same actions are public methods, so a test can also script an exact scenario.

The network (the one thing modelled on purpose)
    A simulated TCP connection is two memory socket pairs with the network in the middle: the
    client's socket, the network's two ends, the server's socket. The network takes what each
    side writes and holds it in flight; a delivery hands the receiver a prefix of it (any
    number of bytes, so frames arrive in pieces). A cut keeps a random prefix of each
    direction's bytes in flight (they may still arrive) and loses the rest; whatever is
    written after the cut is lost (``late_writes``). Each side notices a cut only when a later
    action says so: the network then injects a fault through the memory socket's hooks
    (``reset()`` or ``eof()``, at random) and that side's own read path finds it. Until then
    the client keeps writing into the dead connection, and the server keeps its session
    attached to it, so the client's new HELLO can arrive while the server still believes in
    the old connection. The server reads every connection it has not closed in any
    interleaving, so a stale HELLO or leftover bytes of an old connection can arrive after a
    newer connection's: the reorders that exist at connection boundaries. When the server
    closes a connection itself (superseded, silent, a HELLO deadline), what it wrote is cut
    like a reset's, except a REJECT, which is let through (a graceful close).

How each side is driven (no thread anywhere; every read happens on the calling thread)
    * server: a ``Svc`` whose receivers are spawned into a stand-in for the poll thread: an
      object with ``PollHandler``'s interface whose handlers (each connection's
      ``HelloReader``, then its ``AttachmentReader``) the simulator services inline, level
      triggered (``on_readable`` while the socket has something to read). The acceptor is
      modelled (there is no listening socket): each new connection gets a gate permit and the
      ``Resumable``'s ``hello_reader``, started on the stand-in, as ``Acceptor`` does. The
      application sends with ``SvcSender.send_to(con_id, msg, timeout=0)``.
    * client: a ``Clt`` built as ``Clt.connect`` builds it, minus the dial; per seed, either
      read on the calling thread (``recv(timeout=0)``) or spawned into the stand-in
      (``into_sender_with_spawned_recver``). It sends with ``send(msg, timeout=0)``; a
      ``WOULD_BLOCK`` (full replay buffer) is back-pressure, counted in ``blocked``, and must
      never turn into loss. The application has a connection to send on only once the first
      handshake completed (``Clt.connect`` returned); when that first handshake fails it
      connects again, with a new ``Clt`` (so a new session).
    * what the engine would do on a thread of its own is done inline, by the same calls:
      a (re)connection is ``Connection.open`` on a fresh memory socket, whose
      ``SessionDriver.client_handshake`` only sends HELLO here (the real one then blocks
      reading until WELCOME); the simulator finishes the handshake when bytes arrive, through
      ``Connection._drive`` (what ``client_handshake`` calls) without waiting, then
      ``Connection.publish(att, driver.replay_frames)`` as ``Clt.connect`` and ``Redialer``
      do. ``Redialer`` itself (a backoff on the timer, then an attempt on the poll thread) is replaced
      by the ``reconnect`` action: the connection's lost attachment only marks it as needing
      a dial. On ``SessionLost`` the connection is closed as ``Redialer`` closes it, and the
      application starts a new session.
    * time: the timer runs on the fake clock (``Timer(thread=False)``, ``run_due()`` after
      each move). ``SessionDriver.detached`` and ``ServerRegistry`` read ``time.monotonic()``
      directly, so the simulator moves those instants onto the fake clock (each driver's
      ``detached`` re-stamps the engine's ``detached_at``; the registry's ``ServerSessions``
      is given the fake time), which keeps the detached TTL deterministic.
    * the engine's log events are captured (``structlog.testing.capture_logs``, process-wide,
      only while an action runs): they join the trace, and a warning or error that the
      scenario does not allow (a hostile frame, a protocol error, a failed task) is a
      violation, as is any exception the engine raises to the caller.

What is not the shipped code (the network aside, each stand-in marks an engine hook missing)
    * the acceptor's few lines (a gate permit and ``Resumable.hello_reader`` per connection);
    * ``Redialer``: the ``reconnect`` action decides when, and the attempt runs inline;
    * the wait of ``SessionDriver.client_handshake`` (its HELLO half is repeated here, and the
      WELCOME is read through ``Connection._drive``, as the real one reads it);
    * the poll and timer threads (a stand-in serviced inline; ``Timer.run_due``);
    * the instants ``SessionDriver.detached`` and ``ServerRegistry`` take from ``time.monotonic``.

What counts as a violation
    Each payload carries its stream (client generation, or server session index) and a
    counter starting at 1. A payload that skips ahead counts the skipped ones as ``lost``
    until they arrive (then ``reordered``); one already delivered is ``duplicated``. After
    ``settle()``, whatever the live session's two streams sent and did not deliver is lost.
    ``unexpected`` counts any exception the engine raises that the scenario does not allow, a
    log event it does not allow, a payload that reaches the wrong session, or a network that
    does not settle; the first one ends the run.

Sessions that end for good
    With a finite ``detached_ttl`` the server forgets a session whose client stayed away too
    long; the client's next HELLO gets REJECT and the connection ends with ``SessionLost``,
    which is then an expected outcome (``sessions_lost``): the client starts a new session
    and the run goes on. What the ended session had not delivered is ``abandoned``, not lost.
    So is what the server sent on a session whose WELCOME never reached the client: its first
    handshake was cut and the client connected again, or a first HELLO arrived late, after
    the client had its session. The server cannot tell such a session from a real one (its
    application sends on every session it has), and only its TTL ends it.
"""

from __future__ import annotations

import math
import random
import struct
import time
from collections import deque
from dataclasses import dataclass
from typing import Any, NoReturn

from structlog.testing import capture_logs

from .._attachment import Attachment
from .._callbacks import Callback
from .._clt import Clt
from .._connection import Connection
from .._core._conid import ConId, Role
from .._core._protocol import Protocol
from .._core._status import SendStatus
from .._errors import LinksError, SessionLost
from .._reader import AttachmentReader
from .._state import ConnState
from .._svc import Svc
from .._threads import runtime_thread
from .._timer import Timer
from ..session import Resumable
from ..session import _wire as wire
from ..session._driver import SessionDriver
from ..session._engine import ServerSessions, Session, SessionState
from ._clock import FakeClock
from ._memory import MemorySocket, memory_socket_pair

__all__ = ["SimResult", "Simulator"]

_PAYLOAD = struct.Struct("!IQ")  # stream id, counter
_FRAMER = wire.FRAMER
_ATTACHED = SessionState.ATTACHED
_LOST = SessionState.LOST
_COMPLETED = SendStatus.COMPLETED
_OPENING, _HANDSHAKING, _CONNECTED = ConnState.OPENING, ConnState.HANDSHAKING, ConnState.CONNECTED
_DETACHED, _CLOSED = ConnState.DETACHED, ConnState.CLOSED
#: Memory sockets that never refuse a write: nothing is ever owed, so no poll thread is needed to
#: finish a write (the stand-in services it anyway if the engine asks).
_CAPACITY = 1 << 30
#: Bytes a reader takes in one read at least (a ``HelloReader``'s buffer; a ``Link``'s is larger).
_ONE_READ = 256
#: Long enough never to fire: a wait the simulator does not want (scripted scenarios).
_NEVER = 1e6
#: Warnings the scenario allows: what a cut connection, a silent peer or a stranger causes.
_ALLOWED_WARNINGS = frozenset({"heartbeat.failed", "session.peer_silent", "session.rejected"})
#: Engine log events that join the trace (the rest are counted or checked only).
_TRACED_EVENTS = frozenset({
    "clt.disconnected", "session.detached", "session.resumed", "session.started", "session.expired",
    "session.abandoned", "session.rejected", "session.peer_silent", "heartbeat.failed",
})  # fmt: skip


@dataclass(frozen=True)
class SimResult:
    """What one run did. ``ok`` when nothing was lost, duplicated, reordered or unexpected.

    ``sent_*``/``delivered_*`` count application messages over every session of the run;
    ``abandoned`` those of sessions that ended for good (expected, see the module docstring).
    The fault counters say which faults really fired (``late_writes`` counts frames written
    into a dead connection; ``superseded``, connections a HELLO took a session from while the
    server still had them open; ``peer_silent``, connections the dead-peer check dropped);
    ``trace`` holds the last events.
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
    peer_silent: int
    trace: tuple[str, ...]

    @property
    def ok(self) -> bool:
        """True when nothing was lost, duplicated, reordered or unexpected in the run."""
        return not (self.lost or self.duplicated or self.reordered or self.unexpected)

    def describe(self) -> str:
        """Every counter and the trace, one per line: what a failing test prints."""
        counters = ", ".join(f"{k}={v}" for k, v in vars(self).items() if k not in ("seed", "config", "trace"))
        return "\n".join([f"seed={self.seed} ({self.config}): {counters}", *self.trace])


class _Violation(BaseException):
    """Something the scenario does not allow happened: the run stops here. (A
    ``BaseException``, so that no ``except Exception`` of the engine's swallows it.)"""


class _Stream:
    """One direction of one session, as the two applications see it."""

    __slots__ = ("delivered", "hi", "sent", "skipped")

    def __init__(self) -> None:
        self.sent = 0
        self.delivered = 0
        self.hi = 0  # highest counter delivered
        self.skipped: set[int] = set()  # counters jumped over (lost unless they turn up late)


class _Wire:
    """One direction of one simulated connection, as the network sees it."""

    __slots__ = ("_tail", "ends", "flight", "last_frame", "read", "replay_end", "written")

    def __init__(self) -> None:
        self.flight = bytearray()  # taken from the sender, not yet delivered (and still deliverable)
        self.written = 0  # bytes taken from the sender while the connection was alive
        self.read = 0  # bytes delivered
        self.replay_end = 0  # stream offset where the last replay written here ends
        self.ends = {0}  # stream offsets where a frame ends
        self.last_frame = b""  # the last whole frame written
        self._tail = b""  # the start of a frame not yet whole

    def take(self, data: bytes) -> None:
        self.flight += data
        buf = self._tail + data if self._tail else data
        base = self.written - len(self._tail)
        self.written += len(data)
        pos, end, last = 0, len(buf), -1
        while True:
            size = _FRAMER.frame_length(buf, pos, end)
            if size is None:
                break
            last, pos = pos, pos + size
            self.ends.add(base + pos)
        if last >= 0:
            self.last_frame = buf[last:pos]
        self._tail = buf[pos:]

    def ends_mid_frame(self, keep: int) -> bool:
        """Whether the stream cut after ``keep`` more bytes ends inside a frame."""
        return self.read + keep not in self.ends


class _Conn:
    """One simulated TCP connection: client socket | network ends | server socket."""

    __slots__ = (
        "alive", "c2s", "client_sock", "id", "net_c", "net_s", "s2c", "server_open", "server_sock", "welcomed",
    )  # fmt: skip

    def __init__(self, conn_id: int) -> None:
        self.id = conn_id
        self.client_sock, self.net_c = memory_socket_pair(capacity=_CAPACITY)
        self.net_s, self.server_sock = memory_socket_pair(capacity=_CAPACITY)
        self.c2s = _Wire()
        self.s2c = _Wire()
        self.alive = True  # the network carries new bytes (False once cut, or closed by either side)
        self.server_open = True  # the server has not closed its end (nor noticed a cut)
        self.welcomed = False  # the client got WELCOME on it

    def sockets(self) -> tuple[MemorySocket, ...]:
        return (self.client_sock, self.net_c, self.net_s, self.server_sock)


class _Served:
    """A server session: its logical connection, and what its application sent."""

    __slots__ = ("con", "engine", "index", "stream")

    def __init__(self, index: int, engine: Session, con: Connection) -> None:
        self.index = index
        self.engine = engine
        self.con = con
        self.stream = _Stream()  # server to client


class _Gen:
    """One client session: one ``Clt`` (a new one after ``SessionLost`` or a failed first
    handshake), and what its application sent."""

    __slots__ = ("att", "clt", "con", "connected", "driver", "handshaking", "index", "sender", "stream")

    def __init__(self, index: int, driver: SessionDriver, con: Connection, clt: Clt) -> None:
        self.index = index
        self.driver = driver
        self.con = con
        self.clt = clt
        self.sender: Any = None  # what the application sends with, once Clt.connect returned
        self.stream = _Stream()  # client to server
        self.att: Attachment | None = None  # the attachment the client is on (handshaking or current)
        self.handshaking = False
        self.connected = False  # the first handshake completed


class _Poll:
    """A stand-in for ``PollHandler``, serviced inline by the simulator (never a thread)."""

    def __init__(self) -> None:
        self.handlers: dict[int, Any] = {}  # fd -> handler
        self.writers: list[Any] = []  # handlers that asked for on_writable
        self.on_add: Any = None

    def add(self, handler: Any) -> None:
        self.handlers[handler.fileno()] = handler
        if self.on_add is not None:
            self.on_add(handler)

    def remove(self, handler: Any, reason: str = "removed", then: Any = None) -> None:
        fd = handler.fileno()
        if self.handlers.get(fd) is handler:
            del self.handlers[fd]
        if then is not None:
            then()

    def want_writable(self, handler: Any) -> None:
        self.writers.append(handler)

    def call_soon(self, fn: Any) -> None:
        fn()

    def in_poll_thread(self) -> bool:
        return True


class _Listener:
    """What ``Svc`` needs of a listening socket, when nothing is ever accepted from it."""

    def getsockname(self) -> tuple[str, int]:
        return ("memory", 0)

    def fileno(self) -> int:
        return -2

    def close(self) -> None:
        pass


class _ServerReceiver(Callback):
    """The server application's callback: every message it gets, checked by the simulator."""

    def __init__(self, sim: Simulator) -> None:
        self._sim = sim

    def on_recv(self, con_id: ConId, msg: Any) -> None:
        self._sim._server_received(con_id, msg)


class _ClientReceiver(Callback):
    """One client session's callback: every message it gets, checked by the simulator."""

    def __init__(self, sim: Simulator) -> None:
        self._sim = sim
        self.gen: _Gen | None = None

    def on_recv(self, con_id: ConId, msg: Any) -> None:
        assert self.gen is not None
        self._sim._client_received(self.gen, msg)


class _Redial:
    """Stands in for ``links._redial.Redialer``: a lost attachment only asks for a dial (the
    ``reconnect`` action makes it), instead of a backoff on the timer and an attempt on the poll thread."""

    def __init__(self, sim: Simulator) -> None:
        self._sim = sim

    def schedule(self) -> None:
        self._sim._event("c.redial")


class _SessionsOnFakeClock(ServerSessions):
    """``ServerSessions`` whose ``now`` is the fake clock's (``ServerRegistry`` passes
    ``time.monotonic()``)."""

    def __init__(self, clock: FakeClock, detached_ttl: float, **session_args: int) -> None:
        super().__init__(detached_ttl, **session_args)
        self._clock = clock

    def on_hello(self, frame: memoryview, now: float) -> tuple[Session, object | None, bool, int]:
        return super().on_hello(frame, self._clock.monotonic())

    def expire(self, now: float) -> list[object]:
        return super().expire(self._clock.monotonic())


def _frames(data: bytes) -> int:
    """How many frames ``data`` holds (what the engine writes is whole frames)."""
    count = pos = 0
    while (size := _FRAMER.frame_length(data, pos, len(data))) is not None:
        count += 1
        pos += size
    return count


def _on_fake_clock(driver: SessionDriver, clock: FakeClock) -> None:
    """Make ``driver.detached`` stamp the engine's ``detached_at`` on ``clock``."""
    detached = driver.detached

    def detached_on_fake_clock(connection: Connection) -> None:
        detached(connection)
        engine = driver.engine
        if engine.detached_at is not None:
            engine.detached_at = clock.monotonic()

    driver.detached = detached_on_fake_clock  # type: ignore[method-assign]


def _hello_only(driver: SessionDriver) -> None:
    """``client_handshake`` without its wait: HELLO goes out, as in the real one; the
    simulator reads the WELCOME when the network delivers it (``Simulator._handshake``)."""

    def client_handshake(att: Attachment, deadline: float) -> None:
        with driver._lock:
            hello = driver.engine.start_client()
        att.transport.write(hello, max(0.0, deadline - time.monotonic()))

    driver.client_handshake = client_handshake  # type: ignore[method-assign]


class Simulator:
    """A client ``Clt`` and a ``Svc`` with resumable sessions over a simulated network; see
    the module docstring.

    Args:
        seed: the only source of randomness.
        max_messages, max_bytes, ack_every: the sessions' settings (None: drawn from the seed,
            often tiny, so back-pressure happens).
        detached_ttl: seconds the server keeps a detached session; ``math.inf`` never forgets
            one, None draws it from the seed (finite for about one seed in five).
        intruders: whether random steps include HELLOs with random keys (None: from the seed).
        heartbeat_interval, dead_after: the sessions' heartbeats and dead-peer check on the
            timer (None: drawn from the seed; ``math.inf`` interval: none).
        handshake_timeout: seconds the server's ``HelloReader`` waits for a HELLO (None: 1.0;
            ``math.inf``: for ever). Scripted scenarios usually turn both timer-driven checks
            off, so that only their own actions move things.
        spawned: whether the client's receiver is spawned into the (stand-in) poll thread,
            rather than read with ``recv(timeout=0)`` (None: from the seed).
        trace_size: how many of the last events ``SimResult.trace`` keeps.

    A run's sockets are released when ``run()`` returns; a scripted scenario calls ``close()``
    (or uses the simulator as a context manager).
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
        heartbeat_interval: float | None = None,
        dead_after: int | None = None,
        handshake_timeout: float | None = None,
        spawned: bool | None = None,
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
        if heartbeat_interval is None:
            heartbeat_interval = rng.choice((0.05, 0.2, math.inf))
        if dead_after is None:
            dead_after = rng.choice((3, 5))
        if spawned is None:
            spawned = rng.random() < 0.5
        self.intruders = intruders
        self.spawned = spawned
        settings = {"max_messages": max_messages, "max_bytes": max_bytes, "ack_every": ack_every}
        if handshake_timeout is None:
            handshake_timeout = 1.0
        timing = {
            "heartbeat_interval": min(heartbeat_interval, _NEVER), "dead_after": dead_after,
            "handshake_timeout": min(handshake_timeout, _NEVER),
        }  # fmt: skip
        ttl = min(detached_ttl, _NEVER)
        self._client_config = Resumable(**settings, **timing)
        self.clock = FakeClock()
        self.timer = Timer(self.clock, thread=False, name="sim-timer")
        self._poll = _Poll()
        self._poll.on_add = self._poll_added
        self._captured: list[dict[str, Any]] = []
        self._capturing = 0
        self._capture: Any = None
        self._capture_logs = _Capture(self)
        # The server: a Svc whose receivers are spawned into the stand-in poll thread.
        self.svc = Svc(
            _Listener(), protocol=Protocol, callback=_ServerReceiver(self), max_connections=1 << 30, name="svc",  # type: ignore[arg-type]
            poll_handler=self._poll, timer=self.timer, session=Resumable(detached_ttl=ttl, **settings, **timing),  # type: ignore[arg-type]
        )  # fmt: skip
        registry = self.svc.registry
        assert registry is not None
        registry.sessions = _SessionsOnFakeClock(self.clock, ttl, **settings)
        self._svc_sender = self.svc.into_sender_with_spawned_recver()
        self._gens: list[_Gen] = []
        self._served: list[_Served] = []
        self._by_key: dict[bytes, _Served] = {}
        self._by_con_id: dict[ConId, _Served] = {}
        self._conns: list[_Conn] = []  # every connection the client dialed, oldest first
        self._server_conns: list[_Conn] = []  # those whose server end the server has not closed
        self._by_server_sock: dict[int, _Conn] = {}  # id(server socket) -> its connection
        self._cconn: _Conn | None = None  # the client's connection, until its attachment ends
        self._strangers: list[MemorySocket] = []
        self._scratch = bytearray(1 << 16)
        self._trace: deque[tuple] = deque(maxlen=trace_size)
        self._step = 0
        self._due: float | None = None  # the timer's earliest deadline (None: look it up)
        self._wrote = False  # whether the engine ran since the network last took what it wrote
        self._settled = False
        self._closed = False
        self.duplicated = self.reordered = self.unexpected = 0
        self.cuts = self.cuts_mid_handshake = self.cuts_mid_replay = self.cuts_mid_frame = 0
        self.replayed = self.late_writes = self.superseded = self.blocked = 0
        self.sessions_lost = self.intruders_rejected = self.peer_silent = 0
        args = ", ".join(f"{k}={v}" for k, v in settings.items())
        self.config = (
            f"{args}, detached_ttl={detached_ttl}, intruders={intruders}, heartbeat_interval={heartbeat_interval}, "
            f"dead_after={dead_after}, handshake_timeout={handshake_timeout}, client={'spawned' if spawned else 'recv'}"
        )
        with self._logs():
            registry.start_expiry(self.timer)
            self._new_client()

    # -- what a test looks at ------------------------------------------------------------

    @property
    def client(self) -> Session:
        """The client's current session engine."""
        return self._gens[-1].driver.engine

    @property
    def server_session(self) -> Session | None:
        """The server's side of the client's session (None before the client has one)."""
        served = self._peer()
        return served.engine if served else None

    @property
    def registry(self) -> ServerSessions:
        """The server's sessions (its ``ServerRegistry``'s)."""
        assert self.svc.registry is not None
        return self.svc.registry.sessions

    def in_flight(self, direction: str) -> int:
        """Bytes written and not yet delivered on connections whose receiver still reads them."""
        self._sync()
        if direction == "s2c":
            return len(self._cconn.s2c.flight) if self._cconn else 0
        return sum(len(c.c2s.flight) for c in self._server_conns)

    # -- the random driver ---------------------------------------------------------------

    def run(self, steps: int) -> SimResult:
        """Do ``steps`` random actions, settle, and return the result (then release the sockets)."""
        rng = self._rng.random
        try:
            with self._logs():
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
                    self._run_timer()
                self.settle()
        except _Violation:
            pass  # counted and traced where it was raised
        finally:
            self.close()
        return self.result()

    def _random_delivery(self) -> None:
        rng = self._rng
        self._sync()
        candidates = [(c, "c2s") for c in self._server_conns if c.c2s.flight]
        if self._cconn is not None and self._cconn.s2c.flight:
            candidates.append((self._cconn, "s2c"))
        if not candidates:
            return
        conn, direction = candidates[rng.randrange(len(candidates))]
        pending = len(conn.c2s.flight if direction == "c2s" else conn.s2c.flight)
        with self._logs():
            self._deliver(conn, direction, pending if rng.random() < 0.5 else rng.randint(1, pending))

    def _random_server_send(self) -> None:
        """Usually on the client's session; sometimes on another one the server still has
        (one whose first WELCOME never reached the client: the server cannot know that)."""
        alive = [s for s in self._served if s.engine.state is not _LOST]
        if alive:
            with self._logs():
                self._server_send_on(alive[-1] if len(alive) == 1 else alive[self._rng.randrange(len(alive))])

    def _notice_one_server(self) -> None:
        self._sync()
        dead = [c for c in self._server_conns if not c.alive]
        if dead:
            with self._logs():
                self._server_notice(dead[self._rng.randrange(len(dead))])

    # -- actions (public, so tests can script a scenario) ---------------------------------

    def client_send(self, count: int = 1) -> int:
        """The client application sends ``count`` messages; how many back-pressure let through
        (none before its first handshake completed: ``Clt.connect`` has not returned)."""
        gen = self._gens[-1]
        if gen.sender is None:
            return 0
        sent = 0
        with self._logs():
            for _ in range(count):
                stream = gen.stream
                try:
                    status = gen.sender.send(_PAYLOAD.pack(gen.index, stream.sent + 1), 0)
                except LinksError as e:
                    self._violation(f"client send raised {type(e).__name__}: {e}")
                if status is not _COMPLETED:
                    self.blocked += 1
                    self._event("c.blocked", len(gen.driver.engine.replay))
                    break
                stream.sent += 1
                sent += 1
                self._event("c.send", gen.index, stream.sent)
                self._after()
        return sent

    def server_send(self, count: int = 1) -> int:
        """The server application sends ``count`` messages on the client's session."""
        served = self._peer()
        sent = 0
        with self._logs():
            while served is not None and sent < count and self._server_send_on(served):
                sent += 1
        return sent

    def _server_send_on(self, served: _Served) -> bool:
        if served.engine.state is _LOST:
            return False
        stream = served.stream
        try:
            status = self._svc_sender.send_to(served.con.con_id, _PAYLOAD.pack(served.index, stream.sent + 1), 0)
        except LinksError as e:
            self._violation(f"server send raised {type(e).__name__}: {e}")
        if status is not _COMPLETED:
            self.blocked += 1
            self._event("s.blocked", served.index, len(served.engine.replay))
            return False
        stream.sent += 1
        self._event("s.send", served.index, stream.sent)
        self._after()
        return True

    def deliver(self, direction: str, nbytes: int | None = None, conn: int | None = None) -> int:
        """Deliver up to ``nbytes`` (None: all) in flight, in ``"c2s"`` or ``"s2c"``; how many.

        The server reads every connection it still has open, oldest first, or only the one
        whose id (as traced, from 1) is ``conn``; the client reads only its current one.
        """
        delivered = 0
        self._sync()
        if direction == "s2c":
            conns = [self._cconn] if self._cconn is not None else []
        else:
            conns = [c for c in self._server_conns if conn is None or c.id == conn]
        with self._logs():
            for c in conns:
                pending = len(c.c2s.flight if direction == "c2s" else c.s2c.flight)
                n = pending if nbytes is None else min(pending, nbytes - delivered)
                # Delivering to one connection may close another (a HELLO supersedes it).
                if n and (c.server_open if direction == "c2s" else c is self._cconn):
                    self._deliver(c, direction, n)
                    delivered += n
                if nbytes is not None and delivered >= nbytes:
                    break
        return delivered

    def cut(self, keep_c2s: int | None = None, keep_s2c: int | None = None) -> bool:
        """Cut the client's connection; each direction keeps a prefix of its bytes in flight
        (None: a random one). False when there was no live connection to cut."""
        self._sync()
        conn = self._cconn
        if conn is None or not conn.alive:
            return False
        rng = self._rng
        c2s, s2c = conn.c2s, conn.s2c
        keep_c2s = rng.randint(0, len(c2s.flight)) if keep_c2s is None else min(keep_c2s, len(c2s.flight))
        keep_s2c = rng.randint(0, len(s2c.flight)) if keep_s2c is None else min(keep_s2c, len(s2c.flight))
        self.cuts += 1
        if not conn.welcomed:
            self.cuts_mid_handshake += 1
        if c2s.read + keep_c2s < c2s.replay_end or s2c.read + keep_s2c < s2c.replay_end:
            self.cuts_mid_replay += 1
        if c2s.ends_mid_frame(keep_c2s) or s2c.ends_mid_frame(keep_s2c):
            self.cuts_mid_frame += 1
        del c2s.flight[keep_c2s:]
        del s2c.flight[keep_s2c:]
        conn.alive = False
        self._event("cut", conn.id, f"keep c2s={keep_c2s} s2c={keep_s2c}")
        return True

    def notice_client(self) -> bool:
        """The client notices that its connection died: a reset or EOF (at random) reaches its
        socket, and its own read path finds it."""
        self._sync()
        conn = self._cconn
        if conn is None or conn.alive:
            return False
        with self._logs():
            self._event("c.notice", conn.id)
            self._fault(conn.net_c)
            self._client_read(conn)
            if self._cconn is conn:
                self._violation(f"the client read connection {conn.id} after its fault and kept it")
        return True

    def notice_server(self) -> int:
        """The server notices every dead connection it still has open; how many."""
        self._sync()
        dead = [c for c in self._server_conns if not c.alive]
        with self._logs():
            for conn in dead:
                self._server_notice(conn)
        return len(dead)

    def reconnect(self) -> bool:
        """The client, with no connection, connects: a fresh memory socket, ``Connection.open``
        (HELLO goes out), and the server's acceptor takes the other end."""
        if self._cconn is not None:
            return False
        gen = self._gens[-1]
        conn = _Conn(len(self._conns) + 1)
        self._conns.append(conn)
        self._server_conns.append(conn)
        self._by_server_sock[id(conn.server_sock)] = conn
        self._cconn = conn
        with self._logs():
            self._event("c.connect", conn.id, f"last_received={gen.driver.engine.last_received}")
            try:
                gen.att = gen.con.open(conn.client_sock, time.monotonic() + _NEVER)
            except SessionLost as e:
                self._violation(f"open on a lost session: {e}")
            gen.handshaking = True
            self._accept(conn.server_sock)
            self._after()
        return True

    def tick_client(self) -> None:
        """The client's session heartbeat fires now (the timer's task, run out of turn)."""
        att = self._gens[-1].con.attachment
        if att is not None:
            with self._logs():
                self._beat(att)

    def tick_server(self) -> None:
        """The heartbeat of every server session with a connection fires now."""
        with self._logs():
            for served in self._served:
                att = served.con.attachment
                if att is not None:
                    self._beat(att)

    def advance(self, seconds: float) -> None:
        """Time passes; the timer runs what fell due (heartbeats, dead-peer checks, HELLO
        deadlines, expiry sweeps)."""
        self.clock.advance(seconds)
        self._event("clock", round(self.clock.monotonic(), 4))
        with self._logs():
            self._run_timer()

    def expire(self) -> None:
        """The server's sweep of detached sessions older than the TTL runs now."""
        handle = self.svc.registry._expiry if self.svc.registry is not None else None
        if handle is not None:
            with self._logs():
                with runtime_thread():
                    handle.task()
                self._event("s.expire")
                self._after()

    def intrude(self, key: bytes | None = None, last_received: int = 0) -> wire.Reject:
        """A stranger connects and says HELLO with a random (or given) key: it must be
        rejected, and nothing else may change. Returns the decoded REJECT."""
        key = self._rng.randbytes(wire.KEY_SIZE) if key is None else key
        stranger, server_sock = memory_socket_pair(capacity=_CAPACITY)
        self._strangers += (stranger, server_sock)
        with self._logs():
            stranger.send(wire.encode_hello(key, last_received))
            self._accept(server_sock)
            self._service(server_sock)
            reply = stranger.recv(1 << 16)
            frame = _FRAMER.frame_length(reply, 0, len(reply)) if reply else None
            msg = wire.decode(memoryview(reply)) if frame == len(reply) else None
            if not isinstance(msg, wire.Reject):
                self._violation(f"a stranger's HELLO was answered with {msg!r}")
            self.intruders_rejected += 1
            self._event("intruder.rejected")
            self._after()
        return msg

    # -- settling --------------------------------------------------------------------------

    def settle(self, max_rounds: int = 100) -> None:
        """Stop the faults: both sides notice every cut, the client reconnects, everything in
        flight is delivered and both sides ack, until nothing is left to move."""
        with self._logs():
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
                    self._check_server_states()
                    self._settled = True
                    self._event("settled")
                    return
            self._violation("the network did not settle")

    def _quiet(self) -> bool:
        self._sync()
        gen, served, conn = self._gens[-1], self._peer(), self._cconn
        if conn is None or not conn.alive or served is None or gen.handshaking or gen.sender is None:
            return False
        att, server_att = gen.con.attachment, served.con.attachment
        engine, server_engine = gen.driver.engine, served.engine
        return (
            att is not None and att.transport.sock is conn.client_sock
            and server_att is not None and server_att.transport.sock is conn.server_sock
            and engine.key == server_engine.key and engine.state is _ATTACHED and server_engine.state is _ATTACHED
            and not engine.replay and not server_engine.replay
            and gen.stream.delivered == gen.stream.sent and served.stream.delivered == served.stream.sent
        )  # fmt: skip

    def result(self) -> SimResult:
        """What the run did so far: counters of messages and faults, and the last trace events.

        Returns:
            A ``SimResult``; check ``ok`` and print ``describe()`` when it is not.
        """
        gens, served = self._gens, self._served
        live_gen = gens[-1]
        live_served = self._by_key.get(live_gen.driver.engine.key)
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
            resumes=sum(g.driver.engine.resumes for g in gens),
            replayed=self.replayed,
            late_writes=self.late_writes,
            superseded=self.superseded,
            blocked=self.blocked,
            sessions_lost=self.sessions_lost,
            intruders_rejected=self.intruders_rejected,
            peer_silent=self.peer_silent,
            trace=tuple(f"{step:5d} {name} {' '.join(map(str, args))}".rstrip() for step, name, *args in self._trace),
        )

    def close(self) -> None:
        """Release every socket of the run (idempotent). The engine's objects stay readable."""
        if self._closed:
            return
        self._closed = True
        for conn in self._conns:
            for sock in conn.sockets():
                sock.close()
        for sock in self._strangers:
            sock.close()

    def __enter__(self) -> Simulator:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- the client ------------------------------------------------------------------------

    def _new_client(self) -> None:
        """A new ``Clt`` with a new session, built as ``Clt.connect`` builds one (the dial and
        the wait for WELCOME aside)."""
        driver = self._client_config.client_driver()
        _on_fake_clock(driver, self.clock)
        _hello_only(driver)
        receiver = _ClientReceiver(self)
        con = Connection(
            Role.INITIATOR, "clt", protocol_factory=Protocol, callback=receiver, timer=self.timer,
            poll=lambda: self._poll, session=driver, handshake_timeout=_NEVER,
        )  # fmt: skip
        driver.connection = con
        con._redialer = _Redial(self)  # type: ignore[assignment]
        gen = receiver.gen = _Gen(len(self._gens), driver, con, Clt(con))
        self._gens.append(gen)

    def _client_read(self, conn: _Conn, nbytes: int = 0) -> None:
        """The client reads its connection: the handshake, or its receiver."""
        gen = self._gens[-1]
        if conn is not self._cconn or gen.att is None:
            self._after()
            return
        if gen.handshaking:
            self._handshake(gen, conn)
        elif self.spawned:
            self._service(conn.client_sock, nbytes)
        else:
            while True:
                try:
                    msg = gen.clt.recv(0)
                except LinksError as e:
                    self._violation(f"client recv raised {type(e).__name__}: {e}")
                if msg is None:
                    break
        self._after()

    def _handshake(self, gen: _Gen, conn: _Conn) -> None:
        """What ``client_handshake`` waits for, without waiting: read what arrived, let the
        connection drive the handshake (``Connection._drive``, as ``client_handshake`` does),
        and once WELCOME came publish the attachment with its replay (as ``Clt.connect`` and
        ``Redialer`` do). A failure ends the attempt as ``Connection.open`` and ``Redialer``
        end it."""
        att, con, engine = gen.att, gen.con, gen.driver.engine
        assert att is not None
        try:
            while att.read_once():
                pass
            con._drive(att, lambda: engine.state is _ATTACHED, time.monotonic())
        except TimeoutError:
            return  # no WELCOME yet
        except LinksError as e:
            # As Connection.open ends a failed handshake: the attachment goes, the connection
            # is detached (and Clt.connect or Redialer take it from there).
            con._discard(att, "handshake_failed")
            with con.changed:
                if con.state is ConnState.HANDSHAKING:
                    con._move(ConnState.DETACHED)
            self._client_dropped(conn)
            if isinstance(e, SessionLost):
                self._client_lost(gen, e)
            elif not gen.connected:
                self._event("c.connect_failed", type(e).__name__)
                self._new_client()  # Clt.connect raised: the application connects again
            return
        gen.handshaking = False
        conn.welcomed = True
        self._event("c.welcomed", conn.id, f"resumes={engine.resumes} peer_acked={engine.peer_acked}")
        replayed = len(engine.replay)
        con.publish(att, gen.driver.replay_frames)
        if replayed:
            self.replayed += replayed
            self._event("c.replay", conn.id, replayed)
            self._pump(conn)
            conn.c2s.replay_end = conn.c2s.written
        if not gen.connected:
            gen.connected = True
            gen.sender = gen.clt.into_sender_with_spawned_recver() if self.spawned else gen.clt
        self._client_read(conn)  # whatever came after WELCOME

    def _client_lost(self, gen: _Gen, error: SessionLost) -> None:
        """REJECT: allowed only if the server really forgot this session (expired)."""
        served = self._by_key.get(gen.driver.engine.key)
        if served is None or served.engine.state is not _LOST:
            self._violation(f"SessionLost for a session the server still has: {error}")
        gen.con.close("session_lost", error)  # as Redialer does
        self.sessions_lost += 1
        self._event("c.SessionLost", gen.index, str(error))
        self._new_client()

    def _client_dropped(self, conn: _Conn) -> None:
        """The client's attachment on ``conn`` ended: the client no longer reads it."""
        if self._cconn is conn:
            self._pump(conn)  # what it wrote before its end is in flight
            self._cconn = None
            conn.alive = False  # what it wrote may still arrive; nothing more will
            gen = self._gens[-1]
            gen.att = None
            gen.handshaking = False

    def _client_received(self, gen: _Gen, msg: Any) -> None:
        stream_id, n = _PAYLOAD.unpack(msg)
        served = self._served[stream_id] if stream_id < len(self._served) else None
        if served is None or served.engine.key != gen.driver.engine.key:
            self._violation(f"client got server stream {stream_id}, not its session's")
        self._arrive("c.recv", served.stream, stream_id, n)

    # -- the server ------------------------------------------------------------------------

    def _accept(self, sock: MemorySocket) -> None:
        """What ``Acceptor`` does with a session service's accepted socket: a gate permit, and
        a ``HelloReader`` started on the (stand-in) poll thread."""
        svc = self.svc
        permit = svc.gate.try_acquire()
        if permit is None:
            self._violation("the gate refused a connection")
        assert svc.session is not None
        svc.session.hello_reader(svc, sock, permit, sock.getpeername()).start(self._poll)

    def _poll_added(self, handler: Any) -> None:
        """A handler joined the stand-in poll thread: a server connection just attached is
        recorded (a new session, or a resume with its replay)."""
        if not isinstance(handler, AttachmentReader):
            return
        att = handler.attachment
        con = att.connection
        if con.role is not Role.ACCEPTOR:
            return
        driver = con.session
        engine = driver.engine
        served = self._by_key.get(engine.key)
        if served is None:
            served = _Served(len(self._served), engine, con)
            self._served.append(served)
            self._by_key[engine.key] = served
            self._by_con_id[con.con_id] = served
            _on_fake_clock(driver, self.clock)
        elif served.con is not con:
            self._violation("a resumed session got another logical connection")
        conn = self._by_server_sock.get(id(att.transport.sock))
        self._event("s.attached", conn.id if conn else "?", f"session={served.index} replay={len(engine.replay)}")
        if conn is not None and engine.replay:
            self.replayed += len(engine.replay)
            self._pump(conn)
            conn.s2c.replay_end = conn.s2c.written

    def _server_received(self, con_id: ConId, msg: Any) -> None:
        served = self._by_con_id.get(con_id)
        stream_id, n = _PAYLOAD.unpack(msg)
        gen = self._gens[stream_id] if stream_id < len(self._gens) else None
        if served is None or gen is None or gen.driver.engine.key != served.engine.key:
            self._violation(f"server got client stream {stream_id}, not its session's")
        self._arrive("s.recv", gen.stream, stream_id, n)

    def _server_notice(self, conn: _Conn) -> None:
        """A reset or EOF (at random) reaches the server's end; its reader finds it."""
        self._event("s.notice", conn.id)
        self._fault(conn.net_s)
        self._service(conn.server_sock)
        self._server_closed(conn)
        self._after()

    def _server_closed(self, conn: _Conn) -> None:
        """The server closed its end (or noticed the cut): the network stops delivering to it.
        Unless its last frame was a REJECT, what it wrote is cut as by a reset."""
        if not conn.server_open:
            return
        conn.server_open = False
        self._server_conns.remove(conn)
        if conn.alive:
            conn.alive = False
            conn.c2s.flight.clear()
            s2c = conn.s2c
            if not (s2c.last_frame and isinstance(wire.decode(memoryview(s2c.last_frame)), wire.Reject)):
                del s2c.flight[self._rng.randint(0, len(s2c.flight)) :]
        self._event("s.close", conn.id)

    def _check_server_states(self) -> None:
        """Each server session's connection is in the state its session says (an expired
        session's connection closed, even when the HELLO that expired it asked for it)."""
        for served in self._served:
            con = served.con
            want = _CLOSED if served.engine.state is _LOST else _CONNECTED if con.attachment else _DETACHED
            if con.state is want:
                continue
            self._violation(f"server session {served.index}'s connection is {con.state.value}, not {want.value}")

    def _peer(self) -> _Served | None:
        """The server's record of the client's current session."""
        return self._by_key.get(self._gens[-1].driver.engine.key)

    # -- the network and the stand-in runtime -------------------------------------------------

    def _deliver(self, conn: _Conn, direction: str, n: int) -> None:
        wire_ = conn.c2s if direction == "c2s" else conn.s2c
        data = bytes(wire_.flight[:n])
        del wire_.flight[:n]
        wire_.read += n
        self._event(direction, conn.id, n)
        if direction == "c2s":
            conn.net_s.send(data)
            self._service(conn.server_sock, n)
            self._after()
        else:
            conn.net_c.send(data)
            self._client_read(conn, n)

    def _fault(self, net_end: MemorySocket) -> None:
        """What the network does to one side of a dead connection so that side notices."""
        if self._rng.random() < 0.5:
            net_end.reset()
        else:
            net_end.eof()

    def _service(self, sock: MemorySocket, nbytes: int = 0) -> None:
        """The stand-in poll thread: the handler of ``sock`` reads (level triggered: again while
        there is something to read). One read takes at least ``_ONE_READ`` bytes, so after a
        smaller delivery (or a fault) the socket needs no second look."""
        handlers = self._poll.handlers
        with runtime_thread():
            for i in range(10_000):
                handler = handlers.get(sock.fileno())
                if handler is None or handler.closed or (i and (nbytes <= _ONE_READ or not sock.links_wait(True, 0))):
                    return
                handler.on_readable()
        self._violation("a handler kept finding something to read")

    def _beat(self, att: Attachment) -> None:
        _, beat, _ = att.connection.session.liveness(att)  # the session's beat, as the heartbeat writer runs it
        with runtime_thread():
            beat()
        self._after()

    def _run_timer(self) -> None:
        """The stand-in timer thread: run what fell due (the earliest deadline is looked up
        again only after the engine ran, which is when tasks are scheduled)."""
        due = self._due
        if due is None:
            due = self._due = self.timer.next_deadline()
        if due is not None and self.clock.monotonic() >= due:
            with runtime_thread():
                self.timer.run_due()
            self._after()

    def _after(self) -> None:
        """After the engine ran: finish what it asked the poll thread to write, see whether the
        client's attachment ended, check the engine's log events."""
        self._due = None  # the engine may have scheduled a task
        self._wrote = True  # and written
        poll = self._poll
        while poll.writers:
            handler = poll.writers.pop(0)
            with runtime_thread():
                while not handler.closed and handler.on_writable():
                    pass
        conn = self._cconn
        gen = self._gens[-1]
        if conn is not None:
            att = gen.att
            if att is not None and att.closed:
                self._event("c.dropped", conn.id)
                self._client_dropped(conn)
        if self._captured:
            self._check_logs()
        # The connection's state machine agrees with what the client is doing.
        want = _HANDSHAKING if gen.handshaking else _CONNECTED if gen.att else _DETACHED if gen.connected else _OPENING
        if gen.con.state is not want:
            self._violation(f"the client's connection is {gen.con.state.value}, not {want.value}")

    def _sync(self) -> None:
        """The network takes what both sides wrote so far, on every connection it carries."""
        if not self._wrote:
            return
        self._wrote = False
        conn = self._cconn
        if conn is not None and not conn.server_open:
            self._pump(conn)
        for conn in list(self._server_conns):
            self._pump(conn)

    def _pump(self, conn: _Conn) -> None:
        """The network takes what each side of ``conn`` wrote (lost, if the connection is
        dead: ``late_writes`` counts those frames), and sees whether the server closed its end."""
        if conn is self._cconn:
            data, _ = self._take(conn.net_c)
            if data:
                if conn.alive:
                    conn.c2s.take(data)
                else:
                    self.late_writes += _frames(data)
        if conn.server_open:
            data, ended = self._take(conn.net_s)
            if data:
                if conn.alive:
                    conn.s2c.take(data)
                else:
                    self.late_writes += _frames(data)
            if ended:
                self._server_closed(conn)

    def _take(self, sock: MemorySocket) -> tuple[bytes, bool]:
        """All that ``sock`` has to read, and whether its peer closed (or it was reset)."""
        chunks = []
        scratch = self._scratch
        ended = False
        while sock.links_wait(True, 0):
            try:
                n = sock.recv_into(scratch)
            except OSError:
                n = 0
            if not n:
                ended = True
                break
            chunks.append(bytes(scratch[:n]))
        return b"".join(chunks), ended

    # -- bookkeeping -----------------------------------------------------------------------

    def _logs(self) -> _Capture:
        return self._capture_logs

    def _check_logs(self) -> None:
        entries, self._captured[:] = list(self._captured), []
        for entry in entries:
            event, level = entry.get("event"), entry.get("log_level")
            if event == "clt.disconnected" and entry.get("reason") == "superseded":
                self.superseded += 1
            elif event == "session.peer_silent":
                self.peer_silent += 1
            if event in _TRACED_EVENTS:
                self._event(f"  {event}", entry.get("reason", ""))  # no error text: it names sockets
            if level in ("error", "critical") or (level == "warning" and event not in _ALLOWED_WARNINGS):
                detail = entry.get("error") or entry.get("reason") or ""
                self._violation(f"engine logged {level} {event}: {detail}")

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


class _Capture:
    """The engine's log events go to the simulator while an action runs (re-entrant: only
    the outermost action installs the capture)."""

    __slots__ = ("_sim",)

    def __init__(self, sim: Simulator) -> None:
        self._sim = sim

    def __enter__(self) -> None:
        sim = self._sim
        sim._capturing += 1
        if sim._capturing == 1:
            sim._capture = capture_logs()
            sim._captured = sim._capture.__enter__()

    def __exit__(self, *exc: object) -> None:
        sim = self._sim
        sim._capturing -= 1
        if sim._capturing == 0:
            capture, sim._capture = sim._capture, None
            capture.__exit__(None, None, None)
