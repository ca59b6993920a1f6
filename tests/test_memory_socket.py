"""The in-memory socket pair: socket semantics, each fault hook, and ``Clt`` over it.

The double's fd is readable and writable exactly when the double is (what ``links_wait``
says), so a selector serves it like a real socket: a receiver spawned into a ``PollHandler``
is woken to read, and the poll thread finishes owed bytes without spinning (the last
sections); see ``links.testing._memory``.
"""

from __future__ import annotations

import os
import random
import select
import selectors
import socket
import threading
from contextlib import contextmanager

import psutil
import pytest

import links
from links._reader import AttachmentReader
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
    pairs = [memory_socket_pair(capacity=16) for _ in range(5)]
    fds = {s.fileno() for p in pairs for s in p}
    assert len(fds) == 10
    for fd in fds:
        os.fstat(fd)  # open, owned by this process
    assert psutil.Process().num_fds() == before + 20  # each end: its placeholder and the drain
    pairs[0][0].send(b"x" * 16)  # a full placeholder is released all the same
    pairs[1][1].would_block = True
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


class EchoChat(Chat):
    def send_reply(self, msg, con):
        con.send({"echo": msg})


@pytest.mark.timeout(30)
@pytest.mark.parametrize("chunk_size", [None, 1], ids=["whole", "chunk1"])
def test_clt_pair_with_receivers_spawned_into_a_poll_handler_gets_every_message(poll, timer, chunk_size):
    """Both ends read on the poll thread, woken by their fds alone: the client's sends reach
    the echoing server and every echo reaches the client's callback, in order."""
    a, b = memory_socket_pair(capacity=1024, chunk_size=chunk_size)
    store = links.StoreCallback()
    runtime = {"poll_handler": poll, "timer": timer}
    client = links.Clt.from_socket(a, links.Role.INITIATOR, protocol=Chat, callback=store, **runtime)
    server = links.Clt.from_socket(b, links.Role.ACCEPTOR, protocol=EchoChat, **runtime)
    sender = client.into_sender_with_spawned_recver()
    echoer = server.into_sender_with_spawned_recver()
    try:
        msgs = [{"n": i, "pad": "x" * (i % 300)} for i in range(200)]  # some span the 1 KiB buffer
        for msg in msgs:
            assert sender.send(msg, timeout=5.0) is links.SendStatus.COMPLETED
        last = {"echo": msgs[-1]}
        assert store.find_recv(lambda m: m == last, timeout=10.0) == last
        assert store.recv_msgs() == [{"echo": m} for m in msgs]
    finally:
        sender.close()
        echoer.close()


# -- the fd's readiness, as a selector sees it -------------------------------------------------

_IN = select.POLLIN | select.POLLPRI | select.POLLHUP | select.POLLERR


class _Watch:
    """One end's fd, registered once for reading and writing with a real ``select.poll``
    object or a ``selectors.DefaultSelector`` (epoll), and asked without waiting."""

    def __init__(self, kind: str, sock) -> None:
        self.fd = sock.fileno()
        if kind == "poll":
            self._poll = select.poll()
            self._poll.register(self.fd, select.POLLIN | select.POLLOUT)
            self._selector = None
        else:
            self._selector = selectors.DefaultSelector()
            self._selector.register(self.fd, selectors.EVENT_READ | selectors.EVENT_WRITE)

    def ready(self) -> tuple[bool, bool]:
        """(readable, writable) now."""
        if self._selector is None:
            events = dict(self._poll.poll(0)).get(self.fd, 0)
            return bool(events & _IN), bool(events & select.POLLOUT)
        events = 0
        for key, mask in self._selector.select(0):
            if key.fd == self.fd:
                events = mask
        return bool(events & selectors.EVENT_READ), bool(events & selectors.EVENT_WRITE)

    def close(self) -> None:
        if self._selector is not None:
            self._selector.close()


@pytest.fixture(params=["poll", "selector"])
def watch(request):
    """``watch(sock)``: a ``_Watch`` on ``sock`` through the parametrized kind, closed after."""
    made: list[_Watch] = []

    def make(sock) -> _Watch:
        made.append(_Watch(request.param, sock))
        return made[-1]

    yield make
    for w in made:
        w.close()


