"""The Sans-I/O session engine: its wire format, replay buffer, ``Session`` and ``ServerSessions``.

No sockets here: frames go from one engine to the other by hand. The last test is a
hypothesis state machine that drives a client and a server through random sends, partial
deliveries, cuts, reconnects and acks, and checks after every step that each side received
exactly 1..k in order.
"""

from __future__ import annotations

import math
import secrets

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from links import DecodeError, ProtocolError, ReceiveBuffer
from links.session import ReplayBuffer, ServerSessions, Session, SessionLost, SessionRejected, SessionState
from links.session import _wire as wire

KEY = bytes(range(16))


def u64(n: int) -> bytes:
    return n.to_bytes(8, "big")


def view(frame: bytes) -> memoryview:
    return memoryview(frame)


# -- the wire format ----------------------------------------------------------------------------

HELLO = b"\x00\x00\x00\x1a" + b"\x01" + b"\x01" + KEY + u64(7)
WELCOME = b"\x00\x00\x00\x1a" + b"\x02" + b"\x01" + KEY + u64(9)
REJECT = b"\x00\x00\x00\x06" + b"\x03" + b"\x01" + b"gone"
DATA = b"\x00\x00\x00\x13" + b"\x04" + u64(5) + u64(3) + b"hi"
ACK = b"\x00\x00\x00\x09" + b"\x05" + u64(2**64 - 1)


def test_each_frame_kind_encodes_to_its_documented_bytes():
    assert wire.encode_hello(KEY, 7) == HELLO
    assert wire.encode_welcome(True, KEY, 9) == WELCOME
    assert wire.encode_reject(wire.RejectReason.UNKNOWN_KEY, "gone") == REJECT
    assert wire.encode_data(5, 3, b"hi") == DATA
    assert wire.encode_ack(2**64 - 1) == ACK


def test_each_frame_kind_decodes_from_hand_written_bytes():
    assert wire.decode(view(HELLO)) == wire.Hello(1, KEY, 7)
    assert wire.decode(view(WELCOME)) == wire.Welcome(True, KEY, 9)
    assert wire.decode(view(REJECT)) == wire.Reject(wire.RejectReason.UNKNOWN_KEY, "gone")
    data = wire.decode(view(DATA))
    assert isinstance(data, wire.Data) and (data.seq, data.ack, bytes(data.payload)) == (5, 3, b"hi")
    assert wire.decode(view(ACK)) == wire.Ack(2**64 - 1)
    # Edge shapes that are still valid: an empty payload, an empty and a non-UTF-8 reason.
    empty = wire.decode(view(wire.encode_data(1, 0, b"")))
    assert isinstance(empty, wire.Data) and bytes(empty.payload) == b""
    assert wire.decode(view(wire.encode_reject(2, ""))) == wire.Reject(2, "")
    assert wire.decode(view(b"\x00\x00\x00\x03\x03\x02\xff")) == wire.Reject(2, "\ufffd")


@pytest.mark.parametrize(
    "frame",
    [
        b"",
        b"\x00\x00\x00",
        b"\x00\x00\x00\x00",  # a length prefix and no kind
        b"\x00\x00\x00\x01\x00",  # kind 0
        b"\x00\x00\x00\x01\x06",  # kind 6
        b"\x00\x00\x00\x01\xff",
        HELLO[:-1],
        HELLO + b"\x00",
        WELCOME[:-1],
        WELCOME + b"\x00",
        ACK[:-1],
        ACK + b"\x00",
        DATA[:20],  # shorter than the DATA header
        REJECT[:5],  # no reason byte
        b"\x00\x00\x00\x0c\x04" + b"\x00" * 11,
        secrets.token_bytes(3),
    ],
    ids=lambda f: f.hex()[:24] or "empty",
)
def test_garbage_and_wrong_sizes_raise_decode_error(frame):
    with pytest.raises(DecodeError):
        wire.decode(view(frame))


def test_frames_are_cut_from_a_byte_stream_fed_one_byte_at_a_time():
    stream = HELLO + DATA + ACK + REJECT + WELCOME
    buf, frames = ReceiveBuffer(capacity=16, read_size=8), []
    for i in range(len(stream)):
        buf.feed(stream[i : i + 1])
        frame = buf.next_frame(wire.FRAMER)
        if frame is not None:
            frames.append(bytes(frame))
    assert frames == [HELLO, DATA, ACK, REJECT, WELCOME]


