"""Messengers on their own and through ``Link``: round trips, hostile bytes, ``on_send`` stamping."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import links


def drain(link: links.Link) -> list:
    out = []
    while (msg := link.next_message()) is not links.NEED_DATA:
        out.append(msg)
    return out


class Json(links.Protocol):
    framer = links.LengthPrefixFramer(2)
    messenger = links.JsonMessenger()


# -- RawMessenger ---------------------------------------------------------------------------


@pytest.mark.parametrize("msg", [b"", b"abc", bytearray(b"\x00\xff"), memoryview(b"view")])
def test_raw_round_trip(msg):
    m = links.RawMessenger()
    out = m.deserialize(memoryview(bytes(m.serialize(msg))))
    assert out == bytes(msg)
    assert type(out) is bytes  # a copy: the frame view it came from is reused


@pytest.mark.parametrize("msg", ["text", 42, None, {"a": 1}])
def test_raw_refuses_non_bytes(msg):
    with pytest.raises(TypeError):
        links.RawMessenger().serialize(msg)


def test_raw_through_link_copies_out_of_the_buffer():
    link = links.Link(links.Protocol())
    link.receive_data(link.encode(b"first") + link.encode(b"second"))
    first = link.next_message()
    link.receive_data(link.encode(b"third"))  # reuses the buffer the first frame was cut from
    assert [first, *drain(link)] == [b"first", b"second", b"third"]


# -- JsonMessenger --------------------------------------------------------------------------

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=12,
)


@settings(derandomize=True)
@given(json_values)
def test_json_round_trip(msg):
    m = links.JsonMessenger()
    assert m.deserialize(memoryview(bytes(m.serialize(msg)))) == msg


def test_json_wire_is_compact_utf8():
    assert bytes(links.JsonMessenger().serialize({"k": [1, "é"]})) == '{"k":[1,"é"]}'.encode()


def test_json_through_link():
    link = links.Link(Json())
    msgs = [{"n": 1}, [1, 2], "s", None]
    _, wire = link.encode_many(msgs)
    link.receive_data(wire)
    assert drain(link) == msgs


@pytest.mark.parametrize("payload", [b"{", b"not json", b"", b'{"a": 1} trailing'])
def test_json_bad_document_raises_decode_error(payload):
    with pytest.raises(links.DecodeError):
        links.JsonMessenger().deserialize(memoryview(payload))


@pytest.mark.parametrize("payload", [b'"\xff"', b'"\xc3"', b"\xed\xa0\x80"])
def test_json_bad_utf8_raises_decode_error(payload):
    with pytest.raises(links.DecodeError):
        links.JsonMessenger().deserialize(memoryview(payload))


def test_bad_frame_through_link_raises_decode_error_and_later_frames_still_decode():
    link = links.Link(Json())
    framer = Json.framer
    link.receive_data(framer.encode(b"{oops") + framer.encode(b'{"ok":true}'))
    with pytest.raises(links.DecodeError):
        link.next_message()
    # The bad frame was consumed; the engine does not wedge on it.
    assert link.next_message() == {"ok": True}


# -- user messengers through Link -----------------------------------------------------------


class Exploding(links.Messenger):
    def serialize(self, msg):
        return bytes(msg)

    def deserialize(self, payload):
        raise KeyError("hostile bytes")


class OwnDecodeError(links.Messenger):
    def serialize(self, msg):
        return bytes(msg)

    def deserialize(self, payload):
        raise links.DecodeError("my own words")


def test_arbitrary_messenger_exception_becomes_decode_error():
    protocol = links.Protocol()
    protocol.messenger = Exploding()
    link = links.Link(protocol)
    link.receive_data(link.encode(b"x"))
    with pytest.raises(links.DecodeError) as info:
        link.next_message()
    assert isinstance(info.value.__cause__, KeyError)
    assert "Exploding" in str(info.value)


def test_protocol_errors_from_a_messenger_pass_through_unwrapped():
    protocol = links.Protocol()
    protocol.messenger = OwnDecodeError()
    link = links.Link(protocol)
    link.receive_data(link.encode(b"x"))
    with pytest.raises(links.DecodeError, match="^my own words$"):
        link.next_message()


# -- on_send stamping -----------------------------------------------------------------------


class Replacing(links.Protocol):
    messenger = links.JsonMessenger()

    def __init__(self):
        self.seq = 0

    def on_send(self, msg):
        self.seq += 1
        return {**msg, "seq": self.seq}


class Mutating(links.Protocol):
    messenger = links.JsonMessenger()

    def __init__(self):
        self.seen = []

    def on_send(self, msg):
        self.seen.append(msg)
        msg["stamped"] = True  # mutates in place and returns None


def test_stamp_uses_the_returned_message():
    link = links.Link(Replacing())
    original = {"body": "hi"}
    assert link.stamp(original) == {"body": "hi", "seq": 1}
    assert original == {"body": "hi"}
    stamped, wire = link.encode_many([{"a": 1}, {"a": 2}])
    assert stamped == [{"a": 1, "seq": 2}, {"a": 2, "seq": 3}]
    link.receive_data(wire)
    assert drain(link) == stamped


def test_stamp_keeps_the_message_when_on_send_returns_none():
    protocol = Mutating()
    link = links.Link(protocol)
    msg = {"body": "hi"}
    assert link.stamp(msg) is msg
    assert protocol.seen == [msg]
    assert msg == {"body": "hi", "stamped": True}


def test_stamp_without_on_send_is_identity():
    link = links.Link(Json())
    msg = {"body": "hi"}
    assert link.stamp(msg) is msg
