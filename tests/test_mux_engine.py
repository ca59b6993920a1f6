"""The yamux engine alone, Sans-I/O: two engines talking through bytes, no socket, thread or clock."""

from __future__ import annotations

import random
import struct

import pytest
from hypothesis import HealthCheck, assume, given, settings, strategies as st

from links import BrokenError, ClosedError
from links.mux import (
    GoAway,
    MuxEngine,
    MuxError,
    Pong,
    StreamAccepted,
    StreamData,
    StreamEnded,
    StreamOpened,
    StreamReset,
)
from links.mux import _wire as wire

HEADER = struct.Struct(">BBHII")
KIB = 1024


def header(kind: int, flags: int, stream_id: int, length: int) -> bytes:
    return HEADER.pack(0, kind, flags, stream_id, length)


def frames(data: bytes) -> list[tuple[int, int, int, int, bytes]]:
    """Split ``data`` into (type, flags, stream id, length, payload) by hand, as the spec reads."""
    out, at = [], 0
    while at < len(data):
        version, kind, flags, sid, length = HEADER.unpack_from(data, at)
        assert version == 0
        size = length if kind == 0 else 0
        out.append((kind, flags, sid, length, data[at + 12 : at + 12 + size]))
        at += 12 + size
    return out


def pair(**kwargs) -> tuple[MuxEngine, MuxEngine]:
    return MuxEngine(client=True, **kwargs), MuxEngine(client=False, **kwargs)


def two_streams(**kwargs) -> tuple[MuxEngine, MuxEngine, int, int]:
    """A client and a server engine, and two streams the client opened and the server accepted."""
    c, s = pair(**kwargs)
    a, b = c.open(), c.open()
    flow(c, s)
    s.accept(a)
    s.accept(b)
    c.feed(s.take_output())
    return c, s, a, b


def flow(a: MuxEngine, b: MuxEngine) -> list:
    """Everything ``a`` has to send, read by ``b``: ``b``'s events."""
    return b.feed(a.take_output())


# -- the wire, byte for byte ----------------------------------------------------------------


def test_open_write_close_on_the_wire_as_the_specification_spells_it():
    c = MuxEngine(client=True)
    sid = c.open()
    assert sid == 1  # the client's ids are odd
    assert c.write(sid, b"hello") == 5
    c.close(sid)
    out = c.take_output()
    assert out == (
        header(1, 0x1, 1, 0)  # WINDOW_UPDATE + SYN opens the stream, no extra window
        + header(0, 0x4, 1, 5) + b"hello"  # DATA, with FIN on the last of it
    )


def test_server_ids_are_even_and_the_ack_accepts():
    c, s = pair()
    sid = c.open()
    assert flow(c, s) == [StreamOpened(sid)]
    s.accept(sid)
    assert s.take_output() == header(1, 0x2, sid, 0)
    assert s.open() == 2 and s.open() == 4
    events = flow(s, c)
    assert events == [StreamOpened(2), StreamOpened(4)]


def test_a_larger_window_is_announced_with_the_syn_and_the_ack():
    c, s = pair(window=1 << 20)
    sid = c.open()
    assert frames(c.take_output()) == [(1, 0x1, sid, (1 << 20) - 256 * KIB, b"")]
    c2, s2 = MuxEngine(client=True), MuxEngine(client=False, window=1 << 20)
    sid = c2.open()
    s2.feed(c2.take_output())
    s2.accept(sid)
    c2.feed(s2.take_output())
    assert c2.write(sid, bytes(1 << 20)) == 1 << 20  # the ACK's credit is usable at once


def test_round_trip_both_ways_and_full_close_forgets_the_stream():
    c, s = pair()
    sid = c.open()
    c.write(sid, b"ping")
    assert flow(c, s) == [StreamOpened(sid), StreamData(sid, b"ping")]
    s.accept(sid)
    s.write(sid, b"pong")
    s.close(sid)
    assert flow(s, c) == [StreamAccepted(sid), StreamData(sid, b"pong"), StreamEnded(sid)]
    assert sid in c.streams and sid not in s.streams or sid in s.streams
    c.close(sid)
    assert flow(c, s) == [StreamEnded(sid)]
    assert c.streams == {} and s.streams == {}