# -- ReplayBuffer --------------------------------------------------------------------------------


def test_replay_buffer_is_bounded_by_messages():
    replay = ReplayBuffer(max_messages=2, max_bytes=1 << 20)
    replay.append(1, b"a")
    assert not replay.full
    replay.append(2, b"b")
    assert replay.full and len(replay) == 2


def test_replay_buffer_is_bounded_by_bytes():
    replay = ReplayBuffer(max_messages=100, max_bytes=10)
    replay.append(1, b"x" * 6)
    assert not replay.full
    replay.append(2, b"y" * 4)
    assert replay.full and replay.nbytes == 10


def test_replay_buffer_trim_forgets_exactly_what_the_ack_covers():
    replay = ReplayBuffer(max_messages=3, max_bytes=1 << 20)
    for seq in (1, 2, 3):
        replay.append(seq, bytes([seq]) * seq)
    assert replay.full
    assert replay.trim(0) == 0
    assert replay.trim(2) == 2
    assert replay.frames() == [b"\x03\x03\x03"] and replay.nbytes == 3 and not replay.full
    assert replay.trim(2) == 0  # an old ack again changes nothing
    assert replay.trim(10) == 1
    assert replay.frames() == [] and replay.nbytes == 0


# -- Session -------------------------------------------------------------------------------------


def pair(**args: int) -> tuple[Session, Session, ServerSessions]:
    """A client and a server session after a handshake on a first connection."""
    client, registry = Session(**args), ServerSessions(**args)
    server, owner, resumed, peer_last = registry.on_hello(view(client.start_client()), 0.0)
    assert (owner, resumed, peer_last) == (None, False, 0)
    server.attach(peer_last)
    assert client.receive(view(server.welcome(resumed))) is None
    assert client.state is server.state is SessionState.ATTACHED
    assert client.key == server.key != wire.NO_KEY
    return client, server, registry


def test_a_duplicate_is_dropped():
    client, server, _ = pair()
    frame = server.wrap(b"once")
    assert bytes(client.receive(view(frame))) == b"once"
    assert client.receive(view(frame)) is None
    assert client.duplicates_dropped == 1 and client.last_received == 1


def test_a_gap_is_a_protocol_error():
    client, server, _ = pair()
    server.wrap(b"1")
    second = server.wrap(b"2")
    with pytest.raises(ProtocolError, match="gap"):
        client.receive(view(second))


def test_an_ack_beyond_what_was_sent_is_a_protocol_error():
    client, server, _ = pair()
    client.wrap(b"1")
    with pytest.raises(ProtocolError, match="acknowledged frame 2"):
        server.receive(view(wire.encode_ack(2)))
    with pytest.raises(ProtocolError, match="acknowledged frame 5"):
        server.receive(view(wire.encode_data(1, 5, b"x")))


def test_acks_trim_the_replay_buffer_and_free_room():
    client, server, _ = pair(max_messages=2)
    frames = [client.wrap(b"a"), client.wrap(b"b")]
    assert not client.can_send()
    for frame in frames:
        server.receive(view(frame))
    client.receive(view(server.tick()))
    assert len(client.replay) == 0 and client.peer_acked == 2 and client.can_send()


def test_a_standalone_ack_comes_every_ack_every_frames():
    client, server, _ = pair(ack_every=3)
    outputs = []
    for i in range(6):
        server.receive(view(client.wrap(b"%d" % i)))
        outputs.append(server.take_output())
    assert outputs == [b"", b"", wire.encode_ack(3), b"", b"", wire.encode_ack(6)]


def test_data_carries_the_ack_so_no_standalone_ack_follows():
    client, server, _ = pair(ack_every=1)
    server.receive(view(client.wrap(b"ping")))
    reply = server.wrap(b"pong")  # acknowledges the ping
    assert server.take_output() == b""
    client.receive(view(reply))
    assert len(client.replay) == 0


def test_frames_of_the_wrong_kind_for_the_state_are_protocol_errors():
    client, server, _ = pair()
    with pytest.raises(ProtocolError, match="unexpected Hello"):
        server.receive(view(wire.encode_hello(KEY, 0)))
    fresh = Session()
    fresh.start_client()
    with pytest.raises(ProtocolError, match="unexpected Data while handshaking"):
        fresh.receive(view(wire.encode_data(1, 0, b"x")))
    client.detach(1.0)
    with pytest.raises(ProtocolError, match="unexpected Welcome while detached"):
        client.receive(view(server.welcome(True)))


