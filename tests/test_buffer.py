"""ReceiveBuffer: growth, compaction, and the lifetime of the frame views it hands out."""

from __future__ import annotations

import pytest

import links

FIXED4 = links.FixedSizeFramer(4)
PREFIX2 = links.LengthPrefixFramer(2)


def test_grows_for_a_frame_larger_than_its_capacity():
    buf = links.ReceiveBuffer(capacity=16, read_size=16)
    body = bytes(range(256)) * 4  # 1 KiB frame into a 16-byte buffer
    frame = PREFIX2.encode(body)
    for i in range(0, len(frame), 7):
        buf.feed(frame[i : i + 7])
    assert len(buf) == len(frame)
    assert bytes(PREFIX2.payload(buf.next_frame(PREFIX2))) == body
    assert len(buf) == 0


def test_recv_into_writable_then_commit():
    buf = links.ReceiveBuffer(capacity=16, read_size=16)
    space = buf.writable()
    assert len(space) >= 16
    space[:6] = b"abcdef"
    buf.commit(6)
    assert len(buf) == 6
    assert bytes(buf.next_frame(FIXED4)) == b"abcd"
    # writable(min_free) guarantees room for one large read.
    assert len(buf.writable(1000)) >= 1000
    assert len(buf) == 2


def test_compaction_keeps_pending_bytes():
    buf = links.ReceiveBuffer(capacity=16, read_size=8)
    buf.feed(b"0123456789ab")  # 12 of 16 bytes used
    assert bytes(buf.next_frame(FIXED4)) == b"0123"
    assert bytes(buf.next_frame(FIXED4)) == b"4567"
    # 4 bytes pending at offset 8; 8 more need room at the end: the tail moves to the front.
    buf.feed(b"cdefghij")
    assert len(buf) == 12
    assert [bytes(buf.next_frame(FIXED4)) for _ in range(3)] == [b"89ab", b"cdef", b"ghij"]
    assert buf.next_frame(FIXED4) is None


def test_many_partial_frames_through_a_small_buffer():
    # Each feed leaves a partial frame behind, so the buffer keeps compacting or growing.
    buf = links.ReceiveBuffer(capacity=8, read_size=8)
    payloads = [bytes([n]) * n for n in range(40)]
    stream = b"".join(PREFIX2.encode(p) for p in payloads)
    got = []
    for i in range(0, len(stream), 5):
        buf.feed(stream[i : i + 5])
        while (frame := buf.next_frame(PREFIX2)) is not None:
            got.append(bytes(PREFIX2.payload(frame)))
    assert got == payloads


def test_frame_views_stay_correct_until_the_next_feed():
    buf = links.ReceiveBuffer(capacity=16, read_size=8)
    buf.feed(b"aaaabbbbcc")
    first = buf.next_frame(FIXED4)
    second = buf.next_frame(FIXED4)
    assert isinstance(first, memoryview)
    # Cutting a later frame does not disturb an earlier view.
    assert (bytes(first), bytes(second)) == (b"aaaa", b"bbbb")


def test_frame_view_of_a_drained_buffer_is_correct_until_the_next_feed():
    buf = links.ReceiveBuffer(capacity=16, read_size=8)
    buf.feed(b"abcd")
    frame = buf.next_frame(FIXED4)  # the buffer is now empty and rewinds
    assert len(buf) == 0
    assert bytes(frame) == b"abcd"


def test_held_view_does_not_block_compaction():
    buf = links.ReceiveBuffer(capacity=16, read_size=8)
    buf.feed(b"0123456789ab")
    held = buf.next_frame(FIXED4)
    buf.next_frame(FIXED4)
    buf.feed(b"cdefghij")  # compacts in place while `held` is alive: no BufferError
    assert [bytes(buf.next_frame(FIXED4)) for _ in range(3)] == [b"89ab", b"cdef", b"ghij"]
    held.release()


def test_held_view_does_not_block_growth():
    buf = links.ReceiveBuffer(capacity=8, read_size=8)
    buf.feed(b"abcdefg")
    held = buf.next_frame(FIXED4)
    buf.feed(b"x" * 100)  # needs a bigger array while `held` is alive: no BufferError
    assert bytes(held) == b"abcd"  # the old array is replaced, not resized, so the view survives
    assert len(buf.writable(4096)) >= 4096
    assert bytes(buf.next_frame(FIXED4)) == b"efgx"
    held.release()


def test_frame_too_large_leaves_the_buffer_unchanged():
    framer = links.LengthPrefixFramer(2, max_frame_size=8)
    buf = links.ReceiveBuffer(capacity=16, read_size=8)
    buf.feed(b"\x00\x09")
    with pytest.raises(links.FrameTooLarge):
        buf.next_frame(framer)
    assert len(buf) == 2  # nothing consumed: the caller closes the connection, not the buffer


def test_read_offer_starts_small_and_doubles_only_while_reads_fill_it():
    buf = links.ReceiveBuffer(capacity=16, read_size=16, max_read_size=64)
    assert len(buf.writable()) == 16
    buf.commit(5)  # a short read: the offer stays
    buf.next_frame(links.FixedSizeFramer(5))
    assert len(buf.writable()) == 16
    sizes = []
    for _ in range(4):  # reads that fill everything offered: 32, 64, then capped at 64
        view = buf.writable()
        sizes.append(len(view))
        buf.commit(len(view))
        while buf.next_frame(links.FixedSizeFramer(1)) is not None:
            pass
    assert sizes[0] == 16 and sizes[1] >= 32 and max(sizes) <= 64 + 16
