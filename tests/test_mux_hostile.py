"""Channels (``links.mux``) against peers that break yamux, by hand over raw sockets.

A violation of the protocol for the whole TCP connection ends that connection alone, after a
GO_AWAY saying "protocol error", and every channel it carried; a violation of one channel's
own protocol ends that channel alone. Deadlines, ``max_channels`` and the bound on answers
owed hold against peers that open streams and say nothing, open thousands, or ping without
ever reading. The service, and clients on other TCP connections, carry on throughout.
"""

from __future__ import annotations

import socket
import struct

import pytest
from helpers import Json, PollPasses
from helpers_yamux import (
    ACK,
    DATA,
    FIN,
    GO_AWAY,
    PING,
    PROTOCOL_ERROR,
    RST,
    SYN,
    WINDOW_UPDATE,
    RawPeer,
    header,
    json_frame,
)

import links
from links.mux._engine import DEFAULT_WINDOW

WAIT = 5.0


class Echo(Json):
    def send_reply(self, msg, con):
        con.send(msg)


class Big(Json):
    """The tests' protocol with a limit far above the service's."""

    framer = links.LengthPrefixFramer(header_size=4, max_frame_size=1 << 20)


def serve(poll, timer, **options) -> links.Svc:
    svc = links.Svc.bind("127.0.0.1:0", protocol=Echo, poll_handler=poll, timer=timer, mux=True, **options)
    svc.into_sender_with_spawned_recver()
    return svc


def dial(svc, poll, timer) -> links.mux.Mux:
    return links.mux.connect(f"127.0.0.1:{svc.local_addr[1]}", poll_handler=poll, timer=timer, timeout=WAIT)


def round_trip(channel: links.Clt, msg: object) -> None:
    assert channel.send(msg) is links.SendStatus.COMPLETED
    assert channel.recv(timeout=WAIT) == msg


def greet(peer: RawPeer, stream_id: int, msg: object) -> None:
    """Open ``stream_id`` with a message, and read its echo: its channel is in the pool."""
    peer.open(stream_id)
    peer.data(stream_id, json_frame(msg))
    frame = json_frame(msg)
    assert peer.data_on(stream_id, len(frame)) == frame


def channels_of(svc: links.Svc, peer: RawPeer) -> list[links.ConId]:
    return [c for c in svc.con_ids() if c.peer == peer.addr]


def server_sessions(svc: links.Svc) -> list:
    """The ``MuxDriver`` of each TCP connection the service carries channels on (internal
    state, read for what it holds: its streams, and its engine's)."""
    atts = [sender._con.attachment for sender in svc.mux._carriers.values()]
    return [att.protocol.driver for att in atts if att is not None and att.protocol.driver is not None]


# -- the whole connection -------------------------------------------------------------------

# Stream 1 and 3 are open (and greeted) when each of these comes.
SENT_BEFORE = len(json_frame({"hello": 1}))
FILLER = json_frame("x" * 60_000)  # two of them: unread credit stays under half a window


def more_than_the_window(peer: RawPeer) -> None:
    # The window is given back once half of it was read, so what was sent must stay under
    # half for the overrun to be certain, whatever the channel has read meanwhile.
    # The service grants its channels DEFAULT_WINDOW (the initial window, and more with its ACK).
    peer.data(1, FILLER + FILLER)
    sent = SENT_BEFORE + 2 * len(FILLER)
    assert sent < DEFAULT_WINDOW // 2
    peer.send(header(DATA, 0, 1, DEFAULT_WINDOW - sent + 1), bytes(DEFAULT_WINDOW - sent + 1))


VIOLATIONS = {
    "bad_version": (lambda p: p.send(header(WINDOW_UPDATE, SYN, 5, 0, version=1)), "mux.bad_version"),
    "unknown_type": (lambda p: p.send(header(7, 0, 0, 0)), "mux.bad_type"),
    "syn_on_an_open_stream": (lambda p: p.open(1), "mux.stream_reused"),
    "syn_of_the_server_parity": (lambda p: p.open(4), "mux.stream_reused"),
    "more_than_the_window": (more_than_the_window, "mux.window_exceeded"),
    "window_past_2_32": (lambda p: p.grant(1, 2**32 - 1), "mux.window_overflow"),
    "a_4_gib_data_header": (lambda p: p.send(header(DATA, 0, 1, 2**32 - 1)), "mux.window_exceeded"),
}