def test_ping_is_answered_and_its_answer_reported():
    c, s = pair()
    opaque = c.ping()
    assert frames(c.take_output()) == [(2, 0x1, 0, opaque, b"")]
    assert flow(c, s) == []
    assert frames(s.take_output()) == []
    c.ping()
    s.feed(c.take_output())
    answer = s.take_output()
    assert frames(answer) == [(2, 0x2, 0, opaque + 1, b"")]
    assert c.feed(answer) == [Pong(opaque + 1)]


def test_go_away_from_the_peer_stops_new_streams_but_not_open_ones():
    c, s = pair()
    sid = c.open()
    flow(c, s)
    s.accept(sid)
    s.go_away()
    assert c.feed(s.take_output()) == [StreamAccepted(sid), GoAway(0)]
    with pytest.raises(BrokenError) as e:
        c.open()
    assert e.value.reason == "mux.go_away"
    assert c.write(sid, b"still") == 5
    assert flow(c, s) == [StreamData(sid, b"still")]


def test_after_our_go_away_a_new_stream_of_the_peer_is_refused():
    c, s = pair()
    s.go_away()
    s.take_output()
    sid = c.open()
    c.write(sid, b"x")
    assert flow(c, s) == []
    assert c.feed(s.take_output()) == [StreamReset(sid)]
    with pytest.raises(ClosedError):
        s.open()


def test_streams_beyond_max_streams_are_refused_with_rst():
    c, s = MuxEngine(client=True), MuxEngine(client=False, max_streams=2)
    ids = [c.open() for _ in range(3)]
    assert flow(c, s) == [StreamOpened(ids[0]), StreamOpened(ids[1])]
    assert frames(s.take_output()) == [(1, 0x8, ids[2], 0, b"")]


def test_reset_drops_what_is_queued_and_late_frames_are_ignored():
    c, s = pair()
    sid = c.open()
    flow(c, s)
    c.write(sid, b"never sent")
    c.reset(sid)
    assert frames(c.take_output()) == [(1, 0x8, sid, 0, b"")]
    assert c.queued == 0
    assert s.feed(header(1, 0x8, sid, 0)) == [StreamReset(sid)]
    with pytest.raises(BrokenError):
        s.write(sid, b"x")
    # A frame that crossed the RST on the wire: harmless.
    assert s.feed(header(0, 0, sid, 3) + b"old") == []
    assert s.ignored == 1


def test_write_after_close_is_a_closed_error():
    c, s = pair()
    sid = c.open()
    c.close(sid)
    with pytest.raises(ClosedError):
        c.write(sid, b"x")


# -- flow control ---------------------------------------------------------------------------


def test_a_writer_is_held_to_the_peer_window_and_freed_by_its_update():
    c, s = pair()
    sid = c.open()
    assert c.write(sid, bytes(300 * KIB)) == 256 * KIB
    assert c.write(sid, b"more") == 0
    assert c.unblocked() == []
    events = flow(c, s)
    got = sum(len(e.data) for e in events if isinstance(e, StreamData))
    assert got == 256 * KIB
    s.consumed(sid, 100 * KIB)
    assert s.take_output() == b""  # less than half a window: no update yet
    s.consumed(sid, 28 * KIB)
    update = s.take_output()
    assert frames(update) == [(1, 0, sid, 128 * KIB, b"")]
    assert c.feed(update) == []
    assert c.unblocked() == [sid]
    assert c.unblocked() == []  # named once per cut
    assert c.write(sid, bytes(200 * KIB)) == 128 * KIB


def test_data_beyond_the_window_is_a_protocol_error_with_go_away():
    c, s = pair()
    sid = c.open()
    flow(c, s)
    s.feed(header(0, 0, sid, 200 * KIB) + bytes(200 * KIB))
    with pytest.raises(MuxError) as e:
        s.feed(header(0, 0, sid, 100 * KIB) + bytes(100 * KIB))
    assert e.value.reason == "mux.window_exceeded"
    assert frames(s.take_output()) == [(3, 0, 0, 1, b"")]  # GO_AWAY, protocol error


