"""SoupBinTCP on the wire: every packet against hand-written bytes, framing fed whole, byte by
byte and in random splits, and the decoder refusing what a peer must not send."""

from __future__ import annotations

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import links
from links.soupbintcp import (
    ClientHeartbeat,
    CltProtocol,
    Debug,
    EndOfSession,
    LoginAccepted,
    LoginRejected,
    LoginRequest,
    LogoutRequest,
    SequencedData,
    ServerHeartbeat,
    SoupBinTcpMessenger,
    State,
    SvcProtocol,
    UnsequencedData,
    decode_packet,
    encode_packet,
)  # fmt: skip

FRAMER = CltProtocol(username="u", password="p").framer

# (packet, whole frame): length (2 bytes, big endian, counting type + body), type, body.
SERVER_TO_CLIENT = [
    (Debug("hi"), b"\x00\x03+hi"),
    (LoginAccepted("DAY1", 42), b"\x00\x1fA" + b"DAY1      " + b"                  42"),
    (LoginRejected("A"), b"\x00\x02JA"),
    (LoginRejected("S"), b"\x00\x02JS"),
    (SequencedData(b"abc"), b"\x00\x04Sabc"),
    (SequencedData(b""), b"\x00\x01S"),
    (ServerHeartbeat(), b"\x00\x01H"),
    (EndOfSession(), b"\x00\x01Z"),
]
CLIENT_TO_SERVER = [
    (Debug(""), b"\x00\x01+"),
    (LoginRequest("user", "secret", "DAY1", 7),
     b"\x00\x2fL" + b"user  " + b"secret    " + b"DAY1      " + b"                   7"),
    (LoginRequest("abcdef", "0123456789", "", 0),
     b"\x00\x2fL" + b"abcdef" + b"0123456789" + b"          " + b"                   0"),
    (UnsequencedData(b"xyz"), b"\x00\x04Uxyz"),
    (ClientHeartbeat(), b"\x00\x01R"),
    (LogoutRequest(), b"\x00\x01O"),
]  # fmt: skip
ALL = SERVER_TO_CLIENT + CLIENT_TO_SERVER


def frame(packet, side, **kwargs) -> bytes:
    return FRAMER.encode(SoupBinTcpMessenger(side, **kwargs).serialize(packet))


@pytest.mark.parametrize(("packet", "wire"), SERVER_TO_CLIENT, ids=lambda v: repr(v)[:30])
def test_server_packets_encode_to_the_spec_bytes(packet, wire):
    assert frame(packet, "server") == wire


@pytest.mark.parametrize(("packet", "wire"), CLIENT_TO_SERVER, ids=lambda v: repr(v)[:30])
def test_client_packets_encode_to_the_spec_bytes(packet, wire):
    assert frame(packet, "client") == wire


@pytest.mark.parametrize(("packet", "wire"), ALL, ids=lambda v: repr(v)[:30])
def test_spec_bytes_decode_to_the_packet(packet, wire):
    assert FRAMER.frame_length(wire, 0, len(wire)) == len(wire)
    decoded = decode_packet(FRAMER.payload(memoryview(wire)))
    assert decoded == packet
    assert type(decoded) is type(packet)


def test_right_justified_alpha_fields_on_request():
    wire = frame(LoginRequest("user", "secret", "DAY1", 7), "client", justify="right")
    assert wire == b"\x00\x2fL" + b"  user" + b"    secret" + b"      DAY1" + b"                   7"
    assert frame(LoginAccepted("DAY1", 1), "server", justify="right") == b"\x00\x1fA      DAY1" + b" " * 19 + b"1"


def test_reading_strips_alpha_on_both_sides_and_accepts_zero_padded_numbers():
    body = b"L" + b" user " + b"  secret  " + b"   DAY1   " + b"00000000000000000042"
    assert decode_packet(body) == LoginRequest("user", "secret", "DAY1", 42)


def test_login_request_repr_hides_the_password():
    assert "secret" not in repr(LoginRequest("user", "secret"))


def test_sequence_number_is_not_part_of_equality_or_the_wire():
    assert SequencedData(b"x") == SequencedData(b"x", sequence=7)
    assert frame(SequencedData(b"x", sequence=7), "server") == b"\x00\x02Sx"


def test_payload_messenger_carries_objects_inside_data_packets():
    json = links.JsonMessenger()
    assert frame(UnsequencedData({"a": 1}), "client", payload_messenger=json) == b'\x00\x08U{"a":1}'
    assert decode_packet(b'S[1,"x"]', payload_messenger=json) == SequencedData([1, "x"])


@pytest.mark.parametrize(
    ("body", "complaint"),
    [
        (b"", "empty packet"),
        (b"X", "unknown packet type 'X'"),
        (b"\x00abc", "unknown packet type 0x00"),
        (b"Hx", "'H' (ServerHeartbeat) must carry 0 bytes"),
        (b"Z\x00", "'Z' (EndOfSession) must carry 0 bytes"),
        (b"JAS", "'J' (LoginRejected) must carry 1 bytes"),
        (b"A" + b" " * 29, "'A' (LoginAccepted) must carry 30 bytes"),
        (b"L" + b" " * 45, "'L' (LoginRequest) must carry 46 bytes"),
        (b"A" + b"DAY1      " + b" " * 17 + b"12a", "sequence field is not a number"),
        (b"A" + b"DAY1      " + b" " * 18 + b"-1", "sequence field is not a number"),
        (b"A" + b"DAY1      " + b" " * 20, "sequence field is not a number"),
        (b"L" + "usér".encode("latin-1").ljust(6) + b" " * 20 + b" " * 19 + b"0", "username field is not ASCII"),
    ],
)
def test_malformed_packets_are_decode_errors_that_say_why(body, complaint):
    with pytest.raises(links.DecodeError, match=re.escape(complaint)):
        decode_packet(body)


