"""The session engine over the simulated network: 10,000 random seeds, then exact scenarios.

Every randomized check names its seed; ``Simulator(seed).run(STEPS).describe()`` replays a
failure with its trace. Every test also asserts that its faults really fired.
"""

from __future__ import annotations

import math
import time

from links.session import Session, SessionState
from links.session import _engine as engine
from links.session import _wire as wire
from links.testing import SimResult, Simulator

SEEDS = 10_000
STEPS = 300

DATA = len(wire.encode_data(1, 0, bytes(12)))  # the size of one simulated message's frame
WELCOME = len(wire.encode_welcome(False, wire.NO_KEY, 0))


def quiet(**kw) -> Simulator:
    """A simulator for a scripted scenario: no TTL, no intruders, large buffers unless asked."""
    kw.setdefault("max_messages", 64)
    kw.setdefault("max_bytes", 1 << 20)
    kw.setdefault("ack_every", 1000)
    kw.setdefault("detached_ttl", math.inf)
    return Simulator(0, intruders=False, **kw)


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


# -- 10,000 seeds ------------------------------------------------------------------------------


def test_ten_thousand_seeds_lose_nothing():
    started = time.perf_counter()
    totals: dict[str, int] = {}
    failures = []
    for seed in range(SEEDS):
        result = Simulator(seed).run(STEPS)
        if not result.ok:
            failures.append(result)
        for name, value in vars(result).items():
            if isinstance(value, int) and name != "seed":
                totals[name] = totals.get(name, 0) + value
    elapsed = time.perf_counter() - started
    print(f"{SEEDS} seeds x {STEPS} steps in {elapsed:.1f} s: {totals}")
    assert not failures, f"{len(failures)} seeds failed; first:\n{failures[0].describe()}"
    # Every kind of fault really fired, many times over.
    for fault in (
        "cuts", "cuts_mid_handshake", "cuts_mid_replay", "cuts_mid_frame", "resumes", "replayed",
        "late_writes", "superseded", "blocked", "sessions_lost", "intruders_rejected",
    ):  # fmt: skip
        assert totals[fault] >= 1000, (fault, totals)
    assert totals["resumes"] >= totals["cuts"] // 2
    # Most messages arrived; the rest belonged to sessions that ended for good (expired TTL,
    # or a first handshake that never completed), which is all ``abandoned`` may hold.
    assert totals["delivered_c2s"] + totals["delivered_s2c"] > 400_000
    sent = totals["sent_c2s"] + totals["sent_s2c"]
    assert totals["delivered_c2s"] + totals["delivered_s2c"] + totals["abandoned"] == sent


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


# -- scripted scenarios ------------------------------------------------------------------------


def test_cut_in_the_middle_of_a_replay():
    sim = quiet()
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
    assert sim.client_send(2) == 2  # no WELCOME yet: both wait in the replay buffer
    assert sim.cut(keep_c2s=0, keep_s2c=0)
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

    sim.client_send(3)
    result = settled(sim)
    assert (result.sent_c2s, result.delivered_c2s, result.abandoned) == (5, 5, 1)  # the server's 1 message
    assert sim.server_session is not old_server and sim.server_session.state is SessionState.ATTACHED


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