def test_a_length_past_every_window_is_refused_on_its_header():
    s = MuxEngine(client=False)
    with pytest.raises(MuxError) as e:
        s.feed(header(0, 0x1, 1, 0xFFFFFFFF))  # no payload needed to know
    assert e.value.reason == "mux.window_exceeded"
    assert frames(s.take_output()) == [(3, 0, 0, 1, b"")]  # GO_AWAY, protocol error


def test_a_window_past_two_to_the_32_is_a_protocol_error():
    c, s = pair()
    sid = c.open()
    flow(c, s)
    s.accept(sid)
    c.feed(s.take_output())
    with pytest.raises(MuxError) as e:
        c.feed(header(1, 0, sid, 0xFFFFFFFF))
    assert e.value.reason == "mux.window_overflow"


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (HEADER.pack(1, 0, 0x1, 1, 0), "mux.bad_version"),
        (HEADER.pack(0, 7, 0, 1, 0), "mux.bad_type"),
        (header(1, 0x1, 2, 0), "mux.stream_reused"),  # the server's own parity, from the client
        (header(1, 0x1, 1, 0) + header(1, 0x1, 1, 0), "mux.stream_reused"),
        (header(2, 0x1, 1, 7), "mux.bad_stream_id"),
        (header(3, 0, 1, 0), "mux.bad_stream_id"),
        (header(0, 0, 0, 0), "mux.bad_stream_id"),
    ],
    ids=["version", "type", "parity", "twice", "ping-on-stream", "go-away-on-stream", "data-on-0"],
)
def test_connection_level_violations_raise_and_leave_a_go_away(data, reason):
    s = MuxEngine(client=False)
    with pytest.raises(MuxError) as e:
        s.feed(data)
    assert e.value.reason == reason
    assert frames(s.take_output())[-1] == (3, 0, 0, 1, b"")


def test_a_peer_that_provokes_answers_it_does_not_read_is_cut():
    """PINGs and refused SYNs each make us owe a frame; a peer that keeps asking while our
    output is not taken (it does not read) would grow it without end."""
    s = MuxEngine(client=False, max_streams=1)
    ping = header(2, 0x1, 0, 7)
    with pytest.raises(MuxError) as e:
        for _ in range(1_000_000):
            s.feed(ping)
    assert e.value.reason == "mux.control_flood"
    out = s.take_output()
    assert len(out) <= s.max_control + 2 * 12  # bounded: the answer that crossed it, then GO_AWAY
    assert frames(out)[-1] == (3, 0, 0, 1, b"")

    s = MuxEngine(client=False, max_streams=1)
    with pytest.raises(MuxError) as e:
        for sid in range(1, 2_000_000, 2):
            s.feed(header(1, 0x1, sid, 0))  # the first is taken, every other refused (RST)
    assert e.value.reason == "mux.control_flood"


