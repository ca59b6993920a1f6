"""The shipped session layer over the simulated network: random seeds, then exact scenarios.

The simulator runs the real ``Clt``/``Svc`` connections with ``session=Resumable(...)`` over
memory sockets (see ``links.testing._simulator``). Every randomized check names its seed;
``Simulator(seed).run(STEPS).describe()`` replays a failure with its trace. Every test also
asserts that its faults really fired.

The default suite runs ``SEEDS`` seeds; ``-m slow`` runs 10,000.
"""

from __future__ import annotations

import math
import time

import pytest

from links._connection import Connection
from links.session import Session, SessionState
from links.session import _engine as engine
from links.session import _wire as wire
from links.session._driver import SessionDriver
from links.testing import SimResult, Simulator

SEEDS = 1_200  # about the runtime the default suite had before the simulator drove the shipped code
STEPS = 300

DATA = len(wire.encode_data(1, 0, bytes(12)))  # the size of one simulated message's frame
WELCOME = len(wire.encode_welcome(False, wire.NO_KEY, 0))


_open: list[Simulator] = []


@pytest.fixture(autouse=True)
def _close_simulators():
    """A scripted simulator's memory sockets are released after its test."""
    yield
    while _open:
        _open.pop().close()


def quiet(**kw) -> Simulator:
    """A simulator for a scripted scenario: no TTL, no intruders, no timer-driven heartbeats or
    HELLO deadline, large buffers, a client read with ``recv``, unless asked."""
    kw.setdefault("max_messages", 64)
    kw.setdefault("max_bytes", 1 << 20)
    kw.setdefault("ack_every", 1000)
    kw.setdefault("detached_ttl", math.inf)
    kw.setdefault("heartbeat_interval", math.inf)
    kw.setdefault("handshake_timeout", math.inf)
    kw.setdefault("spawned", False)
    sim = Simulator(0, intruders=False, **kw)
    _open.append(sim)
    return sim


def connect(sim: Simulator) -> None:
    """Dial, and let the handshake and both replays through."""
    assert sim.reconnect()
    sim.deliver("c2s")
    sim.deliver("s2c")
    sim.deliver("c2s")
    assert sim.client.state is SessionState.ATTACHED


def settled(sim: Simulator) -> SimResult:
    sim.settle()
    result = sim.result()
    assert result.ok, result.describe()
    return result


# -- random seeds --------------------------------------------------------------------------------

FAULTS = (
    "cuts", "cuts_mid_handshake", "cuts_mid_replay", "cuts_mid_frame", "resumes", "replayed",
    "late_writes", "superseded", "blocked", "sessions_lost", "intruders_rejected", "peer_silent",
)  # fmt: skip


def check_seeds(seeds: int) -> None:
    started = time.perf_counter()
    totals: dict[str, int] = {}
    failures = []
    for seed in range(seeds):
        result = Simulator(seed).run(STEPS)
        if not result.ok:
            failures.append(result)
        for name, value in vars(result).items():
            if isinstance(value, int) and name != "seed":
                totals[name] = totals.get(name, 0) + value
    elapsed = time.perf_counter() - started
    print(f"{seeds} seeds x {STEPS} steps in {elapsed:.1f} s: {totals}")
    assert not failures, f"{len(failures)} seeds failed; first:\n{failures[0].describe()}"
    # Every kind of fault really fired, many times over (at least once per ten seeds).
    for fault in FAULTS:
        assert totals[fault] >= seeds // 10, (fault, totals)
    assert totals["resumes"] >= totals["cuts"] // 2
    # Most messages arrived; the rest belonged to sessions that ended for good (expired TTL,
    # or a first handshake that never completed), which is all ``abandoned`` may hold.
    assert totals["delivered_c2s"] + totals["delivered_s2c"] > 40 * seeds
    sent = totals["sent_c2s"] + totals["sent_s2c"]
    assert totals["delivered_c2s"] + totals["delivered_s2c"] + totals["abandoned"] == sent


def test_seeds_lose_nothing():
    check_seeds(SEEDS)


@pytest.mark.slow
@pytest.mark.timeout(600)  # about a minute on 2 vCPUs
def test_ten_thousand_seeds_lose_nothing():
    check_seeds(10_000)


def test_a_run_reproduces_from_its_seed():
    first, again = Simulator(1234).run(STEPS), Simulator(1234).run(STEPS)
    assert first == again
    assert first.cuts and first.trace
    assert Simulator(1235).run(STEPS) != first