NOT_WRITABLE, WRITABLE = (False, False), (False, True)  # (readable, writable), nothing to read
READABLE, BLOCKED = (True, True), (False, False)  # with room; and held back by would_block


def _wanted(sock) -> tuple[bool, bool]:
    """(readable, writable) as the double itself reports it, without waiting."""
    return sock.links_wait(True, 0), sock.links_wait(False, 0)


def test_fd_is_writable_only_while_the_peers_buffer_has_room(pair, watch):
    a, b = pair
    wa, wb = watch(a), watch(b)
    assert wa.ready() == WRITABLE
    assert a.send(b"x" * 1024) == 1024  # the peer's buffer is full
    assert wa.ready() == NOT_WRITABLE
    assert wb.ready() == READABLE  # the other direction has room
    assert b.recv(100) == b"x" * 100
    assert wa.ready() == NOT_WRITABLE  # under half free: links_wait(False) would wait too
    assert not a.links_wait(False, 0)
    assert b.recv(500) == b"x" * 500  # 600 of 1024 free
    assert wa.ready() == WRITABLE
    assert a.links_wait(False, 0)
    assert a.send(b"y" * 100) == 100  # 500 free: below half again
    assert wa.ready() == NOT_WRITABLE
    assert len(b.recv(2048)) == 524
    assert wa.ready() == WRITABLE
    assert wb.ready() == WRITABLE  # all read: nothing left to read
    for sock, w in ((a, wa), (b, wb)):
        assert w.ready() == _wanted(sock)


def test_fd_is_not_writable_while_would_block_is_set(pair, watch):
    a, b = pair
    wa = watch(a)
    a.would_block = True
    assert wa.ready() == NOT_WRITABLE
    a.would_block = False
    assert wa.ready() == WRITABLE
    a.send(b"x" * 1024)
    a.would_block = True
    b.recv(1024)  # room, but the hook still holds
    assert wa.ready() == NOT_WRITABLE
    a.would_block = False
    assert wa.ready() == WRITABLE
    a.send(b"x" * 1024)
    a.would_block = True
    a.would_block = False  # cleared, but the peer's buffer is still full
    assert wa.ready() == NOT_WRITABLE
    assert wa.ready() == _wanted(a)


def test_fd_is_readable_while_bytes_wait_and_at_the_end_of_the_stream(pair, watch):
    a, b = pair
    wb = watch(b)
    assert wb.ready() == WRITABLE
    a.send(b"hi")
    assert wb.ready() == READABLE == _wanted(b)
    b.would_block = True  # the hook hides the bytes, from the fd as from recv and links_wait
    assert wb.ready() == BLOCKED == _wanted(b)
    a.send(b"!")
    assert wb.ready() == BLOCKED
    b.would_block = False
    assert wb.ready() == READABLE
    assert b.recv(2) == b"hi"
    assert wb.ready() == READABLE  # one byte left
    assert b.recv(10) == b"!"
    assert wb.ready() == WRITABLE == _wanted(b)  # drained
    a.shutdown(socket.SHUT_WR)
    assert wb.ready() == READABLE == _wanted(b)  # the end of the stream reads at once, as EOF
    assert b.recv(10) == b""
    assert wb.ready() == READABLE  # and stays readable
    b.would_block = True
    assert wb.ready() == BLOCKED == _wanted(b)


def test_fd_turns_readable_after_the_own_shut_rd(pair, watch):
    a, b = pair
    wb = watch(b)
    b.shutdown(socket.SHUT_RD)
    assert wb.ready() == READABLE == _wanted(b)
    assert b.recv(10) == b""


_ENDINGS = {
    "peer_closes": lambda a, b: b.close(),
    "peer_shuts_reading": lambda a, b: b.shutdown(socket.SHUT_RD),
    "peer_resets": lambda a, b: b.reset(),
    "own_reset": lambda a, b: a.reset(),
    "own_eof": lambda a, b: a.eof(),
    "own_shut_writing": lambda a, b: a.shutdown(socket.SHUT_WR),
}
# Whether the ending leaves this end with something to read at once: EOF, or the reset's error.
_READS_AFTER = {"peer_closes": True, "peer_resets": True, "own_reset": True}


