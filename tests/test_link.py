"""``Link.next_messages``, the receive path's batch form: how much one call gives, errors in
stream order, stateful messengers kept in step with dispatch, and batch methods that a
subclass's override must not bypass."""

from __future__ import annotations

import socket
from contextlib import ExitStack

import pytest
from helpers import WAIT

import links

FRAMER = links.LengthPrefixFramer(2, max_frame_size=64)


def protocol(messenger: links.Messenger, framer=FRAMER) -> links.Protocol:
    p = links.Protocol()
    p.framer, p.messenger = framer, messenger
    return p


def stream(*payloads: bytes) -> bytes:
    return b"".join(FRAMER.encode(p) for p in payloads)


class Picky(links.RawMessenger):
    """Raw, but a payload starting with ``!`` is hostile."""

    def deserialize(self, payload):
        if bytes(payload[:1]) == b"!":
            raise links.DecodeError("a bang")
        return bytes(payload)


class PickyBatch(Picky):
    def deserialize_many(self, payloads):
        return [self.deserialize(p) for p in payloads]


class Shouting(links.Messenger):
    """Stateful: once told to, decodes in upper case (like a login that changes what follows)."""

    def __init__(self) -> None:
        self.loud = False

    def serialize(self, msg):
        return msg

    def deserialize(self, payload):
        data = bytes(payload)
        return data.upper() if self.loud else data


def take_all(link: links.Link) -> list:
    """Every message and error, in order, the way a driver meets them."""
    got = []
    while True:
        try:
            msgs = link.next_messages()
        except links.ProtocolError as e:
            got.append(type(e))
            continue
        if not msgs:
            return got
        got += msgs


def test_one_call_returns_every_message_of_a_read():
    link = links.Link(protocol(links.RawMessenger()))
    link.receive_data(stream(b"a", b"bb", b"ccc") + FRAMER.encode(b"dddd")[:3])
    assert link.next_messages() == [b"a", b"bb", b"ccc"]
    assert link.next_messages() == []
    link.receive_data(FRAMER.encode(b"dddd")[3:])
    assert link.next_messages() == [b"dddd"]
    assert len(link.buffer) == 0


def test_a_messenger_without_the_batch_form_gets_one_message_per_call_in_step_with_dispatch():
    messenger = Shouting()
    link = links.Link(protocol(messenger))
    link.receive_data(stream(b"switch", b"after", b"later"))
    assert link.next_messages() == [b"switch"]
    messenger.loud = True  # what dispatching "switch" did
    assert link.next_messages() == [b"AFTER"]
    assert link.next_message() == b"LATER"  # the two forms mix freely
    assert link.next_messages() == []


@pytest.mark.parametrize("messenger", [Picky(), PickyBatch()], ids=["one_by_one", "batch"])
def test_a_bad_payload_raises_in_its_place_and_loses_nothing_around_it(messenger):
    link = links.Link(protocol(messenger))
    link.receive_data(stream(b"a", b"b", b"!bad", b"c", b"!worse", b"d"))
    assert take_all(link) == [b"a", b"b", links.DecodeError, b"c", links.DecodeError, b"d"]


@pytest.mark.parametrize("messenger", [links.RawMessenger(), Shouting()], ids=["batch", "one_by_one"])
def test_frames_before_a_frame_too_large_come_out_first_and_the_error_stays(messenger):
    link = links.Link(protocol(messenger))
    link.receive_data(stream(b"a", b"b") + b"\x01\x00")  # declares 256 bytes; at most 64 allowed
    got = []
    while len(got) < 2:
        got += link.next_messages()
    assert got == [b"a", b"b"]
    for _ in range(2):  # the stream cannot be cut past it: it raises every time
        with pytest.raises(links.FrameTooLarge):
            link.next_messages()
        with pytest.raises(links.FrameTooLarge):
            link.next_message()


def test_a_subclass_that_overrides_deserialize_is_not_bypassed_by_the_inherited_batch():
    class Reversed(links.RawMessenger):
        def deserialize(self, payload):
            return bytes(payload)[::-1]

    link = links.Link(protocol(Reversed()))
    link.receive_data(stream(b"ab", b"cd"))
    assert take_all(link) == [b"ba", b"dc"]


def test_a_subclass_that_overrides_payload_is_not_bypassed_by_the_inherited_batch():
    class Trimmed(links.LengthPrefixFramer):
        def payload(self, frame):
            return super().payload(frame)[1:]

    framer = Trimmed(2)
    link = links.Link(protocol(links.RawMessenger(), framer))
    link.receive_data(framer.encode(b"xab") + framer.encode(b"ycd"))
    assert take_all(link) == [b"ab", b"cd"]


def test_a_framer_without_the_batch_form_is_cut_by_the_general_one():
    class Lines:  # the Framer protocol's three methods only, no payloads
        max_frame_size = 64

        def frame_length(self, buf, start, end):
            at = bytes(buf[start:end]).find(b"\n")
            return None if at < 0 else at + 1

        def payload(self, frame):
            return frame[:-1]

        def encode(self, payload):
            return bytes(payload) + b"\n"

    link = links.Link(protocol(links.RawMessenger(), Lines()))
    link.receive_data(b"one\ntwo\nthr")
    assert link.next_messages() == [b"one", b"two"]
    link.receive_data(b"ee\n")
    assert link.next_messages() == [b"three"]


