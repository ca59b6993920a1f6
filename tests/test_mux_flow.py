"""Channels (``links.mux``) under back-pressure and loss, on real loopback sockets.

One channel whose peer grants no window stops its own sender and no other; a channel with
megabytes in flight does not hold up another's small messages; a peer's GO_AWAY stops new
channels but not open ones; and a TCP connection lost under its channels ends every one of
them, waking whoever waits on them.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from helpers import Json, waiting_call
from helpers_yamux import ACK, DATA, GO_AWAY, PING, SYN, WINDOW, WINDOW_UPDATE, RawPeer, header, json_frame

import links
from links.testing import FaultProxy

WAIT = 5.0
COMPLETED, WOULD_BLOCK = links.SendStatus.COMPLETED, links.SendStatus.WOULD_BLOCK


class Echo(Json):
    def send_reply(self, msg, con):
        con.send(msg)


class Bulk(links.Protocol):
    """Raw bytes behind a 4-byte length, up to 32 MiB."""

    framer = links.LengthPrefixFramer(header_size=4, max_frame_size=32 << 20)
    messenger = links.RawMessenger()


class BulkEcho(Bulk):
    def send_reply(self, msg, con):
        con.send(msg)


@contextmanager
def raw_server(poll, timer) -> Iterator[tuple[links.mux.Mux, RawPeer]]:
    """A links client (``links.mux.connect``) of a yamux server spoken by hand; the peer's
    ``listener`` stays open for more connections."""
    with socket.create_server(("127.0.0.1", 0)) as listener:
        listener.settimeout(WAIT)
        mux = links.mux.connect(f"127.0.0.1:{listener.getsockname()[1]}", poll_handler=poll, timer=timer, timeout=WAIT)
        try:
            sock, _ = listener.accept()
            with RawPeer(sock) as peer:
                peer.listener = listener
                yield mux, peer
        finally:
            mux.close()


def accept(peer: RawPeer, *stream_ids: int) -> None:
    """Read each stream's SYN and answer with its ACK, as a server does."""
    for sid in stream_ids:
        peer.expect(sid, SYN)
        peer.send(header(WINDOW_UPDATE, ACK, sid, 0))


def next_data(peer: RawPeer):
    """The next DATA frame, whichever its stream (PINGs, window updates skipped)."""
    while (frame := peer.read_frame()) is not None:
        if frame.kind == DATA:
            return frame
        assert frame.kind in (PING, WINDOW_UPDATE), frame
    raise AssertionError("the connection ended")


# -- back-pressure --------------------------------------------------------------------------

MAX_OUTBOUND = 64 * 1024