def test_answers_taken_as_they_come_are_no_flood():
    s = MuxEngine(client=False, max_streams=1)
    ping = header(2, 0x1, 0, 7)
    for _ in range(3 * s.max_control // 12):
        assert s.feed(ping) == []
        assert s.take_output() == header(2, 0x2, 0, 7)


def test_the_peer_may_open_streams_in_any_order():
    # The reference implementation numbers streams in order but sends the SYN of each from the
    # thread that opened it: of two streams opened at once, 5's SYN may come before 3's.
    s = MuxEngine(client=False)
    events = s.feed(header(1, 0x1, 5, 0) + header(1, 0x1, 3, 0) + header(0, 0, 3, 2) + b"hi" + header(1, 0x1, 1, 0))
    assert events == [StreamOpened(5), StreamOpened(3), StreamData(3, b"hi"), StreamOpened(1)]
    s.accept(3)
    assert frames(s.take_output()) == [(1, 0x2, 3, 0, b"")]


def test_a_stream_id_closed_and_opened_again_is_a_new_stream():
    c, s = pair()
    sid = c.open()
    flow(c, s)
    s.reset(sid)
    c.feed(s.take_output())
    assert s.feed(header(1, 0x1, sid, 0) + header(0, 0, sid, 3) + b"new") == [StreamOpened(sid), StreamData(sid, b"new")]


# -- fairness -------------------------------------------------------------------------------


def test_a_small_message_waits_one_turn_of_chunks_at_most():
    c, s, a, b = two_streams(window=64 << 20)
    assert c.write(a, bytes(8 << 20)) > c.chunk  # A queues megabytes
    assert c.write(b, b"urgent") == 6  # B still gets its chunk's worth, queue or not
    first = frames(c.take_output(limit=c.chunk))
    second = frames(c.take_output(limit=c.chunk))
    assert (first + second)[:2] == [(0, 0, a, c.chunk, bytes(c.chunk)), (0, 0, b, 6, b"urgent")]


def test_a_stream_alone_with_data_goes_out_in_frames_as_large_as_the_step():
    c, s, a, b = two_streams(window=64 << 20)
    assert c.write(a, bytes(1 << 20)) == 1 << 20
    alone = frames(c.take_output(limit=256 * KIB))
    assert [(sid, n) for _, _, sid, n, _ in alone] == [(a, 256 * KIB - wire.HEADER_SIZE)]  # one frame, not four chunks
    assert c.write(b, b"urgent") == 6  # another stream with data: turns of chunks again
    taken = frames(c.take_output(limit=256 * KIB))
    assert [(sid, n) for _, _, sid, n, _ in taken][:2] == [(a, c.chunk), (b, 6)]
    rest = (1 << 20) - sum(n for _, _, sid, n, _ in alone + taken if sid == a)
    assert sum(len(p) for _, _, sid, _, p in frames(c.take_output()) if sid == a) == rest  # every byte, once


def test_write_frame_frames_a_send_at_once_only_when_nothing_else_is_waiting():
    c, s = pair()
    a, b = c.open(), c.open()
    assert c.write_frame(a, b"hi", 1 << 20) is None  # the SYNs are still to go: nothing taken
    flow(c, s)
    small = c.write_frame(a, b"hello", 1 << 20)
    assert small == header(0, 0, a, 5) + b"hello"  # one bytes: header and data joined
    assert s.feed(small)[0].data == b"hello"
    big = bytes(64 * KIB)
    parts = c.write_frame(a, big, 1 << 20)
    assert parts[0] == header(0, 0, a, len(big)) and parts[1] is big  # large: the caller's bytes, uncopied
    assert c.streams[a].send_window == wire.INITIAL_WINDOW - 5 - len(big)
    assert c.write(b, b"queued") == 6
    assert c.write_frame(a, b"after", 1 << 20) is None  # another stream's data goes first
    assert frames(c.take_output()) == [(0, 0, b, 6, b"queued")]
    assert c.write_frame(a, bytes(300 * KIB), 1 << 20) is None  # past the window: write() cuts it
    assert c.write_frame(a, bytes(10), 5) is None  # past the step
    c.close(b)
    c.take_output()
    assert c.write_frame(b, b"x", 1 << 20) is None  # closed for sending
    assert not c.has_output


def test_data_received_is_a_view_of_the_frame_and_fed_data_is_bytes():
    c, s = pair()
    sid = c.open()
    c.write(sid, b"hello")
    out = c.take_output()
    syn, data = out[: wire.HEADER_SIZE], memoryview(out)[wire.HEADER_SIZE :]
    s.receive(syn)
    (event,) = s.receive(data)
    assert type(event.data) is memoryview and event.data == b"hello"  # uncopied: the caller copies what it keeps
    c2, s2 = pair()
    c2.open()
    c2.write(1, b"hello")
    assert [type(e.data) for e in s2.feed(c2.take_output()) if isinstance(e, StreamData)] == [bytes]


def test_data_takes_only_plain_data_within_the_window_and_leaves_the_rest_to_receive():
    c, s = pair()
    sid = c.open()
    flow(c, s)
    window = s.streams[sid].recv_window
    assert s.data(header(0, 0, sid, 5) + b"hello") == sid
    assert s.streams[sid].recv_window == window - 5  # accounted as receive() would
    others = [
        header(0, 0x4, sid, 2) + b"hi",  # a flag (FIN): its meaning is receive()'s
        header(0, 0, sid + 2, 2) + b"hi",  # no such stream
        header(0, 0, sid, 0),  # no bytes
        header(0, 0, sid, window),  # a header alone (the framer cut no payload): longer than the frame
        HEADER.pack(1, 0, 0, sid, 2) + b"hi",  # another version
        header(1, 0, sid, 2),  # WINDOW_UPDATE
        header(0, 0, sid, window) + bytes(window),  # past the window left
    ]
    for frame in others:
        assert s.data(frame) == 0
    assert s.streams[sid].recv_window == window - 5  # nothing touched
    with pytest.raises(MuxError) as e:
        s.receive(others[-1])
    assert e.value.reason == "mux.window_exceeded"
    s2 = MuxEngine(client=False)
    s2.feed(header(1, 0x1, 1, 0) + header(0, 0x4, 1, 2) + b"hi")  # opened, then its last bytes and FIN
    assert s2.data(header(0, 0, 1, 2) + b"hi") == 0  # after the FIN: receive() drops it


def test_max_queued_bounds_what_streams_queue_and_frees_them_as_output_is_taken():
    c, s = pair(window=1 << 20, max_queued=64 * KIB)
    ids = [c.open() for _ in range(3)]
    flow(c, s)
    for sid in ids:
        s.accept(sid)
    c.feed(s.take_output())
    assert c.write(ids[0], bytes(200 * KIB)) == 64 * KIB
    assert c.write(ids[1], bytes(200 * KIB)) == c.chunk  # an empty stream's first chunk
    assert c.write(ids[2], bytes(10)) == 10
    assert c.unblocked() == []
    c.take_output()
    assert sorted(c.unblocked()) == ids[:2]


# -- random interleavings -------------------------------------------------------------------


def run_exchange(seed: int, n_streams: int, window: int, chunk: int, max_len: int) -> None:
    """Both sides open streams and send random messages on them at once, through random
    splits of the byte stream and random consumption; every byte arrives in order per
    stream, and the exchange finishes (no deadlock: every step makes progress until done)."""
    rng = random.Random(seed)
    c, s = pair(window=window, chunk=chunk, max_queued=window)
    sides = {"c": c, "s": s}
    to_send: dict[tuple[str, int], bytearray] = {}
    sent: dict[tuple[str, int], bytes] = {}
    got: dict[tuple[str, int], bytearray] = {}
    unread: dict[tuple[str, int], int] = {}  # received, not yet consumed
    for i in range(n_streams):
        name = "c" if i % 2 == 0 else "s"
        sid = sides[name].open()
        data = rng.randbytes(rng.randrange(max_len))
        to_send[(name, sid)] = bytearray(data)
        sent[(name, sid)] = data
    other = {"c": "s", "s": "c"}
    for _ in range(20_000):
        progress = False
        for name, eng in sides.items():
            for (owner, sid), rest in to_send.items():
                if owner == name and rest:
                    piece = rest[: rng.randrange(1, len(rest) + 1)]
                    # kept as they are (bytes, a view of bytes) or copied (a mutable buffer)
                    kind = rng.randrange(3)
                    n = eng.write(sid, piece if kind == 0 else bytes(piece) if kind == 1 else memoryview(bytes(piece)))
                    del rest[:n]
                    progress |= n > 0
                if owner == name and not rest and sid in eng.streams and not eng.streams[sid].fin_queued:
                    eng.close(sid)
                    progress = True
            eng.unblocked()
            out = eng.take_output(limit=rng.choice([None, 1, chunk, 3 * chunk]))
            peer = sides[other[name]]
            at = 0
            while at < len(out):
                step = rng.randrange(1, 4 * chunk)
                for event in peer.feed(out[at : at + step]):
                    if isinstance(event, StreamOpened):
                        peer.accept(event.stream_id)
                    elif isinstance(event, StreamData):
                        key = (name, event.stream_id)
                        got.setdefault(key, bytearray()).extend(event.data)
                        unread[key] = unread.get(key, 0) + len(event.data)
                    elif isinstance(event, StreamEnded):
                        peer.close(event.stream_id)
                at += step
            progress |= bool(out)
            for key, n in list(unread.items()):
                if key[0] != name and n:  # the reader here consumes some of what it holds
                    take = rng.randrange(1, n + 1)
                    sides[other[key[0]]].consumed(key[1], take)
                    unread[key] = n - take
                    progress = True
        done = all(not rest for rest in to_send.values()) and all(
            bytes(got.get(key, b"")) == data for key, data in sent.items()
        )
        if done and not c.has_output and not s.has_output:
            break
        assert progress, "no side could move: a deadlock"
    else:
        raise AssertionError("the exchange did not finish")
    for key, data in sent.items():
        assert bytes(got.get(key, b"")) == data, f"stream {key}"


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    seed=st.integers(0, 2**32),
    n_streams=st.integers(1, 8),
    window_extra=st.sampled_from([0, 1, 4096, 256 * KIB]),
    chunk=st.sampled_from([1, 7, 1024, 16 * KIB]),
    max_len=st.sampled_from([1, 100, 5000, 300 * KIB]),
)
def test_random_interleavings_deliver_every_byte_in_order(seed, n_streams, window_extra, chunk, max_len):
    assume(chunk >= 1024 or max_len <= 5000)  # a frame per byte of 300 KiB proves nothing more, slowly
    run_exchange(seed, n_streams, wire.INITIAL_WINDOW + window_extra, chunk, max_len)


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=200))
def test_random_bytes_never_raise_anything_but_mux_error(data):
    s = MuxEngine(client=False)
    try:
        s.feed(data)
    except MuxError:
        pass