@pytest.mark.parametrize("case", list(VIOLATIONS))
def test_a_connection_level_violation_ends_that_connection_alone_after_a_go_away(poll, timer, logs, case):
    attack, reason = VIOLATIONS[case]
    with serve(poll, timer) as svc, dial(svc, poll, timer) as mux, RawPeer.dial(svc.local_addr) as peer:
        healthy = mux.open(protocol=Json, timeout=WAIT)
        round_trip(healthy, {"before": case})
        greet(peer, 1, {"hello": 1})
        greet(peer, 3, {"hello": 1})
        hostile_channels = channels_of(svc, peer)
        assert len(hostile_channels) == 2

        attack(peer)

        frames = peer.rest()  # read to the end: the server closed the connection
        assert frames and frames[-1][:4] == (GO_AWAY, 0, 0, PROTOCOL_ERROR)  # the last word, before the close
        logs.expect("mux.protocol_error", reason=reason)
        for con_id in hostile_channels:
            logs.expect("clt.disconnected", con_id=str(con_id), reason="mux.connection_lost")
        poll.sync()  # the pool drops a channel once its close is done, on the poll thread
        assert channels_of(svc, peer) == []
        assert svc.mux.gate.in_use == 1 and svc.gate.in_use == 1  # the healthy channel and its connection

        round_trip(healthy, {"after": case})
        healthy.close()


def test_a_data_header_past_every_window_is_refused_before_its_payload(poll, timer, logs):
    """Nothing of the declared 4 GiB needs to come: the header alone ends the connection."""
    with serve(poll, timer) as svc, RawPeer.dial(svc.local_addr) as peer:
        greet(peer, 1, {"hello": 1})
        peer.send(header(DATA, 0, 1, 2**32 - 1), b"only this")
        assert [f[:4] for f in peer.rest()] == [(GO_AWAY, 0, 0, PROTOCOL_ERROR)]
        logs.expect("mux.protocol_error", reason="mux.window_exceeded")


def test_a_peer_that_pings_and_never_reads_is_cut_before_the_answers_pile_up(poll, timer, logs):
    """Each PING makes the server owe a frame; a peer that never reads would have it hold
    them all (megabytes a second) until the stall timeout. The engine's bound cuts it."""
    with serve(poll, timer) as svc, dial(svc, poll, timer) as mux:
        healthy = mux.open(protocol=Json, timeout=WAIT)
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # before connecting: a small window
        sock.connect(svc.local_addr)
        with RawPeer(sock) as peer:
            pings = header(PING, SYN, 0, 7) * 10_000
            for _ in range(2_000):  # 240 MB at most: far more than the kernel's buffers take
                if logs.matching("mux.protocol_error"):
                    break
                try:
                    peer.send(pings)
                except OSError:  # cut meanwhile
                    break
            logs.expect("mux.protocol_error", reason="mux.control_flood")
        round_trip(healthy, {"after": "the flood"})
        healthy.close()


# -- one channel ----------------------------------------------------------------------------


def test_a_frame_over_the_channel_limit_resets_that_channel_alone(poll, timer, logs):
    with serve(poll, timer) as svc, dial(svc, poll, timer) as mux:
        big = mux.open(protocol=Big, timeout=WAIT)
        other = mux.open(protocol=Json, timeout=WAIT)
        round_trip(big, {"small": 1})
        round_trip(other, {"n": 1})

        assert big.send({"huge": "x" * 100_000}) is links.SendStatus.COMPLETED  # over the service's 64 KiB
        with pytest.raises(links.BrokenError) as e:
            big.recv(timeout=WAIT)
        assert e.value.reason == "mux.stream_reset"
        logs.expect("frame.too_large")

        round_trip(other, {"n": 2})  # the same TCP connection
        assert len(svc) == 1 and svc.gate.in_use == 1
        other.close()


def test_a_raw_peer_sees_the_rst_of_the_channel_it_broke(poll, timer, logs):
    with serve(poll, timer) as svc, RawPeer.dial(svc.local_addr) as peer:
        greet(peer, 1, {"a": 1})
        greet(peer, 3, {"b": 1})
        peer.data(1, struct.pack(">I", 1 << 20))  # a length over 64 KiB: refused on its header
        peer.expect(1, RST)
        logs.expect("frame.too_large")
        greet(peer, 5, {"c": 1})  # the connection still takes channels
        frame = json_frame({"b": 2})
        peer.data(3, frame)
        assert peer.data_on(3, len(frame)) == frame


# -- deadlines and limits -------------------------------------------------------------------


