"""Channels over one TCP connection (``links.mux``), on real loopback sockets."""

from __future__ import annotations

import json
import socket
import struct
import threading

import pytest
from helpers import Json

import links
from links.mux import Mux
from links.mux import _wire as wire

WAIT = 5.0


class Echo(Json):
    """Answers every message with itself, from the poll thread."""

    def send_reply(self, msg, con):
        con.send(msg)


@pytest.fixture
def echo_svc(poll, timer):
    store = links.StoreCallback()
    with links.Svc.bind("127.0.0.1:0", protocol=Echo, callback=store, poll_handler=poll, timer=timer, mux=True) as svc:
        svc.into_sender_with_spawned_recver()
        yield svc, store


def dial(svc, poll, timer, **kwargs) -> Mux:
    return links.mux.connect(f"127.0.0.1:{svc.local_addr[1]}", poll_handler=poll, timer=timer, timeout=WAIT, **kwargs)


def test_channels_are_connections_over_one_tcp_connection(echo_svc, poll, timer):
    svc, store = echo_svc
    with dial(svc, poll, timer) as mux:
        channels = [mux.open(protocol=Json, timeout=WAIT) for _ in range(3)]
        for i, ch in enumerate(channels):
            assert ch.send({"n": i}) is links.SendStatus.COMPLETED
        for i, ch in enumerate(channels):
            assert ch.recv(timeout=WAIT) == {"n": i}
        assert svc.gate.in_use == 1  # one TCP connection
        assert len(svc) == 3  # three channels in the pool
        names = {str(ch.con_id) for ch in channels}
        assert len(names) == 3 and all("#" in name for name in names)
        assert channels[0].con_id.local == channels[1].con_id.local  # the same physical connection
        for ch in channels:
            ch.close()


def test_a_closed_channel_leaves_the_pool_and_the_others_carry_on(echo_svc, poll, timer, logs):
    svc, store = echo_svc
    with dial(svc, poll, timer) as mux:
        a, b = mux.open(protocol=Json, timeout=WAIT), mux.open(protocol=Json, timeout=WAIT)
        for ch, n in ((a, 1), (b, 2)):
            ch.send({"x": n})
            assert ch.recv(timeout=WAIT) == {"x": n}
        assert len(svc) == 2
        a_on_server = next(c for c in svc.con_ids() if c.name.endswith(f"#{a.con_id.name.split('#')[1]}"))
        a.close()
        logs.expect("clt.disconnected", con_id=str(a_on_server))
        assert svc.con_ids() == [c for c in svc.con_ids() if c != a_on_server] and len(svc) == 1
        b.send({"x": 3})
        assert b.recv(timeout=WAIT) == {"x": 3}


def test_spawned_channel_receivers_on_both_sides(echo_svc, poll, timer):
    svc, store = echo_svc
    got = links.StoreCallback()
    with dial(svc, poll, timer) as mux:
        ch = mux.open(protocol=Json, callback=got, timeout=WAIT)
        sender = ch.into_sender_with_spawned_recver()
        for i in range(100):
            sender.send({"i": i})
        assert got.find_recv(lambda m: m == {"i": 99}, timeout=WAIT) == {"i": 99}
        assert got.recv_msgs() == [{"i": i} for i in range(100)]



def test_what_a_channel_was_told_completed_arrives_when_the_last_holder_lets_go_at_once(poll, timer):
    """The service reads nothing until the client has closed its channel and its last handle:
    the channel still owes what the window did not let through, and the pooled connection
    must stay open until that is delivered and read (as a TCP connection closed after
    sending delivers it)."""
    reading = threading.Event()

    class Held(links.CounterCallback):
        def on_recv(self, con_id, msg):
            reading.wait(WAIT)
            super().on_recv(con_id, msg)

    counted = Held()
    with links.PollHandler("test-svc-poll") as svc_poll, links.Svc.bind(
        "127.0.0.1:0", protocol=Json, callback=counted, poll_handler=svc_poll, timer=timer, mux=True
    ) as svc:  # fmt: skip
        svc.into_sender_with_spawned_recver()
        mux = dial(svc, poll, timer)
        ch = mux.open(protocol=Json, timeout=WAIT)
        batch = [{"pad": "x" * 100}] * 100
        for _ in range(35):  # about 400 KB: past the 256 KiB window, and within what a channel may owe
            assert ch.send_many(batch, timeout=WAIT) is links.SendStatus.COMPLETED
        mux.close()  # the channel still holds the connection
        ch.close()  # the last holder
        reading.set()
        assert counted.wait_recv(3500, timeout=WAIT), counted.recv_count


def test_a_channel_whose_data_and_end_come_in_one_read_ends_once_its_data_is_read(poll, timer, logs):
    """A raw yamux peer opens a stream, sends one message and ends the stream, all in one
    write: the service delivers the message, then ends the channel (as a socket's EOF ends a
    connection) and finishes its own side of the stream (FIN)."""
    store = links.StoreCallback()
    with links.Svc.bind("127.0.0.1:0", protocol=Json, callback=store, poll_handler=poll, timer=timer, mux=True) as svc:
        svc.into_sender_with_spawned_recver()
        with socket.create_connection(("127.0.0.1", svc.local_addr[1]), timeout=WAIT) as raw:
            body = json.dumps({"n": 1}).encode()
            message = struct.pack(">I", len(body)) + body
            raw.sendall(wire.frame(wire.WINDOW_UPDATE, wire.SYN, 1, 0) + wire.frame(wire.DATA, wire.FIN, 1, len(message)) + message)
            assert store.find_recv(lambda m: m == {"n": 1}, timeout=WAIT) == {"n": 1}
            logs.expect("clt.disconnected", reason="peer_closed")  # the channel, not the TCP connection
            assert any(flags & wire.FIN and sid == 1 for _, flags, sid in read_frames(raw, until_fin_on=1))


def read_frames(raw: socket.socket, until_fin_on: int) -> list[tuple[int, int, int]]:
    """(type, flags, stream id) of every frame the peer sends, until it sends FIN on
    ``until_fin_on`` (or the socket's timeout passes)."""
    got, buf = [], b""
    while not any(flags & wire.FIN and sid == until_fin_on for _, flags, sid in got):
        try:
            chunk = raw.recv(65536)
        except TimeoutError:
            break
        if not chunk:
            break
        buf += chunk
        while len(buf) >= wire.HEADER_SIZE:
            _, kind, flags, sid, length = wire.HEADER.unpack_from(buf)
            size = wire.HEADER_SIZE + (length if kind == wire.DATA else 0)
            if len(buf) < size:
                break
            got.append((kind, flags, sid))
            buf = buf[size:]
    return got