def test_a_channel_whose_peer_grants_no_window_would_block_and_another_carries_on(poll, timer):
    with raw_server(poll, timer) as (mux, peer):
        a = mux.open(protocol=Json, timeout=WAIT, max_outbound=MAX_OUTBOUND)
        b = mux.open(protocol=Json, timeout=WAIT)
        accept(peer, 1, 3)
        msg = {"fill": "x" * 1000}
        size = len(json_frame(msg))

        taken = 0
        while a.send(msg, timeout=0) is COMPLETED:  # never waits: it takes, or says no
            taken += size
            assert taken < 4 * (WINDOW + MAX_OUTBOUND), "the sender took far more than the window allows"
        # The peer's window went out; what the channel owes its stream waits, up to its max_outbound.
        assert WINDOW + MAX_OUTBOUND <= taken < WINDOW + MAX_OUTBOUND + size
        stream = json_frame(msg) * (taken // size + 1)  # every message taken, and the one to come
        assert peer.data_on(1, WINDOW) == stream[:WINDOW]  # the window's worth, no more (below)

        # The other channel on the same TCP connection: its message is the next DATA out.
        assert b.send({"b": 1}) is COMPLETED
        frame = next_data(peer)
        assert frame.stream_id == 3 and frame.payload == json_frame({"b": 1})
        peer.data(3, frame.payload)
        assert b.recv(timeout=WAIT) == {"b": 1}
        assert a.send(msg, timeout=0) is WOULD_BLOCK  # still

        results: list = []
        waiting = threading.Thread(target=lambda: results.append(a.send(msg, timeout=WAIT)))
        waiting.start()
        assert not results  # nothing can have let it through yet
        peer.grant(1, 1 << 20)  # window at last
        waiting.join(WAIT)
        assert results == [COMPLETED]
        assert peer.data_on(1, len(stream) - WINDOW) == stream[WINDOW:]  # the rest, in order
        a.close()
        b.close()


def test_a_small_message_does_not_wait_behind_a_large_one(poll, timer):
    big = bytes(range(256)) * (16 << 12)  # 16 MiB
    echoes = 10  # about a tenth of what fit before it, measured on loopback
    with links.Svc.bind("127.0.0.1:0", protocol=BulkEcho, poll_handler=poll, timer=timer, mux=True) as svc:
        svc.into_sender_with_spawned_recver()
        addr = f"127.0.0.1:{svc.local_addr[1]}"
        with links.mux.connect(addr, poll_handler=poll, timer=timer, timeout=WAIT) as mux:
            a = mux.open(protocol=Bulk, timeout=WAIT)
            b = mux.open(protocol=Bulk, timeout=WAIT)
            a_echo: list[bytes] = []
            a_back = threading.Event()

            def receive_a() -> None:
                a_echo.append(a.recv(timeout=60))
                a_back.set()

            reader = threading.Thread(target=receive_a)
            reader.start()
            assert a.send(big) is COMPLETED  # taken: owed, and on its way
            for i in range(echoes):
                small = bytes([i]) * 100
                assert b.send(small) is COMPLETED
                assert b.recv(timeout=WAIT) == small
                assert not a_back.is_set(), f"the 16 MiB echo came back before small echo {i + 1}"
            reader.join(60)
            assert a_echo == [big]
            a.close()
            b.close()


# -- the peer's GO_AWAY ---------------------------------------------------------------------


def test_after_the_peers_go_away_open_raises_and_open_channels_carry_on(poll, timer, logs):
    with raw_server(poll, timer) as (mux, peer):
        a = mux.open(protocol=Json, timeout=WAIT)
        accept(peer, 1)
        peer.send(header(GO_AWAY, 0, 0, 0))  # normal: no new stream
        logs.expect("mux.go_away_received", code=0)
        try:
            mux.open(protocol=Json, timeout=WAIT)
        except links.BrokenError as e:
            assert e.reason == "mux.go_away"
        else:
            raise AssertionError("a channel opened after the peer's GO_AWAY")

        assert a.send({"still": "open"}) is COMPLETED
        frame = peer.expect(1, kind=DATA)
        assert frame.payload == json_frame({"still": "open"})
        peer.data(1, json_frame({"and": "answered"}))
        assert a.recv(timeout=WAIT) == {"and": "answered"}
        # Asked for again, the pool dials a new connection: this one takes no new channel.
        with links.mux.connect(f"127.0.0.1:{peer.listener.getsockname()[1]}", poll_handler=poll, timer=timer, timeout=WAIT) as again:
            assert again.con_id != mux.con_id
            peer.listener.accept()[0].close()
        a.close()


# -- the TCP connection lost ----------------------------------------------------------------


def test_a_lost_tcp_connection_ends_every_channel_on_it_and_wakes_a_waiting_recv(poll, timer, logs):
    with links.Svc.bind("127.0.0.1:0", protocol=Echo, poll_handler=poll, timer=timer, mux=True) as svc:
        svc.into_sender_with_spawned_recver()
        with FaultProxy(svc.local_addr) as proxy:
            addr = f"127.0.0.1:{proxy.addr[1]}"
            with links.mux.connect(addr, poll_handler=poll, timer=timer, timeout=WAIT) as mux:
                a, b, c = (mux.open(protocol=Json, timeout=WAIT) for _ in range(3))
                for n, channel in enumerate((a, b, c)):
                    assert channel.send({"n": n}) is COMPLETED
                    assert channel.recv(timeout=WAIT) == {"n": n}
                store = links.StoreCallback()
                spawned = mux.open(protocol=Json, callback=store, timeout=WAIT).into_sender_with_spawned_recver()
                spawned.send({"n": "spawned"})
                assert store.find_recv(lambda m: m == {"n": "spawned"}, timeout=WAIT)
                on_server = svc.con_ids()
                assert len(on_server) == 4
                waiter, raised = waiting_call(lambda: a.recv(timeout=60))

                assert proxy.reset() == 1
                waiter.join(WAIT)
                assert not waiter.is_alive(), "a recv waiting on a channel did not wake"
                assert [e.reason for e in raised] == ["mux.connection_lost"]
                for channel in (b, c):
                    with pytest.raises(links.BrokenError) as sending:
                        channel.send({"after": "loss"}, timeout=0)
                    with pytest.raises(links.BrokenError) as receiving:
                        channel.recv(timeout=WAIT)
                    assert sending.value.reason == receiving.value.reason == "mux.connection_lost"
                with pytest.raises(links.BrokenError) as sending:
                    spawned.send({"after": "loss"}, timeout=0)  # read by the poll thread, not here
                assert sending.value.reason == "mux.connection_lost"
                for con_id in [ch.con_id for ch in (a, b, c, spawned)] + on_server:  # both ends of every channel
                    logs.expect("clt.disconnected", con_id=str(con_id), reason="mux.connection_lost")
                poll.sync()  # the pool drops a channel once its close is done, on the poll thread
                assert len(svc) == 0