def test_a_tcp_connection_that_says_nothing_is_closed_after_the_handshake_timeout(poll, timer, logs):
    with serve(poll, timer, handshake_timeout=0.3) as svc, RawPeer.dial(svc.local_addr) as peer:
        timeout = logs.expect("svc.handshake_timeout", handshake_timeout=0.3)
        assert peer.rest() == []  # closed, without a frame
        logs.expect("clt.disconnected", con_id=timeout["con_id"], reason="handshake_timeout")
        assert svc.gate.in_use == 0  # its slot went back (before that was logged)


def test_a_channel_that_sends_no_message_is_closed_after_the_handshake_timeout(poll, timer, logs):
    with serve(poll, timer, handshake_timeout=0.3, max_channels=1) as svc, RawPeer.dial(svc.local_addr) as peer:
        peer.open(1)
        peer.expect(1, ACK)
        poll.sync()  # the ACK goes out just before the channel joins the pool, on the poll thread
        assert svc.mux.gate.in_use == 1
        (channel,) = channels_of(svc, peer)
        timeout = logs.expect("svc.handshake_timeout", handshake_timeout=0.3)
        assert timeout["con_id"] == str(channel)
        peer.expect(1, RST)
        logs.expect("clt.disconnected", con_id=str(channel))
        assert svc.mux.gate.in_use == 0  # its permit went back: the only one there is
        greet(peer, 3, {"in": "time"})  # the TCP connection carries on, and takes a new channel


def test_max_channels_refuses_a_stream_with_rst_until_one_closes(poll, timer, logs):
    with serve(poll, timer, max_channels=2) as svc, RawPeer.dial(svc.local_addr) as peer:
        greet(peer, 1, {"n": 1})
        greet(peer, 3, {"n": 3})
        peer.open(5)
        peer.expect(5, RST)
        logs.expect("svc.rejected", channel=5, max_channels=2)
        assert svc.mux.gate.in_use == 2

        (one, _) = channels_of(svc, peer)
        peer.send(header(WINDOW_UPDATE, FIN, 1, 0))  # stream 1 ends: its channel closes
        logs.expect("clt.disconnected", con_id=str(one))
        greet(peer, 7, {"n": 7})
        assert svc.mux.gate.in_use == 2


def test_thousands_of_syns_beyond_max_channels_are_refused_and_not_kept(poll, timer):
    count = 5000
    with serve(poll, timer, max_channels=2) as svc, RawPeer.dial(svc.local_addr) as peer:
        greet(peer, 1, {"n": 1})
        greet(peer, 3, {"n": 3})
        ids = range(5, 5 + 2 * count, 2)
        peer.send(*(header(WINDOW_UPDATE, SYN, sid, 0) for sid in ids))
        refused = set()
        while len(refused) < count:
            frame = peer.read_frame()
            assert frame is not None, f"the connection ended after {len(refused)} refusals"
            if frame.flags & RST:
                refused.add(frame.stream_id)
        assert refused == set(ids)
        poll.sync()  # a refusal is forgotten just after its RST went out, on the poll thread
        (driver,) = server_sessions(svc)
        assert sorted(driver.streams) == sorted(driver.engine.streams) == [1, 3]  # nothing kept of the refused
        assert svc.mux.gate.in_use == 2
        frame = json_frame({"still": "here"})
        peer.data(3, frame)
        assert peer.data_on(3, len(frame)) == frame



# -- frames in pieces -------------------------------------------------------------------------


def test_frames_trickled_a_byte_per_write_are_read_as_they_come(poll, timer):
    # A yamux header, or a channel's frame inside DATA, cut anywhere is kept until the rest
    # comes: the poll thread reads what came, and does not look again in between (a spin would
    # make thousands of passes where a few a byte are due).
    passes = PollPasses(poll, WAIT)
    with serve(poll, timer) as svc, RawPeer.dial(svc.local_addr) as peer:
        peer.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        greet(peer, 1, {"a": 1})
        msg = json_frame({"b": "x" * 40})
        wire = header(DATA, 0, 1, len(msg)) + msg
        before = passes.count
        for i in range(len(wire)):
            seen = passes.count
            peer.send(wire[i : i + 1])
            passes.after(seen)  # one byte a read, or nearly: the poll thread woke for it
        assert peer.data_on(1, len(msg)) == msg  # echoed whole
        assert passes.count - before <= 4 * len(wire) + 20
        peer.send(wire[:5])  # half a header, then nothing for a while
        assert passes.while_idle(poll) <= 80
        peer.send(wire[5:])
        assert peer.data_on(1, len(msg)) == msg