@pytest.mark.parametrize(
    ("packet", "error"),
    [
        (LoginRequest("toolong", "p"), "username is at most 6"),
        (LoginRequest("u", "p" * 11), "password is at most 10"),
        (LoginRequest("u", "p", "s" * 11), "session is at most 10"),
        (LoginRequest("ü", "p"), "username must be ASCII"),
        (LoginRequest("u", "p", "", -1), "sequence must be"),
        (LoginAccepted("DAY1", 10**20), "sequence must be"),
        (LoginRejected("AS"), "reason is one character"),
    ],
)
def test_packets_that_do_not_fit_the_wire_are_refused_before_sending(packet, error):
    with pytest.raises(ValueError, match=error):
        encode_packet(packet)


def test_data_payload_must_be_bytes_without_a_payload_messenger():
    with pytest.raises(TypeError, match="payload must be bytes"):
        encode_packet(UnsequencedData("text"))


def test_each_side_sends_only_its_own_packets():
    with pytest.raises(TypeError, match="client does not send SequencedData"):
        SoupBinTcpMessenger("client").serialize(SequencedData(b"x"))
    with pytest.raises(TypeError, match="server does not send LoginRequest"):
        SoupBinTcpMessenger("server").serialize(LoginRequest("u", "p"))


def test_each_side_refuses_the_packets_of_its_own_direction():
    with pytest.raises(links.DecodeError, match="client does not send 'A' \\(LoginAccepted\\)"):
        SoupBinTcpMessenger("server").deserialize(b"A" + b" " * 10 + b" " * 19 + b"1")
    with pytest.raises(links.DecodeError, match="server does not send 'U'"):
        SoupBinTcpMessenger("client").deserialize(b"Ux")


def test_the_state_decides_what_may_arrive():
    server = SoupBinTcpMessenger("server")
    with pytest.raises(links.DecodeError, match="'U' \\(UnsequencedData\\) is not allowed while logging in"):
        server.deserialize(b"Ux")
    assert server.deserialize(b"R") == ClientHeartbeat()  # harmless before login
    server.enter(State.LOGGED_IN)
    assert server.deserialize(b"Ux") == UnsequencedData(b"x")
    with pytest.raises(links.DecodeError, match="'L' \\(LoginRequest\\) is not allowed while logged in"):
        server.deserialize(b"L" + b" " * 45 + b"0")
    server.enter(State.ENDED)
    with pytest.raises(links.DecodeError, match="not allowed while ended"):
        server.deserialize(b"R")


def test_client_numbers_sequenced_data_from_login_accepted():
    client = SoupBinTcpMessenger("client")
    with pytest.raises(links.DecodeError, match="'S' \\(SequencedData\\) is not allowed while logging in"):
        client.deserialize(b"Sx")
    assert client.deserialize(b"A" + b"DAY1      " + b" " * 19 + b"5") == LoginAccepted("DAY1", 5)
    client.enter(State.LOGGED_IN)
    got = [client.deserialize(b"S" + bytes([c])) for c in b"abc"]
    assert [(m.payload, m.sequence) for m in got] == [(b"a", 5), (b"b", 6), (b"c", 7)]
    assert client.next_sequence == 8


# -- framing: the stream cut anywhere -----------------------------------------------------------


class AnyPacket(links.Protocol):
    """The SoupBinTCP framer with the stateless decoder, to check framing of every packet type."""

    framer = FRAMER

    class messenger(links.Messenger):
        @staticmethod
        def deserialize(payload):
            return decode_packet(payload)

    messenger = messenger()


STREAM = b"".join(wire for _, wire in ALL)
PACKETS = [packet for packet, _ in ALL]


def feed(chunks: list[bytes]) -> list:
    link = links.Link(AnyPacket())
    out = []
    for chunk in chunks:
        link.receive_data(chunk)
        while (msg := link.next_message()) is not links.NEED_DATA:
            out.append(msg)
    return out


def test_framing_whole_stream():
    assert feed([STREAM]) == PACKETS


def test_framing_byte_by_byte():
    assert feed([STREAM[i : i + 1] for i in range(len(STREAM))]) == PACKETS


def test_framing_keeps_trailing_partial_frame_for_later():
    link = links.Link(AnyPacket())
    link.receive_data(b"\x00\x04Sab")
    assert link.next_message() is links.NEED_DATA
    link.receive_data(b"c\x00\x01H\x00")
    assert link.next_message() == SequencedData(b"abc")
    assert link.next_message() == ServerHeartbeat()
    assert link.next_message() is links.NEED_DATA


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(min_value=0, max_value=len(STREAM)), max_size=40))
def test_framing_random_splits(cuts):
    edges = [0, *sorted(cuts), len(STREAM)]
    assert feed([STREAM[a:b] for a, b in zip(edges, edges[1:])]) == PACKETS


def test_oversize_length_is_refused_by_the_configured_framer():
    framer = SvcProtocol(username="u", password="p", max_frame_size=100).framer
    with pytest.raises(links.FrameTooLarge):
        framer.frame_length(b"\xff\xffU", 0, 3)


def test_client_configuration_remembers_where_to_resume_across_connections():
    config = CltProtocol(username="u", password="p", sequence=3)
    assert config.next_sequence is None
    first = config()
    first.messenger.deserialize(b"A" + b"DAY1      " + b"3".rjust(20))
    first.messenger.enter(State.LOGGED_IN)
    first.messenger.deserialize(b"Sx")
    assert config.next_sequence == 4
    config()  # a redial that never logs in must not lose the place
    assert config.next_sequence == 4
