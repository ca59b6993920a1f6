"""The Sans-I/O parts of links.rpc: envelopes, the msgpack framer and messenger (random splits
of streams, bombs), and the call table (random reply orders, retirement, max_in_flight)."""

from __future__ import annotations

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import links
from links.lowlevel import Link
from links.rpc import (
    BadEnvelope, CallTable, DuplicateId, MsgpackError, MsgpackFramer, MsgpackMessenger, Notification, Request,
    Response, TableFull, Undecodable, decode,
)  # fmt: skip
from links.rpc._msgpack import nesting_depth, payload_is_deep
from links.rpc._wire import encode_notification, encode_request, encode_response

# -- envelopes ----------------------------------------------------------------------------------

scalars = st.one_of(
    st.none(), st.booleans(), st.integers(-(2**63), 2**64 - 1), st.floats(allow_nan=False),
    st.text(max_size=20), st.binary(max_size=20),
)  # fmt: skip
values = st.recursive(
    scalars, lambda inner: st.one_of(st.lists(inner, max_size=5), st.dictionaries(st.text(max_size=5), inner, max_size=5)),
    max_leaves=20,
)  # fmt: skip
msgids = st.integers(0, 2**32 - 1)
methods = st.text(max_size=20)
params = st.lists(values, max_size=4)

envelopes = st.one_of(
    st.builds(lambda i, m, p: (encode_request(i, m, p), Request(i, m, p)), msgids, methods, params),
    st.builds(lambda i, e, r: (encode_response(i, e, r), Response(i, e, r)), msgids, values, values),
    st.builds(lambda m, p: (encode_notification(m, p), Notification(m, p)), methods, params),
)


@given(envelopes)
def test_every_envelope_decodes_to_what_was_encoded(pair):
    data, envelope = pair
    assert decode(msgpack.unpackb(data, raw=False, strict_map_key=False)) == envelope


@pytest.mark.parametrize(
    "value",
    [None, 5, "x", [], {}, [3, 1, "m", []], [0, -1, "m", []], [0, 2**32, "m", []], [0, 1, 5, []], [0, 1, "m", 5],
     [0, 1, "m"], [1, 1, None], [1, "1", None, None], [2, "m"], [2, 5, []], [2, "m", "p"], [True, 1, None, None]],
    ids=repr,
)  # fmt: skip
def test_wrong_shapes_are_refused_with_a_typed_error(value):
    with pytest.raises(BadEnvelope):
        decode(value)


# -- the framer and messenger -------------------------------------------------------------------


class Msgpack(links.Protocol):
    def __init__(self, max_frame_size: int = 1 << 16, **limits) -> None:
        self.framer = MsgpackFramer(max_frame_size=max_frame_size)
        self.messenger = MsgpackMessenger(**limits)


def received(link: Link, chunks: list[bytes], batch: bool) -> list:
    out: list = []
    for chunk in chunks:
        link.receive_data(chunk)
        if batch:
            while msgs := link.next_messages():
                out.extend(msgs)
        else:
            while (msg := link.next_message()) is not links.NEED_DATA:
                out.append(msg)
    return out


def split(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts})
    return [data[a:b] for a, b in zip([0, *points], [*points, len(data)])]


@settings(max_examples=80)
@given(st.lists(envelopes, min_size=1, max_size=30), st.lists(st.integers(0, 10**6), max_size=40), st.booleans())
def test_a_stream_of_envelopes_cut_anywhere_comes_out_whole_and_in_order(pairs, cuts, batch):
    data = b"".join(p[0] for p in pairs)
    link = Link(Msgpack())
    msgs = received(link, split(data, cuts), batch)
    assert [decode(m) for m in msgs] == [p[1] for p in pairs]
    assert link.drained()


@settings(max_examples=50)
@given(st.lists(values, min_size=1, max_size=10))
def test_byte_by_byte_every_value_comes_out_once(vals):
    data = b"".join(msgpack.packb(v) for v in vals)
    assert received(Link(Msgpack()), [data[i : i + 1] for i in range(len(data))], batch=True) == [
        msgpack.unpackb(msgpack.packb(v), raw=False, strict_map_key=False) for v in vals
    ]


def test_a_value_that_grows_past_max_frame_size_is_refused_before_it_is_whole():
    link = Link(Msgpack(max_frame_size=1000))
    link.receive_data(msgpack.packb(b"x" * 5000)[:1001])
    with pytest.raises(links.FrameTooLarge):
        link.next_messages()