@pytest.mark.parametrize("ending", list(_ENDINGS))
@pytest.mark.parametrize("stuck", ["full", "would_block"])
def test_fd_turns_writable_when_the_connection_ends_and_send_then_fails(pair, watch, ending, stuck):
    a, b = pair
    wa = watch(a)
    if stuck == "full":
        a.send(b"x" * 1024)
    else:
        a.would_block = True
    assert wa.ready() == NOT_WRITABLE
    _ENDINGS[ending](a, b)
    if stuck == "would_block" and "reset" not in ending:
        # The hook comes before EPIPE and EOF, in send() and recv() as in waits: nothing yet.
        assert wa.ready() == BLOCKED == _wanted(a)
        with pytest.raises(BlockingIOError):
            a.send(b"more")
        a.would_block = False
    # Like a real socket: the next send fails at once, and so does a read that has an end to see.
    assert wa.ready() == (_READS_AFTER.get(ending, False), True) == _wanted(a)
    with pytest.raises((BrokenPipeError, ConnectionResetError)):
        a.send(b"more")


_ENDS = (
    lambda end: end.shutdown(socket.SHUT_RD),
    lambda end: end.shutdown(socket.SHUT_WR),
    lambda end: end.eof(),
    lambda end: end.reset(),
)


@pytest.mark.parametrize("seed", range(4))
def test_fd_readiness_agrees_with_links_wait_through_random_operations(watch, seed):
    rng = random.Random(seed)
    a, b = memory_socket_pair(capacity=64)
    seen: set[tuple[bool, bool]] = set()
    with a, b:
        ends = {a: watch(a), b: watch(b)}
        for step in range(1500):
            end = rng.choice((a, b))
            op = rng.random()
            try:
                if op < 0.4:
                    end.send(b"x" * rng.randint(1, 80))
                elif op < 0.8:
                    end.recv(rng.randint(1, 80))
                elif op < 0.95:
                    end.would_block = not end.would_block
                elif op < 0.998:
                    end.chunk_size = rng.choice((None, 1, 7))
                else:  # now and then the stream (or a direction of it) ends for good
                    rng.choice(_ENDS)(end)
            except (BlockingIOError, BrokenPipeError, ConnectionResetError):
                pass
            for sock, w in ends.items():
                assert w.ready() == _wanted(sock), f"step {step}: {sock!r}"
                seen.add(w.ready())
    assert seen == {NOT_WRITABLE, WRITABLE, READABLE, BLOCKED, (True, False)}  # every state met


@pytest.mark.timeout(20)
def test_a_thread_waiting_in_a_selector_wakes_when_room_appears(pair):
    a, b = pair
    with selectors.DefaultSelector() as sel:
        sel.register(a.fileno(), selectors.EVENT_WRITE)
        a.send(b"x" * 1024)
        assert sel.select(0) == []
        waiter = _Waiter(lambda: sel.select(10.0))
        b.recv(1024)
        assert [mask for _, mask in waiter.result()] == [selectors.EVENT_WRITE]
        a.would_block = True
        assert sel.select(0) == []
        waiter = _Waiter(lambda: sel.select(10.0))
        a.would_block = False
        assert [mask for _, mask in waiter.result()] == [selectors.EVENT_WRITE]


@pytest.mark.timeout(20)
def test_a_thread_waiting_in_a_selector_wakes_to_read_when_the_peer_sends(pair):
    a, b = pair
    with selectors.DefaultSelector() as sel:
        sel.register(b.fileno(), selectors.EVENT_READ)
        assert sel.select(0) == []
        waiter = _Waiter(lambda: sel.select(10.0))
        a.send(b"hello")
        assert [mask for _, mask in waiter.result()] == [selectors.EVENT_READ]
        assert b.recv(10) == b"hello"
        assert sel.select(0) == []  # drained: quiet again
        waiter = _Waiter(lambda: sel.select(10.0))
        a.close()  # the end of the stream wakes it too
        assert [mask for _, mask in waiter.result()] == [selectors.EVENT_READ]
        assert b.recv(10) == b""


