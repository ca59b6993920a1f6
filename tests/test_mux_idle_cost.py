"""What an idle channel costs in memory, on each side: the 2 KiB target of ``links.mux``.

A channel is a whole connection (its own protocol instance, framer, messenger, outbound path,
handles), so thousands idling on one TCP connection cost thousands of those. The figure that
counts is the RSS per channel (``benchmarks/system/mux.py --parts memory``, reported in
benchmarks/RESULTS.md); here the bytes Python allocated for them, which tracemalloc counts
exactly: open a few channels first (so what is made once per connection is made), then
``COUNT`` more, and divide what the second batch kept by ``COUNT``. Each side is measured alone,
against a peer that is a plain socket speaking yamux by hand (``helpers_yamux``), so the other
side's links objects do not count.

The bound is the target plus a little headroom for other Python versions (object layouts
differ by a few bytes between them); on CPython 3.11 an idle channel costs about 1.9 KB a side.
"""

from __future__ import annotations

import gc
import socket
import tracemalloc
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from helpers_yamux import ACK, RawPeer

import links

COUNT = 500
WARM = 10
BOUND = 2048 + 160  # bytes per idle channel: the 2 KiB target, and some headroom
WAIT = 10.0


class Raw(links.Protocol):
    framer = links.LengthPrefixFramer(header_size=4)
    messenger = links.RawMessenger()


@contextmanager
def traced() -> Iterator[Callable[[], int]]:
    """Bytes allocated (and still held) since entering, as a function to call at the end."""
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.take_snapshot()

        def grown() -> int:
            gc.collect()
            after = tracemalloc.take_snapshot()
            return sum(stat.size_diff for stat in after.compare_to(before, "filename"))

        yield grown
    finally:
        tracemalloc.stop()


def test_an_idle_channel_costs_its_opener_less_than_2_kib(poll, timer):
    with socket.create_server(("127.0.0.1", 0)) as listener:
        mux = links.mux.connect(f"127.0.0.1:{listener.getsockname()[1]}", poll_handler=poll, timer=timer, timeout=WAIT)
        sock, _ = listener.accept()
        channels: list[links.Clt] = []
        with RawPeer(sock), mux:
            try:
                # Opening takes no answer from the peer (data may flow before the ACK): the
                # peer only has to stay connected. What one connection makes once, made here.
                channels += [mux.open(protocol=Raw, timeout=WAIT) for _ in range(WARM)]
                with traced() as grown:
                    channels += [mux.open(protocol=Raw, timeout=WAIT) for _ in range(COUNT)]
                    per_channel = grown() / COUNT
                assert all(ch.is_connected() for ch in channels)
            finally:
                for ch in channels:
                    ch.close()
    assert per_channel <= BOUND, f"{per_channel:.0f} bytes per idle channel (bound {BOUND})"


def test_an_idle_channel_costs_the_service_less_than_2_kib(poll, timer):
    svc = links.Svc.bind(
        "127.0.0.1:0", protocol=Raw, poll_handler=poll, timer=timer, mux=True, max_channels=COUNT + WARM,
        handshake_timeout=None,  # idle on purpose: no first-message deadline
    )  # fmt: skip
    sender = svc.into_sender_with_spawned_recver()
    try:
        with RawPeer.dial(svc.local_addr) as peer:

            def open_channels(ids: range) -> None:
                for stream_id in ids:
                    peer.open(stream_id)
                for stream_id in ids:
                    peer.expect(stream_id, ACK)  # made and accepted...
                poll.sync()  # ... and pooled, in the same pass of the poll thread

            open_channels(range(1, 2 * WARM, 2))
            with traced() as grown:
                open_channels(range(2 * WARM + 1, 2 * (WARM + COUNT), 2))
                per_channel = grown() / COUNT
            assert len(sender) == WARM + COUNT
    finally:
        svc.close()
    assert per_channel <= BOUND, f"{per_channel:.0f} bytes per idle channel (bound {BOUND})"