def test_a_whole_value_over_max_frame_size_is_refused_after_the_ones_before_it():
    link = Link(Msgpack(max_frame_size=1000))
    link.receive_data(msgpack.packb([1, 2]) + msgpack.packb("y" * 1200))
    assert link.next_messages() == [[1, 2]]
    with pytest.raises(links.FrameTooLarge):
        link.next_messages()


@pytest.mark.parametrize("data", [b"\xc1", b"\x91" * 3000 + b"\xc0"], ids=["reserved byte", "nesting past 1024"])
def test_bytes_that_cannot_be_msgpack_are_a_framing_error(data):
    link = Link(Msgpack())
    link.receive_data(msgpack.packb("ok") + data)
    assert link.next_messages() == ["ok"]
    with pytest.raises(MsgpackError):
        link.next_messages()


@pytest.mark.parametrize(
    "bomb",
    [b"\xdd\xff\xff\xff\xff", b"\xdf\xff\xff\xff\xff", b"\xdb\xff\xff\xff\xff", b"\xc6\xff\xff\xff\xff",
     b"\xdd\x00\x10\x00\x00" * 200],
    ids=["array32", "map32", "str32", "bin32", "nested array32s"],
)  # fmt: skip
def test_a_header_declaring_a_huge_value_allocates_nothing_and_is_cut_at_max_frame_size(bomb):
    # The framer waits for the declared bytes; none of them is decoded before all are there,
    # and they can never all be: the frame passes max_frame_size first.
    link = Link(Msgpack(max_frame_size=4096))
    link.receive_data(bomb)
    assert link.next_messages() == []
    link.receive_data(b"\xc0" * 4096)
    with pytest.raises(links.FrameTooLarge):
        link.next_messages()


@pytest.mark.parametrize(
    ("value", "limits"),
    [([[[[1]]]], {"max_depth": 3}), ("x" * 100, {"max_str_len": 50}), (b"x" * 100, {"max_bin_len": 50}),
     (list(range(100)), {"max_container_len": 50}), ({str(i): i for i in range(100)}, {"max_container_len": 50})],
    ids=["depth", "str", "bin", "array", "map"],
)  # fmt: skip
def test_a_whole_value_over_a_limit_is_undecodable_and_the_stream_goes_on(value, limits):
    link = Link(Msgpack(**limits))
    link.receive_data(msgpack.packb(value) + msgpack.packb("next"))
    first, after = link.next_messages()
    assert type(first) is Undecodable and after == "next"


def test_bad_utf8_and_unhashable_keys_are_undecodable_not_fatal():
    link = Link(Msgpack())
    link.receive_data(b"\xa2\xff\xfe" + b"\x81\x91\x00\x01" + msgpack.packb(7))
    bad_text, bad_key, seven = link.next_messages()
    assert type(bad_text) is Undecodable and type(bad_key) is Undecodable and seven == 7


def reference_depth(value) -> int:
    if isinstance(value, list) and value:
        return 1 + max(reference_depth(v) for v in value)
    if isinstance(value, dict) and value:
        return 1 + max(max(reference_depth(k), reference_depth(v)) for k, v in value.items())
    return 1 if isinstance(value, (list, dict)) else 0


@given(values)
def test_the_depth_walk_agrees_with_the_value(value):
    data = msgpack.packb(value)
    assert nesting_depth(data, 100) == reference_depth(value)
    assert payload_is_deep(data, 3) == (reference_depth(value) > 3)


def test_the_framer_keeps_a_partial_value_and_parses_only_new_bytes():
    # A 200 KB array of small ints dripped 100 bytes at a time: each read resumes where the
    # last stopped (the ReceiveBuffer keeps the frame in place between reads).
    value = list(range(50_000))
    data = msgpack.packb(value)
    link = Link(Msgpack(max_frame_size=1 << 20), read_size=1 << 20)
    msgs = received(link, [data[i : i + 100] for i in range(0, len(data), 100)], batch=True)
    assert msgs == [value]


# -- the call table -------------------------------------------------------------------------------


@given(st.integers(1, 60), st.randoms(use_true_random=False))
def test_replies_in_any_order_complete_each_call_once(n, rng):
    table = CallTable(max_in_flight=n)
    tokens = [object() for _ in range(n)]
    ids = [table.open(t) for t in tokens]
    assert len(set(ids)) == n and table.full
    order = list(range(n))
    rng.shuffle(order)
    for i in order:
        assert table.complete(ids[i]) is tokens[i]
        assert table.complete(ids[i]) is None  # a duplicate reply finds nothing
    assert len(table) == 0


