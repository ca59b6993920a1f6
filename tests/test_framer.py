"""Framers: the wire encoding of each built-in, decoding under every way bytes can arrive, and
the ``max_frame_size`` bound.

Every hand-written frame goes through ``tr()`` (after h11's ``tests/test_io.py``): fed whole,
one byte at a time, and followed by the first bytes of the next frame, because a framer that
works on whole reads can still cut early on a short one or swallow the start of the next.
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import links

NEED_DATA = links.NEED_DATA


def make_link(framer: links.Framer) -> links.Link:
    protocol = links.Protocol()
    protocol.framer = framer
    protocol.messenger = links.RawMessenger()
    return links.Link(protocol)


def drain(link: links.Link) -> list[bytes]:
    out = []
    while (msg := link.next_message()) is not NEED_DATA:
        out.append(msg)
    return out


def drain_batches(link: links.Link) -> list[bytes]:
    out = []
    while msgs := link.next_messages():
        out += msgs
    return out


def tr(framer: links.Framer, frame: bytes, payload: bytes) -> None:
    """``payload`` encodes to exactly ``frame``, and ``frame`` decodes back three ways."""
    assert framer.encode(payload) == frame

    # Whole.
    link = make_link(framer)
    link.receive_data(frame)
    assert drain(link) == [payload]
    assert len(link.buffer) == 0

    # One byte at a time: nothing comes out before the last byte.
    link = make_link(framer)
    for i in range(len(frame) - 1):
        link.receive_data(frame[i : i + 1])
        assert link.next_message() is NEED_DATA
    link.receive_data(frame[-1:])
    assert drain(link) == [payload]

    # Followed by all but the last byte of the next frame: those bytes stay buffered, untouched.
    link = make_link(framer)
    link.receive_data(frame + frame[:-1])
    assert drain(link) == [payload]
    assert len(link.buffer) == len(frame) - 1
    link.receive_data(frame[-1:])
    assert drain(link) == [payload]
    assert len(link.buffer) == 0


# -- wire encodings, written out by hand ---------------------------------------------------


@pytest.mark.parametrize(
    ("framer", "payload", "frame"),
    [
        (links.FixedSizeFramer(4), b"abcd", b"abcd"),
        (links.FixedSizeFramer(1), b"\x00", b"\x00"),
        (links.LengthPrefixFramer(2), b"abc", b"\x00\x03abc"),
        (links.LengthPrefixFramer(2), b"", b"\x00\x00"),
        (links.LengthPrefixFramer(2, byteorder="little"), b"abc", b"\x03\x00abc"),
        (links.LengthPrefixFramer(4), b"abc", b"\x00\x00\x00\x03abc"),
        (links.LengthPrefixFramer(4, byteorder="little"), b"abc", b"\x03\x00\x00\x00abc"),
        (links.LengthPrefixFramer(2), b"x" * 258, b"\x01\x02" + b"x" * 258),
        (links.LengthPrefixFramer(2, byteorder="little"), b"x" * 258, b"\x02\x01" + b"x" * 258),
        (links.LengthPrefixFramer(2, includes_header=True), b"abc", b"\x00\x05abc"),
        (links.LengthPrefixFramer(2, includes_header=True), b"", b"\x00\x02"),
        (links.LengthPrefixFramer(4, byteorder="little", includes_header=True), b"abc", b"\x07\x00\x00\x00abc"),
        # The prefix before the length field belongs to the payload (a type byte, say).
        (links.LengthPrefixFramer(2, offset=1), b"Tabc", b"T\x00\x03abc"),
        (links.LengthPrefixFramer(2, offset=1), b"T", b"T\x00\x00"),
        (links.LengthPrefixFramer(2, offset=1, includes_header=True), b"Tabc", b"T\x00\x06abc"),
        (links.LengthPrefixFramer(4, offset=2, byteorder="little"), b"XYabc", b"XY\x03\x00\x00\x00abc"),
        (links.LengthPrefixFramer(2, offset=3, includes_header=True), b"ABCab", b"ABC\x00\x07ab"),
        (links.LengthPrefixFramer(4, offset=3), b"ABCab", b"ABC\x00\x00\x00\x02ab"),
        (links.DelimiterFramer(), b"abc", b"abc\n"),
        (links.DelimiterFramer(), b"", b"\n"),
        (links.DelimiterFramer(b"\r\n"), b"a\rb\nc", b"a\rb\nc\r\n"),
        (links.DelimiterFramer(b"\r\n\r\n"), b"x\r\ny", b"x\r\ny\r\n\r\n"),
        (links.DelimiterFramer(b"END"), b"EN", b"ENEND"),
    ],
    ids=lambda v: repr(v) if isinstance(v, bytes) and len(v) < 20 else None,
)
def test_wire_encoding(framer, payload, frame):
    tr(framer, frame, payload)


@pytest.mark.parametrize("header_size", [2, 4])
@pytest.mark.parametrize("byteorder", ["big", "little"])
@pytest.mark.parametrize("offset", [0, 1, 2, 3])
@pytest.mark.parametrize("includes_header", [False, True])
def test_length_prefix_every_layout(header_size, byteorder, offset, includes_header):
    framer = links.LengthPrefixFramer(
        header_size, byteorder=byteorder, offset=offset, includes_header=includes_header
    )
    prefix, body = b"PFX"[:offset], b"body!"
    declared = offset + header_size + len(body) if includes_header else len(body)
    frame = prefix + declared.to_bytes(header_size, byteorder) + body
    tr(framer, frame, prefix + body)


def test_fixed_size_frames_back_to_back():
    link = make_link(links.FixedSizeFramer(3))
    link.receive_data(b"abcdefg")
    assert drain(link) == [b"abc", b"def"]
    link.receive_data(b"hi")
    assert drain(link) == [b"ghi"]


def test_multibyte_delimiter_split_across_reads():
    link = make_link(links.DelimiterFramer(b"\r\n"))
    link.receive_data(b"one\r")
    assert link.next_message() is NEED_DATA
    link.receive_data(b"\ntwo\r\n")
    assert drain(link) == [b"one", b"two"]


# -- encode refuses what the reader could not give back ------------------------------------


def test_fixed_size_encode_wrong_length():
    framer = links.FixedSizeFramer(4)
    with pytest.raises(ValueError):
        framer.encode(b"abc")
    with pytest.raises(ValueError):
        framer.encode(b"abcde")


@pytest.mark.parametrize(
    ("delimiter", "payload"),
    [
        (b"\n", b"a\nb"),
        (b"\n", memoryview(b"a\nb")),
        (b"\r\n", b"x\r\ny"),
        # Not containing the delimiter is not enough: with the delimiter appended, the reader
        # would cut at the earlier, overlapping occurrence.
        (b"\r\n\r\n", b"x\r\n"),
        (b"aa", b"xa"),
    ],
)
def test_delimiter_encode_refuses_payload_that_would_be_cut_early(delimiter, payload):
    with pytest.raises(ValueError):
        links.DelimiterFramer(delimiter).encode(payload)


def test_length_prefix_offset_encode_needs_the_prefix():
    with pytest.raises(ValueError):
        links.LengthPrefixFramer(2, offset=3).encode(b"ab")


@pytest.mark.parametrize(
    "make",
    [
        lambda: links.FixedSizeFramer(0),
        lambda: links.LengthPrefixFramer(3),
        lambda: links.LengthPrefixFramer(2, byteorder="middle"),
        lambda: links.LengthPrefixFramer(2, offset=-1),
        lambda: links.DelimiterFramer(b""),
    ],
)
def test_bad_framer_arguments(make):
    with pytest.raises(ValueError):
        make()


# -- max_frame_size -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("framer", "header"),
    [
        # body 9 + header 2 = 11 > 10
        (links.LengthPrefixFramer(2, max_frame_size=10), b"\x00\x09"),
        (links.LengthPrefixFramer(2, includes_header=True, max_frame_size=10), b"\x00\x0b"),
        (links.LengthPrefixFramer(4, byteorder="little", max_frame_size=10), b"\x09\x00\x00\x00"),
        (links.LengthPrefixFramer(4, offset=2, max_frame_size=100), b"XY\x00\x00\x00\xff"),
        # A hostile peer declaring 4 GiB.
        (links.LengthPrefixFramer(4), b"\xff\xff\xff\xff"),
    ],
)
def test_declared_length_over_max_raises_once_header_is_in(framer, header):
    link = make_link(framer)
    link.receive_data(header[:-1])
    assert link.next_message() is NEED_DATA  # not judged on half a header
    link.receive_data(header[-1:])
    with pytest.raises(links.FrameTooLarge) as info:
        link.next_message()  # no body byte has arrived
    assert info.value.size > info.value.max_frame_size == framer.max_frame_size
    assert isinstance(info.value, links.ProtocolError)


def test_declared_length_exactly_max_is_accepted():
    framer = links.LengthPrefixFramer(2, max_frame_size=10)
    tr(framer, b"\x00\x08" + b"x" * 8, b"x" * 8)
    framer = links.LengthPrefixFramer(2, includes_header=True, max_frame_size=10)
    tr(framer, b"\x00\x0a" + b"x" * 8, b"x" * 8)


@pytest.mark.parametrize(
    ("framer", "header"),
    [
        (links.LengthPrefixFramer(2, includes_header=True), b"\x00\x01"),
        (links.LengthPrefixFramer(4, includes_header=True), b"\x00\x00\x00\x00"),
        (links.LengthPrefixFramer(2, offset=2, includes_header=True), b"ab\x00\x03"),
    ],
)
def test_declared_length_smaller_than_header_is_rejected(framer, header):
    link = make_link(framer)
    link.receive_data(header)
    with pytest.raises(links.ProtocolError):
        link.next_message()


@pytest.mark.parametrize("delimiter", [b"\n", b"\r\n"])
def test_delimiter_missing_within_max_raises(delimiter):
    framer = links.DelimiterFramer(delimiter, max_frame_size=8)
    tr(framer, b"x" * (8 - len(delimiter)) + delimiter, b"x" * (8 - len(delimiter)))

    link = make_link(framer)
    stream = b"abcdefgh"[: 9 - len(delimiter)] + delimiter[:-1]  # 8 bytes, no whole delimiter
    for i in range(7):
        link.receive_data(stream[i : i + 1])
        assert link.next_message() is NEED_DATA
    link.receive_data(stream[7:])
    with pytest.raises(links.FrameTooLarge):
        link.next_message()


def test_encode_over_max_raises():
    with pytest.raises(links.FrameTooLarge):
        links.LengthPrefixFramer(2, max_frame_size=10).encode(b"x" * 9)
    assert len(links.LengthPrefixFramer(2, max_frame_size=10).encode(b"x" * 8)) == 10
    with pytest.raises(links.FrameTooLarge):
        links.DelimiterFramer(max_frame_size=8).encode(b"x" * 8)
    assert len(links.DelimiterFramer(max_frame_size=8).encode(b"x" * 7)) == 8


def test_encode_over_what_the_length_field_can_hold_raises():
    # A u16 body length tops out at 65535, whatever max_frame_size says.
    framer = links.LengthPrefixFramer(2, max_frame_size=1 << 20)
    assert framer.encode(b"x" * 65535)[:2] == b"\xff\xff"
    with pytest.raises(links.FrameTooLarge):
        framer.encode(b"x" * 65536)
    # Counting the header too leaves 65533 bytes of body.
    framer = links.LengthPrefixFramer(2, includes_header=True, max_frame_size=1 << 20)
    assert framer.encode(b"x" * 65533)[:2] == b"\xff\xff"
    with pytest.raises(links.FrameTooLarge):
        framer.encode(b"x" * 65534)


# -- random streams, random splits ----------------------------------------------------------

STREAM_FRAMERS = [
    links.FixedSizeFramer(3),
    links.LengthPrefixFramer(2),
    links.LengthPrefixFramer(4, byteorder="little"),
    links.LengthPrefixFramer(2, byteorder="little", offset=3, includes_header=True),
    links.LengthPrefixFramer(4, offset=1),
    links.DelimiterFramer(),
    links.DelimiterFramer(b"\r\n\r\n"),
    links.DelimiterFramer(b"aa"),
]


def payloads_for(framer) -> st.SearchStrategy[bytes]:
    if isinstance(framer, links.FixedSizeFramer):
        return st.binary(min_size=framer.size, max_size=framer.size)
    if isinstance(framer, links.LengthPrefixFramer):
        return st.binary(min_size=framer.offset, max_size=300)
    # Delimiter framers: build payloads mostly out of delimiter pieces so near-misses are
    # common, and keep those the reader can give back (first delimiter is the appended one).
    d = framer.delimiter
    pieces = st.sampled_from([d[:1], d[-1:], d[: len(d) // 2], b"x"]) | st.binary(max_size=3)
    return (
        st.lists(pieces, max_size=12)
        .map(b"".join)
        .filter(lambda p: (p + d).find(d) == len(p))
    )


@pytest.mark.parametrize("take", [drain, drain_batches])
@pytest.mark.parametrize("framer", STREAM_FRAMERS, ids=repr)
@settings(max_examples=60, deadline=None, derandomize=True)
@given(data=st.data())
def test_random_payloads_random_splits_round_trip(framer, take, data):
    payloads = data.draw(st.lists(payloads_for(framer), max_size=15), label="payloads")
    stream = b"".join(framer.encode(p) for p in payloads)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=12), label="cuts"))

    link = make_link(framer)
    got = []
    for lo, hi in zip([0, *cuts], [*cuts, len(stream)]):
        link.receive_data(stream[lo:hi])
        got += take(link)
    assert got == payloads
    assert len(link.buffer) == 0


@pytest.mark.parametrize("framer", [f for f in STREAM_FRAMERS if hasattr(f, "payloads")], ids=repr)
@settings(max_examples=60, deadline=None, derandomize=True)
@given(data=st.data())
def test_batch_payloads_agree_with_frame_length_and_payload(framer, data):
    """A built-in ``payloads`` cuts exactly what the general form (``split_payloads``) cuts and
    stops at the same place (before an incomplete or a bad frame), at any offset into any bytes."""
    frames = b"".join(framer.encode(p) for p in data.draw(st.lists(payloads_for(framer), max_size=8)))
    buf = bytearray(data.draw(st.binary(max_size=4)) + frames + data.draw(st.binary(max_size=12)))
    start = data.draw(st.integers(0, len(buf)))
    results = []
    for cut in (framer.payloads, lambda *a: links.split_payloads(framer, *a)):
        out: list = []
        stop = cut(buf, start, len(buf), out)
        results.append(([bytes(p) for p in out], stop))
    assert results[0] == results[1]