def test_frames_read_off_a_given_up_connection_after_the_detach_are_dropped():
    # Issue 15, item 7: a reader thread took them from its buffer while another thread detached
    # the session (a failed write, the dead-peer check): not a protocol violation by the peer.
    client, server, _ = pair()
    client.detach(1.0)
    server_frame = server.wrap(b"late")
    assert client.receive(view(server_frame)) is None
    assert client.receive(view(wire.encode_ack(0))) is None
    assert client.last_received == 0 and client.late_frames_dropped == 2
    # The DATA was not acknowledged, so it comes again on the resume, and is delivered then.
    server.detach(1.0)
    server.attach(client.last_received)
    client.start_client()
    client.receive(view(server.welcome(True)))
    replay = server.replay_frames()
    assert replay == server_frame  # the one DATA the client dropped
    assert bytes(client.receive(view(replay))) == b"late"


def test_attach_refuses_a_peer_that_claims_frames_never_sent():
    client, _, _ = pair()
    client.wrap(b"1")
    client.detach(0.0)
    with pytest.raises(ProtocolError, match="claims to have frame 2"):
        client.attach(2)


def test_a_reject_loses_the_session_for_good():
    client, _, _ = pair()
    client.wrap(b"pending")
    client.detach(0.0)
    client.start_client()
    with pytest.raises(SessionLost, match="unknown_key"):
        client.receive(view(wire.encode_reject(wire.RejectReason.UNKNOWN_KEY, "expired")))
    assert client.state is SessionState.LOST and not client.can_send()
    with pytest.raises(SessionLost):
        client.start_client()
    with pytest.raises(SessionLost):
        client.wrap(b"more")


def test_a_welcome_for_another_session_loses_it():
    client, _, _ = pair()
    client.detach(0.0)
    client.start_client()
    with pytest.raises(SessionLost, match="different session"):
        client.receive(view(wire.encode_welcome(True, secrets.token_bytes(16), 0)))


def test_a_resume_replays_exactly_what_each_side_missed():
    client, server, registry = pair()
    for i in (1, 2, 3):
        server.receive(view(client.wrap(b"c%d" % i)))  # all three arrive, none acknowledged
    lost_in_cut = [server.wrap(b"s1"), server.wrap(b"s2")]
    client.detach(1.0)
    server.detach(1.0)
    client.wrap(b"c4")  # while detached: waits for the next connection

    hello = client.start_client()
    session, owner, resumed, peer_last = registry.on_hello(view(hello), 2.0)
    assert (session, resumed, peer_last) == (server, True, 0)
    server.attach(peer_last)
    assert server.replay_frames() == b"".join(lost_in_cut)
    client.receive(view(server.welcome(resumed)))
    assert client.resumes == 1 and server.resumes == 1
    assert client.replay_frames() == wire.encode_data(4, 0, b"c4")  # 1..3 were trimmed by the WELCOME


# -- ServerSessions ------------------------------------------------------------------------------


def test_a_thousand_random_resume_keys_are_all_rejected():
    client, server, registry = pair()
    accepted = 0
    for _ in range(1000):
        try:
            registry.on_hello(view(wire.encode_hello(secrets.token_bytes(16), 0)), 1.0)
            accepted += 1
        except SessionRejected as e:
            assert wire.decode(view(e.reply)).reason == wire.RejectReason.UNKNOWN_KEY
    assert accepted == 0
    assert len(registry) == 1 and server.resumes == 0 and server.state is SessionState.ATTACHED


def test_a_detached_session_expires_after_the_ttl():
    registry, client = ServerSessions(detached_ttl=5.0), Session()
    server, _, _, _ = registry.on_hello(view(client.start_client()), 0.0)
    server.attach(0)
    client.receive(view(server.welcome(False)))
    registry.set_owner(server, "connection 1")
    server.detach(10.0)
    assert registry.expire(14.999) == [] and len(registry) == 1
    assert registry.expire(15.0) == ["connection 1"]
    assert len(registry) == 0 and server.state is SessionState.LOST
    client.detach(15.0)
    with pytest.raises(SessionRejected) as info:
        registry.on_hello(view(client.start_client()), 15.0)
    assert wire.decode(view(info.value.reply)).reason == wire.RejectReason.UNKNOWN_KEY


