"""Large messages into a spawned channel, from a yamux peer spoken by hand, with hypothesis
choosing the shapes: the window the channel grants, the message's size, how the peer cuts it
into DATA frames (any length its credit allows) and how its bytes are cut into writes.

A channel whose reader runs on the poll thread that reads the TCP connection takes each
frame's bytes straight into its receive buffer (``MuxDriver._data``); a message spread over
many frames, whose frame boundaries fall anywhere in it and in the socket's reads, must come
out whole, in order, followed by the next, with the window credited back as it is read.
"""

from __future__ import annotations

import random
import socket
import struct

from helpers_yamux import ACK, DATA, SYN, WINDOW, WINDOW_UPDATE, RawPeer, header
from hypothesis import HealthCheck, given, settings, strategies as st

import links
from links.mux import Carrier

WAIT = 10.0
MIB = 1 << 20


class Frames(links.Protocol):
    framer = links.LengthPrefixFramer(header_size=4, max_frame_size=4 + 3 * MIB)
    messenger = links.RawMessenger()


def send_cut(peer: RawPeer, data: bytes, rng: random.Random) -> None:
    """``data`` in writes of random sizes (1 byte to 200 KB)."""
    at = 0
    while at < len(data):
        n = rng.choice([1, 7, 12, 13, 4096, 65_536, 200_000])
        peer.sock.sendall(data[at : at + n])
        at += n


def send_stream(peer: RawPeer, stream_id: int, data: bytes, credit: int, rng: random.Random) -> int:
    """``data`` on ``stream_id`` in DATA frames of random lengths, never past the credit the
    service granted (waiting for its WINDOW_UPDATEs when it runs out); the credit left."""
    at = 0
    while at < len(data):
        while credit == 0:
            frame = peer.expect(stream_id, kind=WINDOW_UPDATE)
            credit += frame.length
        batch = bytearray()
        while credit and at < len(data):
            n = min(rng.choice([1, 3, 1000, 16_384, 65_536, 300_000, 2 * MIB]), credit, len(data) - at)
            batch += header(DATA, 0, stream_id, n) + data[at : at + n]
            at, credit = at + n, credit - n
        send_cut(peer, bytes(batch), rng)
    return credit


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    seed=st.integers(0, 2**32 - 1),
    window_extra=st.sampled_from([0, 1, 100_000, MIB, 3 * MIB]),
    size=st.sampled_from([1, 70_000, MIB, 2 * MIB + 5, 3 * MIB]),
)
def test_a_large_message_in_frames_and_writes_of_any_size_arrives_whole(poll, timer, seed, window_extra, size):
    rng = random.Random(seed)
    window = WINDOW + window_extra
    big, small = rng.randbytes(size), b"after"
    store = links.StoreCallback()
    listener = socket.create_server(("127.0.0.1", 0))
    carrier = None
    try:
        peer = RawPeer.dial(listener.getsockname())
        accepted, _ = listener.accept()
        carrier = Carrier.from_socket(
            accepted, client=False, protocol=Frames, callback=store, window=window, poll_handler=poll, timer=timer
        )  # fmt: skip
        with peer:
            peer.send(header(WINDOW_UPDATE, SYN, 1, 0))
            ack = peer.expect(1, ACK)  # the channel is spawned; its ACK grants the rest of the window
            assert ack.kind == WINDOW_UPDATE and ack.length == window_extra
            credit = WINDOW + ack.length
            data = struct.pack(">I", len(big)) + big + struct.pack(">I", len(small)) + small
            send_stream(peer, 1, data, credit, rng)
            store.find_recv(lambda m: m == small, timeout=WAIT)
            got = store.recv_msgs()
            assert len(got) == 2 and got[0] == big and got[1] == small
    finally:
        listener.close()
        if carrier is not None:
            carrier.close()