@given(st.lists(st.sampled_from(["open", "reply", "retire", "expire"]), max_size=80), st.randoms(use_true_random=False))
def test_retired_and_expired_calls_never_take_a_reply(ops, rng):
    table = CallTable(max_in_flight=1000)
    live: dict[int, object] = {}
    gone: set[int] = set()
    now = 0.0
    for op in ops:
        now += 1.0
        if op == "open":
            token = object()
            live[table.open(token, deadline=now + rng.choice([0.5, 3.0, 10.0]))] = token
        elif live and op in ("reply", "retire"):
            msgid = rng.choice(sorted(live))
            token = live.pop(msgid)
            assert (table.complete(msgid) if op == "reply" else table.retire(msgid, token)) is token
            if op == "retire":
                gone.add(msgid)
        elif op == "expire":
            for token in table.expire(now):
                msgid = next(k for k, v in live.items() if v is token)
                del live[msgid]
                gone.add(msgid)
        for msgid in gone:
            assert table.complete(msgid) is None and table.was_retired(msgid)
    assert set(table.pending) == set(live)


def test_max_in_flight_refuses_and_ids_wrap_around_past_pending_ones():
    table = CallTable(max_in_flight=2)
    table._next = 2**32 - 1
    first = table.open("a")
    second = table.open("b")
    assert (first, second) == (2**32 - 1, 0)
    with pytest.raises(TableFull):
        table.open("c")
    table.complete(first)
    table._next = 0  # the next id is taken: skipped
    assert table.open("c") == 1


def test_ids_of_your_own_must_be_unique_among_pending_calls():
    table = CallTable()
    table.add("order-1", "a")
    with pytest.raises(DuplicateId):
        table.add("order-1", "b")


def test_deadline_entries_of_finished_calls_do_not_pile_up():
    table = CallTable(max_in_flight=10)
    for i in range(10_000):
        table.complete(table.open(i, deadline=1e9 + i))
    assert len(table._heap) <= 130


def test_fail_all_hands_back_every_pending_token_and_remembers_their_ids():
    table = CallTable()
    ids = [table.open(t) for t in "abc"]
    table.open("late", deadline=5.0)
    assert sorted(table.fail_all()) == ["a", "b", "c", "late"]
    assert len(table) == 0 and table.next_deadline is None and all(table.was_retired(i) for i in ids)


def test_expire_hands_back_calls_in_deadline_order():
    table = CallTable()
    table.open("later", deadline=3.0)
    table.open("sooner", deadline=1.0)
    table.open("never")
    assert table.next_deadline == 1.0
    assert table.expire(2.0) == ["sooner"]
    assert table.expire(5.0) == ["later"]
    assert table.next_deadline is None and list(table.pending.values()) == ["never"]


# -- the runtime's deadlines, on a fake clock ------------------------------------------------------


class Collect:
    """A stand-in connection: what is sent is kept."""

    con_id = "fake"

    def __init__(self, timer) -> None:
        self.timer = timer
        self.sent: list = []

    def send(self, msg, timeout=None):
        self.sent.append(msgpack.unpackb(msg))
        return links.SendStatus.COMPLETED

    def send_many(self, msgs, timeout=None):
        for msg in msgs:
            self.send(msg)
        return links.SendStatus.COMPLETED


def test_call_async_deadlines_expire_on_the_timers_clock_earliest_first():
    from links.rpc import CallTimeout, Peer
    from links.testing import FakeClock

    clock = FakeClock()
    timer = links.Timer(clock=clock, thread=False)
    peer = Peer(timer=timer)
    proto = peer.protocol()
    con = Collect(timer)
    proto.on_connect(con)
    slow = peer.call_async("m", timeout=10.0)
    quick = peer.call_async("m", timeout=1.0)  # earlier than the alarm set: the alarm moves
    answered = peer.call_async("m", timeout=1.0)
    proto.on_recv([1, con.sent[2][1], None, "yes"])
    clock.advance(0.5)
    timer.run_due()
    assert not quick.done() and answered.result(0) == "yes"
    clock.advance(0.6)
    timer.run_due()
    assert isinstance(quick.exception(0), CallTimeout) and not slow.done()
    clock.advance(9.0)
    timer.run_due()
    assert isinstance(slow.exception(0), CallTimeout) and peer.in_flight == 0
    proto.on_recv([1, con.sent[0][1], None, "late"])  # a late reply finds nothing
    assert peer.calls.table.was_retired(con.sent[0][1])
    timer.shutdown()