def test_on_hello_expires_before_it_looks_up_the_key():
    client, server, registry = pair()
    registry.detached_ttl = 1.0
    server.detach(0.0)
    client.detach(0.0)
    with pytest.raises(SessionRejected, match="unknown or expired"):
        registry.on_hello(view(client.start_client()), 1.0)


def test_an_attached_session_never_expires():
    _, server, registry = pair()
    registry.detached_ttl = 1.0
    assert registry.expire(1e9) == [] and server.state is SessionState.ATTACHED


def test_a_resume_claiming_frames_never_sent_is_rejected():
    client, server, registry = pair()
    server.wrap(b"1")
    with pytest.raises(SessionRejected, match="never sent") as info:
        registry.on_hello(view(wire.encode_hello(client.key, 2)), 1.0)
    assert wire.decode(view(info.value.reply)).reason == wire.RejectReason.BAD_HELLO
    assert server.resumes == 0 and len(server.replay) == 1


def test_a_new_session_that_claims_received_frames_is_rejected():
    registry = ServerSessions()
    with pytest.raises(SessionRejected, match="claims received frames"):
        registry.on_hello(view(wire.encode_hello(wire.NO_KEY, 1)), 0.0)
    assert len(registry) == 0


def test_a_first_frame_that_is_not_a_hello_is_rejected():
    registry = ServerSessions()
    for frame in (ACK, DATA, WELCOME, wire.encode_hello(wire.NO_KEY, 0)[:5] + b"\x02" + bytes(24)):
        with pytest.raises(SessionRejected, match="expected HELLO") as info:
            registry.on_hello(view(frame), 0.0)
        assert wire.decode(view(info.value.reply)).reason == wire.RejectReason.BAD_HELLO
    with pytest.raises(DecodeError):
        registry.on_hello(view(b"\x00\x00\x00\x01\x09"), 0.0)
    assert len(registry) == 0


def test_a_forgotten_session_cannot_be_resumed():
    client, server, registry = pair()
    registry.forget(server)
    assert server.state is SessionState.LOST and len(registry) == 0
    client.detach(0.0)
    with pytest.raises(SessionRejected, match="unknown"):
        registry.on_hello(view(client.start_client()), 0.0)


def test_resume_returns_the_previous_owner_and_new_keys_are_distinct():
    client, server, registry = pair()
    registry.set_owner(server, "old connection")
    client.detach(0.0)
    session, owner, resumed, _ = registry.on_hello(view(client.start_client()), 0.0)
    assert (session, owner, resumed) == (server, "old connection", True)
    keys = {registry.on_hello(view(Session().start_client()), 0.0)[0].key for _ in range(100)}
    assert len(keys) == 100 and all(len(k) == wire.KEY_SIZE for k in keys)


# -- the state machine under random schedules ----------------------------------------------------


