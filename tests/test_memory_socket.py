"""The in-memory socket pair: socket semantics, each fault hook, and ``Clt`` over it.

The double is driven with ``send``/``recv`` on user threads only. Spawning a receiver into a
``PollHandler`` needs a real selectable socket, which the double does not claim to be (its
fd never becomes readable); see ``links.testing._memory``.
"""

from __future__ import annotations

import os
import threading
from contextlib import contextmanager

import psutil
import pytest

import links
from links._transport import Transport
from links.testing import memory_socket_pair


class Chat(links.Protocol):
    framer = links.LengthPrefixFramer(header_size=4, max_frame_size=1 << 16)
    messenger = links.JsonMessenger()


def _link() -> links.Link:
    return links.Link(Chat())


def _frames(transport: Transport, link: links.Link, count: int, sizes: list[int] | None = None) -> list:
    """Read ``count`` messages through ``link``, recording each read's size in ``sizes``."""
    out = []
    while len(out) < count:
        msg = link.next_message()
        if msg is not links.NEED_DATA:
            out.append(msg)
            continue
        n = transport.recv_into(link.buffer.writable())
        if n:
            link.buffer.commit(n)
            if sizes is not None:
                sizes.append(n)
        else:
            assert transport.wait_readable(5.0), f"only {len(out)} of {count} messages arrived"
    return out


class _Waiter:
    """Runs a call that waits (up to 10 s) on a thread; ``result()`` insists it was woken early."""

    def __init__(self, fn) -> None:
        self._result: list = []
        self._started = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(fn,))
        self._thread.start()
        self._started.wait(5.0)  # about to wait: what follows must wake it, not precede it

    def _run(self, fn) -> None:
        self._started.set()
        self._result.append(fn())

    def result(self, within: float = 2.0):
        self._thread.join(within)
        assert not self._thread.is_alive(), "the waiting thread was not woken"
        return self._result[0]


@pytest.fixture
def pair():
    a, b = memory_socket_pair(capacity=1024)
    with a, b:
        yield a, b


# -- plain socket semantics ----------------------------------------------------------------


def test_empty_socket_would_block_and_eof_reads_zero_after_the_data(pair):
    a, b = pair
    with pytest.raises(BlockingIOError):
        b.recv(10)
    assert a.send(b"hello") == 5
    a.close()
    assert b.recv(3) == b"hel"
    assert b.recv(10) == b"lo"
    assert b.recv(10) == b""
    with pytest.raises(BrokenPipeError):
        b.send(b"anyone?")


def test_send_writes_partially_up_to_the_free_space(pair):
    a, b = pair
    assert a.send(b"x" * 1000) == 1000
    assert a.send(b"y" * 100) == 24  # 1024-byte buffer
    with pytest.raises(BlockingIOError):
        a.send(b"z")
    assert not a.links_wait(False, 0)
    assert b.recv(600) == b"x" * 600  # more than half free again: writable
    assert a.links_wait(False, 0)


def test_closed_socket_raises_ebadf_and_reports_fileno_minus_one(pair):
    a, _ = pair
    a.close()
    a.close()  # idempotent
    assert a.fileno() == -1
    with pytest.raises(OSError) as e:
        a.recv(1)
    assert e.value.errno == 9  # EBADF


def test_fileno_is_a_real_unique_fd_released_on_close():
    before = psutil.Process().num_fds()
    pairs = [memory_socket_pair() for _ in range(5)]
    fds = {s.fileno() for p in pairs for s in p}
    assert len(fds) == 10
    for fd in fds:
        os.fstat(fd)  # open, owned by this process
    assert psutil.Process().num_fds() == before + 10
    for p in pairs:
        for s in p:
            s.close()
    assert psutil.Process().num_fds() == before


def test_links_wait_wakes_a_waiting_reader_when_data_arrives(pair):
    a, b = pair
    assert not b.links_wait(True, 0.01)
    waiter = _Waiter(lambda: b.links_wait(True, 10.0))
    a.send(b"!")
    assert waiter.result() is True


# -- fault hooks ---------------------------------------------------------------------------


@contextmanager
def _transports(a, b):
    ta, tb = Transport(a), Transport(b)
    try:
        yield ta, tb
    finally:
        ta.close()
        tb.close()