def test_a_broken_engine_is_caught(monkeypatch):
    # The check above can fail: a replay that forgets its oldest frame loses a message.
    def replay_all_but_the_oldest(self: Session) -> bytes:
        return b"".join(self.replay.frames()[1:])

    monkeypatch.setattr(engine.Session, "replay_frames", replay_all_but_the_oldest)
    results = [Simulator(seed).run(STEPS) for seed in range(50)]
    failing = [r for r in results if not r.ok]
    assert len(failing) > 25
    first = failing[0]
    assert first.unexpected == 1 and "gap" in first.trace[-1]  # the receiver saw the hole
    assert Simulator(first.seed).run(STEPS) == first  # and the seed alone replays it


def welcome_without_replay(self: SessionDriver, peer_last_received: int, resumed: bool) -> bytes:
    with self._lock:
        self.engine.attach(peer_last_received)
        return self.engine.welcome(resumed)


def publish_without_replay(original):
    def publish(self: Connection, att, replay=None) -> None:
        original(self, att, None)

    return publish


@pytest.mark.parametrize("broken", ["driver", "connection"])
def test_a_broken_session_layer_is_caught(monkeypatch, broken):
    # What runs is the shipped driver and connection, not a model of them: a server that
    # resumes without replaying, or a client whose publish forgets the replay, loses messages.
    if broken == "driver":
        monkeypatch.setattr(SessionDriver, "server_attach", welcome_without_replay)
    else:
        monkeypatch.setattr(Connection, "publish", publish_without_replay(Connection.publish))
    results = [Simulator(seed).run(STEPS) for seed in range(50)]
    failing = [r for r in results if not r.ok]
    assert len(failing) > 25, [r.describe() for r in results[:1]]
    first = failing[0]
    assert first.unexpected + first.lost >= 1
    assert Simulator(first.seed).run(STEPS) == first


def test_both_ways_of_reading_run():
    configs = []
    for seed in range(40):
        with Simulator(seed) as sim:
            configs.append(sim.config)
    assert any("client=spawned" in c for c in configs) and any("client=recv" in c for c in configs)
    for spawned in (False, True):
        result = Simulator(7, spawned=spawned).run(STEPS)
        assert result.ok and result.cuts, result.describe()


# -- scripted scenarios ------------------------------------------------------------------------


@pytest.mark.parametrize("spawned", [False, True])
def test_cut_in_the_middle_of_a_replay(spawned):
    sim = quiet(spawned=spawned)
    connect(sim)
    assert sim.client_send(3) == 3
    sim.deliver("c2s")  # the server has 1..3 (and acks nothing: ack_every is large)
    assert sim.server_send(2) == 2
    assert sim.cut(keep_c2s=0, keep_s2c=0)  # the server's two messages are lost in flight
    sim.notice_client()
    sim.notice_server()
    assert sim.client_send(2) == 2  # 4 and 5 wait in the replay buffer while detached

    assert sim.reconnect()
    sim.deliver("c2s")  # HELLO: the server answers WELCOME and replays its 1..2
    sim.deliver("s2c")  # WELCOME says the server has 1..3: the client replays only 4 and 5
    assert len(sim.client.replay) == 2
    sim.deliver("c2s", DATA + 10)  # 4 arrives, 5 is cut in half
    assert sim.cut(keep_c2s=0, keep_s2c=0)
    result = sim.result()
    assert (result.delivered_c2s, result.delivered_s2c, result.cuts_mid_replay) == (4, 2, 1)

    result = settled(sim)
    assert (result.sent_c2s, result.delivered_c2s, result.sent_s2c, result.delivered_s2c) == (5, 5, 2, 2)
    assert (result.cuts, result.cuts_mid_replay, result.resumes) == (2, 1, 2)
    # Replayed: the server's 1..2 and the client's 4..5 after the first cut, the client's 5
    # after the second (the server's 1..2 had arrived, so the HELLO trimmed them).
    assert result.replayed == 5
    assert sim.client.duplicates_dropped == 0 and sim.server_session.duplicates_dropped == 0