class SessionPair(RuleBasedStateMachine):
    """A client and a server engine joined by one connection at a time.

    Each write is a chunk in flight; ``deliver_some`` hands the receiver the oldest chunks,
    a cut loses whatever is still in flight and both sides detach. The application payload is
    a counter, so each side's received list must always be exactly 1..k.
    """

    ARGS = {"max_messages": 4, "max_bytes": 1 << 20, "ack_every": 3}

    def __init__(self) -> None:
        super().__init__()
        self.now = 0.0
        self.client = Session(**self.ARGS)
        self.registry = ServerSessions(detached_ttl=math.inf, **self.ARGS)
        self.server: Session | None = None
        self.up = False  # a connection exists
        self.hello_read = False  # the server has read this connection's HELLO
        self.pipes: dict[str, list[bytes]] = {"c2s": [], "s2c": []}
        self.rx = {"c2s": ReceiveBuffer(256, 64), "s2c": ReceiveBuffer(256, 64)}
        self.sent = {"c2s": 0, "s2c": 0}
        self.got: dict[str, list[int]] = {"c2s": [], "s2c": []}

    def _write(self, direction: str, data: bytes) -> None:
        if self.up and data:
            self.pipes[direction].append(data)

    @rule(count=st.integers(1, 4))
    def send_c2s(self, count: int) -> None:
        for _ in range(count):
            if not self.client.can_send():  # back-pressure: the sender waits
                break
            self.sent["c2s"] += 1
            frame = self.client.wrap(u64(self.sent["c2s"]))
            if self.client.state is SessionState.ATTACHED:
                self._write("c2s", frame)

    @rule(count=st.integers(1, 4))
    def send_s2c(self, count: int) -> None:
        for _ in range(count):
            if self.server is None or not self.server.can_send():
                break
            self.sent["s2c"] += 1
            frame = self.server.wrap(u64(self.sent["s2c"]))
            if self.hello_read and self.server.state is SessionState.ATTACHED:
                self._write("s2c", frame)

    @rule(direction=st.sampled_from(["c2s", "s2c"]), count=st.integers(1, 4))
    def deliver_some(self, direction: str, count: int) -> None:
        pipe = self.pipes[direction]
        chunks, pipe[:] = pipe[:count], pipe[count:]
        for chunk in chunks:
            self.rx[direction].feed(chunk)
            while (frame := self.rx[direction].next_frame(wire.FRAMER)) is not None:
                (self._server_reads if direction == "c2s" else self._client_reads)(frame)

    def _server_reads(self, frame: memoryview) -> None:
        if not self.hello_read:
            session, _, resumed, peer_last = self.registry.on_hello(frame, self.now)
            if session is not self.server:
                # A new session: the first, or another because no WELCOME reached the client
                # yet. What the server sent on the one the client never learned of is gone.
                assert not resumed and self.client.key == wire.NO_KEY and not self.got["s2c"]
                self.sent["s2c"] = 0
            self.server, self.hello_read = session, True
            session.attach(peer_last)
            self._write("s2c", session.welcome(resumed) + session.replay_frames())
            return
        assert self.server is not None
        payload = self.server.receive(frame)
        if payload is not None:
            self.got["c2s"].append(int.from_bytes(payload, "big"))
        self._write("s2c", self.server.take_output())

    def _client_reads(self, frame: memoryview) -> None:
        handshaking = self.client.state is SessionState.HANDSHAKING
        payload = self.client.receive(frame)
        if payload is not None:
            self.got["s2c"].append(int.from_bytes(payload, "big"))
        elif handshaking:
            assert self.client.state is SessionState.ATTACHED
            self._write("c2s", self.client.replay_frames())
        self._write("c2s", self.client.take_output())

    @precondition(lambda self: self.up)
    @rule()
    def cut(self) -> None:
        self.up = False
        self.pipes = {"c2s": [], "s2c": []}
        self.now += 1.0
        self.client.detach(self.now)
        if self.hello_read and self.server is not None:
            self.server.detach(self.now)

    @precondition(lambda self: not self.up)
    @rule()
    def reconnect(self) -> None:
        self.up, self.hello_read = True, False
        self.rx = {"c2s": ReceiveBuffer(256, 64), "s2c": ReceiveBuffer(256, 64)}
        self._write("c2s", self.client.start_client())

    @rule(side=st.sampled_from(["client", "server"]))
    def tick(self, side: str) -> None:
        if side == "client":
            self._write("c2s", self.client.tick())
        elif self.server is not None and self.hello_read:
            self._write("s2c", self.server.tick())

    @rule()
    def heal(self) -> None:
        """Reconnect if needed and let everything through: then nothing may be missing."""
        if not self.up:
            self.reconnect()
        for _ in range(3):  # deliver, ack, deliver the acks
            while self.pipes["c2s"] or self.pipes["s2c"]:
                self.deliver_some("c2s", 100)
                self.deliver_some("s2c", 100)
            self.tick("client")
            self.tick("server")
        assert self.got["c2s"] == list(range(1, self.sent["c2s"] + 1))
        assert self.got["s2c"] == list(range(1, self.sent["s2c"] + 1))
        assert self.server is not None
        assert len(self.client.replay) == len(self.server.replay) == 0

    @invariant()
    def each_side_received_one_to_k_in_order(self) -> None:
        for direction in ("c2s", "s2c"):
            got = self.got[direction]
            assert got == list(range(1, len(got) + 1))
            assert len(got) <= self.sent[direction]


SessionPair.TestCase.settings = settings(max_examples=200, deadline=None, derandomize=True, stateful_step_count=50)
test_session_pair_state_machine = SessionPair.TestCase