@pytest.mark.timeout(20)
def test_a_writer_driven_by_a_selector_never_wakes_to_a_full_buffer():
    """The engine's use, with threads: a writer that waits for WRITE readiness on the fd, a
    reader on another thread. Only the writer takes room, so every wakeup finds room."""
    total = 1 << 18
    data = bytes(range(256)) * (total // 256)
    a, b = memory_socket_pair(capacity=1024, chunk_size=300)
    received = bytearray()

    def read() -> None:
        while len(received) < total and b.links_wait(True, 10.0):
            received.extend(b.recv(4096))

    reader = threading.Thread(target=read)
    sent = wakeups = spurious = 0
    with a, b, selectors.DefaultSelector() as sel:
        sel.register(a.fileno(), selectors.EVENT_WRITE)
        reader.start()
        try:
            while sent < total:
                assert sel.select(10.0), f"no room came after {sent} bytes"
                wakeups += 1
                first = True
                try:
                    while sent < total:
                        sent += a.send(data[sent:])
                        first = False
                except BlockingIOError:
                    spurious += first  # woken, yet not even one byte fitted
        finally:
            reader.join(10.0)
    assert not reader.is_alive()
    assert bytes(received) == data
    assert spurious == 0
    assert wakeups <= total // 512 + 1  # each wakeup moved at least half a buffer


# -- the poll thread finishing owed bytes over the double --------------------------------------


@pytest.fixture
def writable_calls(monkeypatch):
    """Every ``on_writable`` call the poll thread makes, counted."""
    calls: list[object] = []
    real = AttachmentReader.on_writable

    def counting(self):
        calls.append(self)
        return real(self)

    monkeypatch.setattr(AttachmentReader, "on_writable", counting)
    return calls


def _passes(poll: links.PollHandler, count: int = 100) -> None:
    """Make the poll thread go round its loop ``count`` times (each ``sync`` wakes it)."""
    for _ in range(count):
        assert poll.sync(5.0)


@pytest.mark.timeout(20)
@pytest.mark.parametrize("stall", ["peer_not_reading", "would_block"])
@pytest.mark.parametrize("spawned", [False, True], ids=["user_thread_recver", "spawned_recver"])
def test_owed_bytes_wait_for_room_without_spinning_the_poll_thread(poll, timer, writable_calls, spawned, stall):
    a, b = memory_socket_pair(capacity=1024)
    clt = links.Clt.from_socket(a, links.Role.INITIATOR, protocol=Chat, poll_handler=poll, timer=timer)
    sender = clt.into_sender_with_spawned_recver() if spawned else clt
    peer = Transport(b)
    try:
        if stall == "would_block":
            a.would_block = True
            msg = {"n": 1}
        else:
            msg = {"pad": "x" * 8000}  # eight buffers' worth: most of it is owed
        assert sender.send(msg, timeout=0) is links.SendStatus.COMPLETED  # taken; the rest is owed
        _passes(poll)
        assert writable_calls == []  # the fd was never writable: no call, let alone a spin
        if stall == "would_block":
            a.would_block = False
        assert _frames(peer, _link(), 1) == [msg]  # the poll thread wrote it as room came (below)
        _passes(poll, 2)
        calls = len(writable_calls)
        # Each call found at least half of the peer's buffer free and filled it, or finished.
        frame = len(Chat.framer.encode(Chat.messenger.serialize(msg)))
        assert 1 <= calls <= frame // 512 + 1
        _passes(poll)
        assert len(writable_calls) == calls  # nothing owed: no more calls
        assert sender.send({"n": 2}, timeout=0) is links.SendStatus.COMPLETED
        assert _frames(peer, _link(), 1) == [{"n": 2}]
    finally:
        sender.close()
        peer.close()


@pytest.mark.timeout(20)
def test_a_close_with_bytes_owed_lingers_without_spinning_then_delivers(poll, timer, writable_calls):
    a, b = memory_socket_pair(capacity=1024)
    clt = links.Clt.from_socket(a, links.Role.INITIATOR, protocol=Chat, poll_handler=poll, timer=timer)
    peer = Transport(b)
    try:
        msg = {"pad": "x" * 8000}
        assert clt.send(msg, timeout=0) is links.SendStatus.COMPLETED
        clt.close()  # lingers on the poll thread until what is owed is written
        _passes(poll)
        assert writable_calls == []
        assert a.fileno() != -1  # still lingering: the fd is kept
        link = _link()
        assert _frames(peer, link, 1) == [msg]
        assert poll.sync(5.0)
        assert a.fileno() == -1  # all written: the poll thread released the fd
        with pytest.raises(links.BrokenError):
            peer.recv_into(link.buffer.writable())  # then the end of the stream
    finally:
        peer.close()