def test_a_cut_the_server_notices_late():
    sim = quiet()
    connect(sim)
    sim.client_send(2)
    sim.deliver("c2s")
    sim.server_send(1)
    assert sim.cut(keep_c2s=0, keep_s2c=0)
    sim.notice_client()  # only the client noticed
    assert sim.server_send(2) == 2  # into the dead connection
    assert sim.server_session.state is SessionState.ATTACHED
    sim.client_send(1)
    assert sim.reconnect()
    sim.deliver("c2s")  # the new HELLO finds the old connection still open on the server
    result = sim.result()
    assert (result.superseded, result.late_writes) == (1, 2)

    result = settled(sim)
    assert (result.delivered_c2s, result.delivered_s2c) == (3, 3)
    assert result.resumes == 1


def test_a_cut_the_client_notices_late():
    sim = quiet()
    connect(sim)
    sim.client_send(2)
    assert sim.cut(keep_c2s=DATA + 5, keep_s2c=0)  # the first frame and a piece of the second survive
    assert sim.in_flight("c2s") == DATA + 5
    sim.deliver("c2s")
    assert sim.result().delivered_c2s == 1
    assert sim.client_send(3) == 3  # written into the dead connection
    assert sim.notice_server() == 1
    assert sim.server_session.state is SessionState.DETACHED
    assert sim.client.state is SessionState.ATTACHED  # still believes
    result = sim.result()
    assert (result.late_writes, result.cuts_mid_frame) == (3, 1)
    result = settled(sim)
    assert (result.sent_c2s, result.delivered_c2s, result.replayed, result.resumes) == (5, 5, 4, 1)


def test_a_first_handshake_cut_before_its_welcome_starts_another_session():
    sim = quiet()
    sim.reconnect()
    sim.deliver("c2s")  # the server creates a session and answers WELCOME
    assert sim.client_send(2) == 0  # Clt.connect has not returned: nothing to send on yet
    first = sim.client
    assert sim.cut(keep_c2s=0, keep_s2c=0)
    assert sim.notice_client()  # Clt.connect fails, and the application connects again
    assert sim.client is not first and sim.client.key == wire.NO_KEY
    connect(sim)
    assert sim.client_send(2) == 2
    result = settled(sim)
    assert (result.sent_c2s, result.delivered_c2s, result.cuts_mid_handshake, result.resumes) == (2, 2, 1, 0)
    assert len(sim.registry) == 2  # the first one, never claimed, waits for its TTL


def test_a_stale_hello_arrives_after_a_newer_connection():
    sim = quiet()
    connect(sim)  # connection 1
    sim.cut(keep_c2s=0, keep_s2c=0)
    sim.notice_client()
    sim.reconnect()  # connection 2: its HELLO stays in flight
    sim.cut(keep_c2s=100, keep_s2c=0)
    sim.notice_client()
    sim.reconnect()  # connection 3
    sim.deliver("c2s", conn=3)  # supersedes connection 1
    sim.deliver("s2c")
    sim.client_send(2)
    sim.deliver("c2s", conn=3)
    sim.deliver("c2s", conn=2)  # the stale HELLO takes the session over to the dead connection 2
    result = sim.result()
    assert result.superseded == 2
    assert result.delivered_c2s == 2
    sim.client_send(1)
    result = settled(sim)
    assert (result.sent_c2s, result.delivered_c2s) == (3, 3)


def test_backpressure_with_a_tiny_replay_buffer():
    sim = quiet(max_messages=2)
    connect(sim)
    assert sim.client_send(5) == 2  # the third waits: nothing acknowledged yet
    assert sim.result().blocked == 1
    sim.deliver("c2s")
    assert sim.client_send(1) == 0  # delivered, but no ack came back yet
    sim.tick_server()
    sim.deliver("s2c")  # the ack frees the room
    assert len(sim.client.replay) == 0
    assert sim.client_send(5) == 2

    # Detached with a full buffer: still back-pressure, and the resume frees it.
    sim.cut(keep_c2s=0, keep_s2c=0)
    sim.notice_client()
    sim.notice_server()
    assert not sim.client.can_send()
    assert sim.client_send(1) == 0
    result = settled(sim)
    assert (result.sent_c2s, result.delivered_c2s, result.blocked) == (4, 4, 4)  # each refusal counted once
    assert sim.client.can_send()