# -- output without copies ------------------------------------------------------------------


def test_a_large_write_goes_out_as_the_writers_own_bytes_and_a_mutable_buffer_as_a_copy():
    c, s = pair(window=1 << 20, chunk=64 * KIB)
    sid = c.open()
    s.feed(c.take_output())
    s.accept(sid)  # the ACK grants the window beyond the initial 256 KiB
    c.feed(s.take_output())
    big = random.Random(1).randbytes(300 * KIB)
    assert c.write(sid, big) == len(big)
    parts = c.take_parts()
    data = [p for p in parts if len(p) > 12]
    assert len(data) == 5 and all(isinstance(p, memoryview) and p.obj is big for p in data)  # 64 KiB turns, uncopied
    mutable = bytearray(b"before")
    assert c.write(sid, mutable) == 6
    mutable[:] = b"after!"  # the caller reuses its buffer once write returned
    events = s.feed(b"".join(parts) + c.take_output())
    assert b"".join(e.data for e in events if isinstance(e, StreamData)) == big + b"before"


@settings(max_examples=60, deadline=None)
@given(
    sizes=st.lists(st.integers(1, 5000), min_size=1, max_size=30),
    chunk=st.integers(1, 9000),
    limit=st.sampled_from([None, 1, 100, 10_000]),
    max_parts=st.integers(1, 40),
)
def test_parts_taken_in_any_steps_carry_every_byte_in_order(sizes, chunk, limit, max_parts):
    rng = random.Random(sum(sizes))
    c, s = pair(window=1 << 20, chunk=chunk)
    sid = c.open()
    written = []
    for size in sizes:
        data = rng.randbytes(size)
        written.append(data)
        kind = size % 3
        assert c.write(sid, data if kind == 0 else memoryview(data) if kind == 1 else bytearray(data)) == size
    c.close(sid)
    got, ended = bytearray(), False
    while c.has_output:
        for event in s.feed(b"".join(c.take_parts(limit, max_parts))):
            if isinstance(event, StreamData):
                got += event.data
            ended |= isinstance(event, StreamEnded)
    assert got == b"".join(written) and ended
    assert c.queued == 0
