"""Channels end to end over the in-memory socket, with hypothesis choosing the shapes.

The whole stack runs (the poll thread as the one reader, the driver, stream transports,
each channel's own engine) over ``links.testing.memory_socket_pair``, whose ends deliver
at most ``chunk_size`` bytes per read and hold ``capacity`` bytes: random chunk boundaries,
small socket buffers, random windows and chunk sizes, many channels at once. Every message
comes back whole and in order on its channel, and nothing deadlocks (every wait is bounded).

The last test sends one message larger than the physical socket takes at once, over the
double and over loopback TCP with the smallest buffers, with the physical connection's
``max_outbound=0``: the driver hands the engine's output on in steps, each written as the
socket makes room.
"""

from __future__ import annotations

import random
import socket

import pytest
from helpers import errors_in_threads
from hypothesis import HealthCheck, given, settings, strategies as st

import links
from links.mux import Carrier
from links.testing import memory_socket_pair

WAIT = 10.0
# Message sizes by the socket's chunk_size: cut into reads of 1 or 7 bytes, a message costs the
# poll thread a wakeup per read, so those examples send smaller ones (the test stays within
# ~30 s; with 25 examples it took 4 to 15 s).
SIZES = {1: [1, 10, 1000, 4000], 7: [1, 10, 1000, 20_000]}
LARGE = [1, 10, 1000, 70_000, 300_000]  # 300 KB: more than the default window of a channel


class Frames(links.Protocol):
    framer = links.LengthPrefixFramer(header_size=4, max_frame_size=4 + (1 << 20))
    messenger = links.RawMessenger()


class Echo(Frames):
    def send_reply(self, msg, con):
        con.send(msg)  # owed, never refused: the echo side's max_outbound is large


def exchange(seed: int, channels: int, chunk_size: int, capacity: int, window_extra: int, mux_chunk: int) -> None:
    rng = random.Random(seed)
    poll, timer = links.PollHandler("mem-poll"), links.Timer(name="mem-timer")
    a, b = memory_socket_pair(capacity=capacity, chunk_size=chunk_size)
    runtime = {"poll_handler": poll, "timer": timer}
    window = 256 * 1024 + window_extra
    server = client = None
    try:
        server = Carrier.from_socket(b, client=False, protocol=Echo, window=window, chunk=mux_chunk, max_outbound=1 << 26, **runtime)
        client = Carrier.from_socket(a, client=True, window=window, chunk=mux_chunk, **runtime)
        stores = [links.StoreCallback() for _ in range(channels)]
        sent: list[list[bytes]] = []
        senders = []
        for store in stores:
            ch = client.open(protocol=Frames, callback=store, timeout=WAIT)
            senders.append(ch.into_sender_with_spawned_recver())
            sizes = SIZES.get(chunk_size, LARGE)
            sent.append([rng.randbytes(rng.choice(sizes)) for _ in range(rng.randint(1, 6))])

        def send(i: int) -> None:
            for msg in sent[i]:
                assert senders[i].send(msg, timeout=WAIT) is links.SendStatus.COMPLETED

        errors = errors_in_threads(send, channels, WAIT)
        assert not errors, errors
        for i, store in enumerate(stores):
            last = sent[i][-1]
            n = len(sent[i])
            store.find_recv(lambda m, s=store, n=n: len(s.recv_msgs()) >= n, timeout=WAIT)
            assert store.recv_msgs() == sent[i], f"channel {i}: {len(store.recv_msgs())} of {n}, last ok: {store.recv_msgs()[-1:] == [last]}"
        for s in senders:
            s.close()
    finally:
        for carrier in (client, server):
            if carrier is not None:
                carrier.close()
        poll.shutdown()
        timer.shutdown()
        a.close()
        b.close()


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    seed=st.integers(0, 2**32),
    channels=st.integers(1, 6),
    chunk_size=st.sampled_from([1, 7, 512, 65536, None]),
    capacity=st.sampled_from([64, 4096, 1 << 20]),
    window_extra=st.sampled_from([0, 1, 1 << 20]),
    mux_chunk=st.sampled_from([1024, 16 * 1024, 256 * 1024]),
)
def test_every_message_comes_back_whole_and_in_order_on_its_channel(seed, channels, chunk_size, capacity, window_extra, mux_chunk):
    exchange(seed, channels, chunk_size, capacity, window_extra, mux_chunk)


def _memory_pair():
    return memory_socket_pair(capacity=4096)


def _tcp_pair():
    """Two ends of a loopback TCP connection with send and receive buffers as small as allowed."""
    with socket.create_server(("127.0.0.1", 0)) as listener:
        a = socket.socket()
        for end in (a, listener):  # an accepted socket inherits the listener's buffer sizes
            end.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 1)
            end.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1)
        a.connect(listener.getsockname())
        b, _ = listener.accept()
    return a, b


@pytest.mark.timeout(30)
@pytest.mark.parametrize("make_pair", [_memory_pair, _tcp_pair], ids=["memory", "tcp"])
def test_a_message_larger_than_the_socket_takes_gets_through(poll, timer, make_pair):
    """The physical connection owes what its socket did not take, the poll thread writes it as
    room comes, and then the driver hands on more of the engine's output: what the socket does
    not take of that is owed and written in turn (with max_outbound=0, at every step)."""
    a, b = make_pair()
    store = links.StoreCallback()
    runtime = {"poll_handler": poll, "timer": timer}
    server = client = None
    try:
        server = Carrier.from_socket(b, client=False, protocol=Frames, callback=store, window=1 << 20, **runtime)
        client = Carrier.from_socket(a, client=True, window=1 << 20, max_outbound=0, **runtime)
        channel = client.open(protocol=Frames, timeout=WAIT)
        msg = random.Random(1).randbytes(300_000)
        assert channel.send(msg, timeout=WAIT) is links.SendStatus.COMPLETED
        assert store.find_recv(timeout=WAIT) == msg
        channel.close()
    finally:
        for carrier, sock in ((client, a), (server, b)):
            if carrier is not None:
                carrier.close()  # and its socket, once written what it owes
            else:
                sock.close()