def test_an_expired_session_is_lost_and_a_new_one_starts():
    sim = quiet(detached_ttl=1.0)
    connect(sim)
    old, old_server = sim.client, sim.server_session
    sim.client_send(2)
    sim.deliver("c2s")
    sim.server_send(1)
    sim.cut(keep_c2s=0, keep_s2c=0)
    sim.notice_client()
    sim.notice_server()
    sim.advance(1.5)  # longer than the TTL
    sim.reconnect()
    sim.deliver("c2s")  # the server has forgotten the key: REJECT
    sim.deliver("s2c")  # the client raises SessionLost, which the simulator expects here
    assert old.state is old_server.state is SessionState.LOST
    assert sim.client is not old and sim.client.key == wire.NO_KEY and sim.server_session is None
    result = sim.result()
    assert (result.sessions_lost, result.unexpected) == (1, 0)
    assert "c.SessionLost" in "\n".join(result.trace)

    assert sim.client_send(3) == 0  # the application has no connection until it connects again
    connect(sim)
    assert sim.client_send(3) == 3
    result = settled(sim)
    assert (result.sent_c2s, result.delivered_c2s, result.abandoned) == (5, 5, 1)  # the server's 1 message
    assert sim.server_session is not old_server and sim.server_session.state is SessionState.ATTACHED


def test_a_session_that_expires_in_its_own_hello_is_closed():
    sim = quiet(detached_ttl=1.0)
    connect(sim)
    sim.cut(keep_c2s=0, keep_s2c=0)
    sim.notice_client()
    sim.notice_server()
    sim.clock.advance(1.5)  # past the TTL, before the next expiry sweep (they run every TTL / 4)
    sim.reconnect()
    sim.deliver("c2s")  # the HELLO's own look at the registry expires the session: REJECT
    sim.deliver("s2c")
    result = settled(sim)
    assert result.sessions_lost == 1


def test_within_the_ttl_the_session_resumes():
    sim = quiet(detached_ttl=1.0)
    connect(sim)
    sim.server_send(1)
    sim.cut(keep_c2s=0, keep_s2c=0)
    sim.notice_client()
    sim.notice_server()
    sim.advance(0.9)
    sim.expire()
    result = settled(sim)
    assert (result.sessions_lost, result.resumes, result.delivered_s2c) == (0, 1, 1)


def test_random_resume_keys_are_rejected_and_change_nothing():
    sim = quiet()
    connect(sim)
    sim.client_send(2)
    sim.server_send(2)
    for _ in range(100):
        reject = sim.intrude()
        assert reject.reason == wire.RejectReason.UNKNOWN_KEY
    assert sim.intrude(key=sim.client.key, last_received=10**6).reason == wire.RejectReason.BAD_HELLO
    result = settled(sim)
    assert result.intruders_rejected == 101
    assert (result.delivered_c2s, result.delivered_s2c, result.cuts) == (2, 2, 0)


def test_silent_peers_are_dropped_by_the_dead_peer_check():
    sim = quiet(heartbeat_interval=0.05, dead_after=3)
    connect(sim)
    assert sim.client_send(2) == 2
    assert sim.cut(keep_c2s=0, keep_s2c=0)  # nobody is told: only the silence can tell
    sim.advance(0.2)  # past 3 intervals: both dead-peer checks fire on the timer
    assert sim.client.state is SessionState.DETACHED
    assert sim.server_session.state is SessionState.DETACHED
    result = sim.result()
    assert result.peer_silent == 2
    assert "session.peer_silent" in "\n".join(result.trace)
    result = settled(sim)
    assert (result.sent_c2s, result.delivered_c2s, result.resumes) == (2, 2, 1)


def test_heartbeats_carry_the_acks():
    sim = quiet(heartbeat_interval=0.05)
    connect(sim)
    assert sim.client_send(3) == 3
    sim.deliver("c2s")  # ack_every is large: no ack rides back on its own
    assert len(sim.client.replay) == 3
    sim.advance(0.05)  # the server's heartbeat is an ACK
    sim.deliver("s2c")
    assert len(sim.client.replay) == 0


def test_a_hello_that_never_comes_is_abandoned():
    sim = quiet(handshake_timeout=1.0)
    sim.reconnect()
    assert sim.cut(keep_c2s=0, keep_s2c=0)  # the HELLO is lost
    assert sim.in_flight("c2s") == 0
    sim.advance(1.5)  # the server's HelloReader gives up on the timer
    assert "session.abandoned" in "\n".join(sim.result().trace)
    assert sim.notice_server() == 0  # it closed that connection already
    result = settled(sim)
    assert (result.connections, result.cuts_mid_handshake) == (2, 1)
    assert len(sim.registry) == 1