def test_chunk_size_one_still_delivers_every_frame_through_a_link():
    a, b = memory_socket_pair(chunk_size=1)
    msgs = [{"n": i, "pad": "x" * i} for i in range(40)]
    with _transports(a, b) as (ta, tb):
        frames = b"".join(Chat.framer.encode(Chat.messenger.serialize(m)) for m in msgs)
        assert a.send(frames) == 1  # one byte per send...
        assert ta.write(frames[1:], 5.0) is links.SendStatus.COMPLETED  # ...which Transport completes
        sizes: list[int] = []
        assert _frames(tb, _link(), len(msgs), sizes) == msgs
        assert set(sizes) == {1}  # and one byte per read


def test_would_block_refuses_both_directions_until_cleared():
    a, b = memory_socket_pair()
    frame = Chat.framer.encode(b'"hi"')
    with _transports(a, b) as (ta, tb):
        assert tb.write(frame, 0) is links.SendStatus.COMPLETED
        a.would_block = True
        with pytest.raises(BlockingIOError):
            a.send(b"x")
        assert ta.write(frame, 0) is links.SendStatus.WOULD_BLOCK
        assert ta.recv_into(memoryview(bytearray(64))) == 0  # data is there, but "not yet"
        assert not ta.wait_readable(0)
        assert not ta.wait_writable(0)
        with pytest.raises(BlockingIOError):
            b.recv(1)  # the refused write left nothing behind

        blocked = _Waiter(lambda: ta.write(frame, 10.0))
        a.would_block = False  # wakes the blocked writer
        assert blocked.result() is links.SendStatus.COMPLETED
        assert _frames(tb, _link(), 1) == ["hi"]
        assert _frames(ta, _link(), 1) == ["hi"]


def test_eof_lets_the_peer_drain_then_raises_broken_peer_closed():
    a, b = memory_socket_pair()
    with _transports(a, b) as (ta, tb):
        ta.write(Chat.framer.encode(b'"bye"'), 0)
        a.eof()
        link = _link()
        assert _frames(tb, link, 1) == ["bye"]
        with pytest.raises(links.BrokenError) as e:
            tb.recv_into(link.buffer.writable())
        assert e.value.reason == "peer_closed"
        with pytest.raises(links.BrokenError):
            ta.write(Chat.framer.encode(b'"more"'), 0)  # this end's sending is over too


def test_reset_breaks_both_ends_and_wakes_waiters():
    a, b = memory_socket_pair()
    with _transports(a, b) as (ta, tb):
        ta.write(Chat.framer.encode(b'"lost"'), 0)
        waiter = _Waiter(lambda: ta.wait_readable(10.0))
        b.reset()
        assert waiter.result() is True
        for t in (ta, tb):
            with pytest.raises(links.BrokenError) as e:
                t.recv_into(memoryview(bytearray(64)))  # "lost" is gone with the reset
            assert isinstance(e.value.__cause__, ConnectionResetError)
            with pytest.raises(links.BrokenError):
                t.write(Chat.framer.encode(b'"x"'), 0)


def test_reset_reaches_a_clt_on_a_user_thread(timer):
    a, b = memory_socket_pair()
    with b, links.Clt.from_socket(a, links.Role.INITIATOR, protocol=Chat, timer=timer) as clt:
        b.reset()
        with pytest.raises(links.BrokenError):
            clt.recv(timeout=5.0)
        assert not clt.is_connected()


# -- Clt over the double ---------------------------------------------------------------------


@pytest.mark.parametrize("chunk_size", [None, 1], ids=["whole", "chunk1"])
def test_clt_pair_exchanges_messages_on_user_threads(timer, chunk_size):
    a, b = memory_socket_pair(chunk_size=chunk_size)
    client = links.Clt.from_socket(a, links.Role.INITIATOR, protocol=Chat, name="clt", timer=timer)
    server = links.Clt.from_socket(b, links.Role.ACCEPTOR, protocol=Chat, name="svc", timer=timer)
    assert str(client.con_id).startswith("Initiator(clt@memory:")

    def echo() -> None:
        for msg in server:  # ends quietly when the client closes
            server.send({"echo": msg})

    echoer = threading.Thread(target=echo)
    echoer.start()
    try:
        with client:
            for i in range(20):
                assert client.send({"n": i}, timeout=5.0) is links.SendStatus.COMPLETED
                assert client.recv(timeout=5.0) == {"echo": {"n": i}}
    finally:
        echoer.join(5.0)
        server.close()
    assert not echoer.is_alive()