def test_spawned_receiver_keeps_a_stateful_messenger_in_step_with_on_recv(timer, poll):
    """Through the poll thread: each message is dispatched before the next one is decoded."""

    class Switching(links.Protocol):
        framer = FRAMER

        def __init__(self) -> None:
            self.messenger = Shouting()

        def on_recv(self, msg):
            if msg == b"switch":
                self.messenger.loud = True

    store = links.StoreCallback()
    with links.Svc.bind("127.0.0.1:0", protocol=Switching, callback=store, timer=timer, poll_handler=poll) as svc:
        svc.into_sender_with_spawned_recver()
        with links.Clt.connect(f"127.0.0.1:{svc.local_addr[1]}", protocol=Switching, timer=timer, timeout=WAIT) as clt:
            clt.send_many([b"before", b"switch", b"after"])  # one write: one read on the server
            assert store.wait_recv_count(3, WAIT)
    assert store.recv_msgs() == [b"before", b"switch", b"AFTER"]


class Checksummed(links.LengthPrefixFramer):
    """The last body byte sums the others; ``payload`` refuses a frame where it does not."""

    def payload(self, frame):
        body = bytes(frame[2:])
        if sum(body[:-1]) % 256 != body[-1]:
            raise links.DecodeError("bad checksum")
        return body[:-1]

    def payloads(self, buf, start, end, out):  # the framer's own batch form, built on its payload
        return links.split_payloads(self, buf, start, end, out)


def checked(body: bytes, good: bool = True) -> bytes:
    return FRAMER.encode(body + bytes([(sum(body) + (0 if good else 1)) % 256]))


@pytest.mark.parametrize("take", ["next_message", "next_messages"])
def test_a_frame_the_framer_refuses_raises_in_its_place_and_the_stream_goes_on(take):
    link = links.Link(protocol(links.RawMessenger(), Checksummed(2)))
    link.receive_data(checked(b"a") + checked(b"b") + checked(b"c", good=False) + checked(b"d"))
    got = []
    for _ in range(10):  # bounded: a refused frame that is never consumed would loop for ever
        try:
            out = getattr(link, take)()
        except links.DecodeError:
            got.append(links.DecodeError)
            continue
        if out is links.NEED_DATA or out == []:
            break
        got += out if take == "next_messages" else [out]
    else:
        pytest.fail(f"the stream never ended; so far: {got}")
    assert got == [b"a", b"b", links.DecodeError, b"d"]


def test_a_deserialize_many_that_returns_an_iterator_still_drains():
    class Lazy(links.RawMessenger):
        def deserialize_many(self, payloads):
            return map(bytes, payloads)

    link = links.Link(protocol(Lazy()))
    link.receive_data(stream(b"a", b"b"))
    assert link.next_messages() == [b"a", b"b"]
    assert link.next_messages() == []  # empty means empty: a driver's loop ends here


@pytest.mark.parametrize("messenger", [links.RawMessenger, Shouting], ids=["batch", "one_by_one"])
def test_frames_read_before_the_receiver_is_spawned_reach_the_callback_though_the_peer_left(timer, poll, messenger):
    """A user-thread recv read four frames at once and returned the first; the peer has closed
    since. Spawning the receiver still delivers the other three before the end is reported."""

    class Plain(links.Protocol):
        framer = FRAMER

        def __init__(self) -> None:
            self.messenger = messenger()

    store = links.StoreCallback()
    with socket.create_server(("127.0.0.1", 0)) as server:
        mine = socket.create_connection(server.getsockname(), timeout=WAIT)
        with ExitStack() as until_links_owns_it:
            until_links_owns_it.enter_context(mine)
            peer, _ = server.accept()
            data = stream(b"A", b"B", b"C", b"D")
            with peer:
                peer.sendall(data)
            # All of it (and the FIN) is here before links sees the socket: one recv takes it all.
            assert mine.recv(len(data), socket.MSG_PEEK | socket.MSG_WAITALL) == data
            clt = links.Clt.from_socket(mine, links.Role.INITIATOR, protocol=Plain, callback=store, timer=timer,
                                        poll_handler=poll)  # fmt: skip
            until_links_owns_it.pop_all()
        with clt:
            assert clt.recv(timeout=WAIT) == b"A"
            clt.into_sender_with_spawned_recver()
            assert store.wait_recv_count(4, WAIT)
    assert store.recv_msgs() == [b"A", b"B", b"C", b"D"]


def test_spawned_receiver_delivers_a_reads_good_frames_then_ends_on_the_bad_one(timer, poll, logs):
    """The batch path on the poll thread: good frames and a hostile length in one read."""

    class Raw(links.Protocol):
        framer = FRAMER
        messenger = links.RawMessenger()

    store = links.StoreCallback()
    with links.Svc.bind("127.0.0.1:0", protocol=Raw, callback=store, timer=timer, poll_handler=poll) as svc:
        svc.into_sender_with_spawned_recver()
        with socket.create_connection(svc.local_addr, timeout=WAIT) as raw:
            raw.sendall(stream(b"a", b"b") + b"\x01\x00")  # then a length over max_frame_size
            assert raw.recv(1) == b""  # the server ended the connection
    logs.expect("frame.too_large")  # and said why
    assert store.recv_msgs() == [b"a", b"b"]
