"""``PollHandler`` with handlers that have no file descriptor (``virtual = True``).

Such a handler (a multiplexed channel) is registered, serviced, failed and closed like a
socket's, but its readiness is told by ``ready()``: the poll thread services it on a later
pass, never inside the call, once per batch of marks, and only for what it is registered for.

The fake ``Channel`` counts its calls and records any ``fileno()`` call (which also raises):
no test may let a virtual handler near the selector. Waits are on conditions and events,
bounded; "nothing more happened" is checked after a *fence*: a handler marked after the
others, whose service shows that every mark made before it was serviced (marks are
serviced in the order they were made).
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable, Iterator

import pytest
from helpers import LogWatch

import links

WAIT = 5.0
FILENO_CALLS: list[str] = []  # names of virtual handlers whose fileno() was called


class Channel:
    """A fake virtual handler. ``keep`` and ``more`` are what ``on_readable`` and
    ``on_writable`` return; ``on_read``/``on_write`` hooks run inside those calls (on the poll
    thread), before the call is counted; ``failures`` collects ``on_poll_failure`` errors."""

    poll_kind = "channel"
    virtual = True

    def __init__(self, name: str, *, keep: bool = True, more: bool = False) -> None:
        self.name = self.con_id = name
        self.closed = False
        self.keep, self.more = keep, more
        self.reads = self.writes = 0
        self.failures: list[BaseException | None] = []
        self.on_read: Callable[[Channel], None] | None = None
        self.on_write: Callable[[Channel], None] | None = None
        self.on_failure: Callable[[Channel], None] | None = None
        self.cond = threading.Condition()

    def __repr__(self) -> str:
        return f"Channel({self.name})"

    def fileno(self) -> int:
        FILENO_CALLS.append(self.name)
        raise AssertionError(f"fileno() of the virtual handler {self.name}")

    def on_readable(self) -> bool:
        if self.on_read is not None:
            self.on_read(self)
        with self.cond:
            self.reads += 1
            self.cond.notify_all()
        return self.keep

    def on_writable(self) -> bool:
        if self.on_write is not None:
            self.on_write(self)
        with self.cond:
            self.writes += 1
            self.cond.notify_all()
        return self.more

    def on_poll_failure(self, error: BaseException | None) -> None:
        if self.on_failure is not None:
            self.on_failure(self)
        with self.cond:
            self.failures.append(error)
            self.cond.notify_all()

    def wait(self, predicate: Callable[[], bool]) -> bool:
        with self.cond:
            return self.cond.wait_for(predicate, WAIT)


class SocketReader:
    """A plain fd handler on one end of a socketpair: collects what it reads."""

    poll_kind = "recver"

    def __init__(self, sock: socket.socket) -> None:
        sock.setblocking(False)
        self.sock, self.closed = sock, False
        self.got = bytearray()
        self.cond = threading.Condition()

    def fileno(self) -> int:
        return self.sock.fileno()

    def on_readable(self) -> bool:
        try:
            data = self.sock.recv(64)
        except BlockingIOError:
            return True
        with self.cond:
            self.got += data
            self.cond.notify_all()
        return True

    def on_poll_failure(self, error: BaseException | None) -> None:
        pass

    def wait_for(self, data: bytes) -> bool:
        with self.cond:
            return self.cond.wait_for(lambda: self.got == data, WAIT)


@pytest.fixture(autouse=True)
def _never_selected(logs: LogWatch) -> Iterator[None]:
    """No virtual handler's fileno() is called, and no command fails, in any test (its poll
    handler is shut down first: this fixture is set up before the ``poll`` fixture)."""
    FILENO_CALLS.clear()
    yield
    assert FILENO_CALLS == []
    assert logs.matching("poll.command_failed") == []


def added(poll: links.PollHandler, *channels: Channel) -> None:
    """Register ``channels`` and wait for the one call each gets on registration."""
    for channel in channels:
        poll.add(channel)
    for channel in channels:
        assert channel.wait(lambda c=channel: c.reads >= 1)


def settle(poll: links.PollHandler, fence: Channel) -> None:
    """Return once every mark made before this call has been serviced (``fence`` is registered)."""
    reads = fence.reads
    poll.ready(fence, readable=True)
    assert fence.wait(lambda: fence.reads > reads)


def hold(poll: links.PollHandler) -> threading.Event:
    """Keep the poll thread busy until the returned event is set (bounded by ``WAIT``)."""
    entered, held = threading.Event(), threading.Event()
    poll.call_soon(lambda: (entered.set(), held.wait(WAIT)))
    assert entered.wait(WAIT)
    return held


# -- registering ------------------------------------------------------------------------------


def test_add_logs_counts_and_services_it_once(poll, logs):
    channel, fence = Channel("a"), Channel("fence")
    added(poll, channel, fence)
    assert logs.expect("poll.channel.added", con_id="a")
    assert poll.handler_count == 2
    settle(poll, fence)
    assert (channel.reads, channel.writes) == (1, 0)


def test_a_closed_handler_is_not_registered(poll, logs):
    channel, fence = Channel("closed"), Channel("fence")
    channel.closed = True
    poll.add(channel)
    added(poll, fence)
    settle(poll, fence)
    assert channel.reads == 0
    assert poll.handler_count == 1
    assert logs.matching("poll.channel.added", con_id="closed") == []


# -- ready() ----------------------------------------------------------------------------------


@pytest.mark.parametrize("busy_poll", [0.0, 1e-3])
def test_ready_from_another_thread_wakes_the_loop(busy_poll):
    poll = links.PollHandler("test-virtual", busy_poll=busy_poll)
    try:
        channel = Channel("a")
        added(poll, channel)
        for n in (2, 3):
            marker = threading.Thread(target=lambda: poll.ready(channel, readable=True))
            marker.start()
            marker.join(WAIT)
            assert channel.wait(lambda n=n: channel.reads == n)
    finally:
        poll.shutdown(WAIT)


def test_marks_made_before_the_poll_thread_gets_to_them_are_coalesced(poll):
    channel, fence = Channel("a", more=True), Channel("fence")
    added(poll, channel, fence)
    poll.want_writable(channel)
    assert channel.wait(lambda: channel.writes == 1)
    held = hold(poll)
    for _ in range(3):
        poll.ready(channel, readable=True)
        poll.ready(channel, writable=True)
    held.set()
    settle(poll, fence)
    assert (channel.reads, channel.writes) == (2, 2)


def test_ready_from_inside_a_handler_is_serviced_on_a_later_pass(poll):
    a, b, fence = Channel("a"), Channel("b"), Channel("fence")
    added(poll, a, b, fence)
    seen: list[tuple[int, int]] = []  # (a.reads, b.reads) right after marking, inside a's call

    def mark_both(channel: Channel) -> None:
        if channel.reads == 1:  # its second call (not counted yet): once
            poll.ready(a, readable=True)
            poll.ready(b, readable=True)
            seen.append((a.reads, b.reads))

    a.on_read = mark_both
    poll.ready(a, readable=True)
    assert a.wait(lambda: a.reads == 3)
    assert b.wait(lambda: b.reads == 2)
    assert seen == [(1, 1)]  # neither was serviced inside ready(), nor inside a's call
    settle(poll, fence)
    assert (a.reads, b.reads) == (3, 2)


def test_a_handler_marking_itself_on_each_call_does_not_starve_the_others(poll):
    spinner, other = Channel("spinner"), Channel("other")
    added(poll, spinner, other)
    spinner.on_read = lambda c: poll.ready(c, readable=True)  # for ever, from the next call on
    poll.ready(spinner, readable=True)
    assert spinner.wait(lambda: spinner.reads >= 10)
    poll.ready(other, readable=True)
    assert other.wait(lambda: other.reads == 2)
    spinner.on_read = None  # its last mark is still serviced, and makes no other


def test_a_readable_mark_without_read_interest_is_ignored(poll):
    writer, reader, fence = Channel("writer", more=True), Channel("reader"), Channel("fence")
    added(poll, reader, fence)
    poll.want_writable(writer)  # registered for writing alone
    assert writer.wait(lambda: writer.writes == 1)
    poll.ready(writer, readable=True)
    poll.ready(reader, writable=True)  # and a writable one without write interest
    settle(poll, fence)
    assert (writer.reads, writer.writes) == (0, 1)
    assert (reader.reads, reader.writes) == (1, 0)
    writer.more = False  # else it lingers through the whole drain window of the shutdown
    poll.ready(writer, writable=True)
    assert writer.wait(lambda: writer.writes == 2)


def test_marks_for_handlers_not_registered_are_ignored(poll, logs):
    gone, stranger, fence = Channel("gone"), Channel("stranger"), Channel("fence")
    added(poll, gone, fence)
    then = threading.Event()
    poll.remove(gone, "bye", then=then.set)
    assert then.wait(WAIT)
    assert logs.expect("poll.channel.removed", con_id="gone", reason="bye")
    poll.ready(gone, readable=True, writable=True)
    poll.ready(stranger, readable=True)
    settle(poll, fence)
    assert (gone.reads, gone.writes, stranger.reads) == (1, 0, 0)
    assert poll.handler_count == 1


def test_ready_before_start_and_after_shutdown_is_ignored():
    poll = links.PollHandler("test-virtual-idle")
    channel = Channel("a")
    poll.ready(channel, readable=True)  # starts no thread
    assert not [t for t in threading.enumerate() if t.name == "test-virtual-idle"]
    added(poll, channel)
    poll.shutdown(WAIT)
    poll.ready(channel, readable=True)  # no error
    assert channel.reads == 1
    assert channel.failures == [None]


# -- writing ----------------------------------------------------------------------------------


def test_want_writable_services_the_writer_at_once_until_it_owes_nothing(poll, logs):
    writer, fence = Channel("writer", more=True), Channel("fence")
    added(poll, fence)
    poll.want_writable(writer)  # write-only: a closed channel lingering to write what it owes
    assert writer.wait(lambda: writer.writes == 1)
    assert poll.handler_count == 2
    poll.want_writable(writer)  # interested already: no extra call
    settle(poll, fence)
    assert writer.writes == 1
    poll.ready(writer, writable=True)
    assert writer.wait(lambda: writer.writes == 2)
    writer.more = False
    poll.ready(writer, writable=True)
    assert writer.wait(lambda: writer.writes == 3)
    settle(poll, fence)
    assert poll.handler_count == 1  # gone quietly
    poll.ready(writer, writable=True)
    settle(poll, fence)
    assert writer.writes == 3
    assert logs.matching("poll.channel.removed", con_id="writer") == []
    assert writer.failures == []


def test_a_reader_that_stops_owing_keeps_reading(poll):
    channel, fence = Channel("a"), Channel("fence")
    added(poll, channel, fence)
    poll.want_writable(channel)
    assert channel.wait(lambda: channel.writes == 1)  # owes nothing: write interest dropped
    poll.ready(channel, writable=True)
    poll.ready(channel, readable=True)
    assert channel.wait(lambda: channel.reads == 2)
    settle(poll, fence)
    assert channel.writes == 1
    assert poll.handler_count == 2


# -- removal and failures -----------------------------------------------------------------------


def test_on_readable_false_removes_it(poll, logs):
    channel, fence = Channel("a", keep=False), Channel("fence")
    added(poll, fence)
    poll.add(channel)
    assert logs.expect("poll.channel.removed", con_id="a", reason="done")
    assert poll.handler_count == 1
    poll.ready(channel, readable=True)
    settle(poll, fence)
    assert channel.reads == 1
    assert channel.failures == []


@pytest.mark.parametrize("side", ["read", "write"])
def test_a_raising_handler_is_failed_alone(poll, logs, side):
    bad, good = Channel("bad"), Channel("good")
    ours, theirs = socket.socketpair()
    reader = SocketReader(ours)
    try:
        poll.add(reader)
        added(poll, bad, good)

        def boom(channel: Channel) -> None:
            raise RuntimeError("channel failed")

        if side == "read":
            bad.on_read = boom
            poll.ready(bad, readable=True)
        else:
            bad.on_write = boom
            poll.want_writable(bad)
        failed = logs.expect("poll.handler_failed", con_id="bad")
        assert "channel failed" in failed["error"]
        assert logs.expect("poll.channel.removed", con_id="bad", reason="failed")
        assert bad.wait(lambda: len(bad.failures) == 1)
        assert isinstance(bad.failures[0], RuntimeError)
        assert poll.handler_count == 2  # the socket reader and the good channel

        poll.ready(good, readable=True)
        assert good.wait(lambda: good.reads == 2)
        theirs.send(b"still read")
        assert reader.wait_for(b"still read")
    finally:
        poll.remove(reader, then=ours.close)
        theirs.close()


def test_a_handler_closed_while_its_add_is_queued_is_never_serviced(poll):
    # Closed before the poll thread got to its add(): never registered, never serviced or failed.
    channel, fence = Channel("a"), Channel("fence")
    added(poll, fence)
    held = hold(poll)
    poll.add(channel)
    channel.closed = True
    held.set()
    settle(poll, fence)
    assert (channel.reads, channel.failures, poll.handler_count) == (0, [], 1)


# -- shutdown ---------------------------------------------------------------------------------


def test_shutdown_closes_virtual_handlers(logs):
    poll = links.PollHandler("test-virtual-shutdown")
    reader, writer = Channel("reader"), Channel("writer", more=True)
    ours, theirs = socket.socketpair()
    fd_reader = SocketReader(ours)
    try:
        poll.add(fd_reader)
        added(poll, reader, writer)
        poll.want_writable(writer)  # reading and owing: a reader, closed as one
        assert writer.wait(lambda: writer.writes == 1)
        poll.shutdown(WAIT)
        assert reader.failures == [None] and writer.failures == [None]
        assert poll.handler_count == 0
        for name in ("reader", "writer"):
            assert logs.one("poll.channel.removed", con_id=name)["reason"] == "shutdown"
    finally:
        ours.close()
        theirs.close()


class Lingering(Channel):
    """Closed by the shutdown, it lingers to write ``chunks`` more (as a closed connection that
    still owes bytes does). Each write takes one chunk and, if ``mark`` is set, marks itself
    writable again, as its demultiplexer would on finding room: from the poll thread."""

    def __init__(self, name: str, poll: links.PollHandler, chunks: int, *, mark: bool = True) -> None:
        super().__init__(name)
        self.poll, self.chunks, self.mark = poll, chunks, mark

    def on_poll_failure(self, error: BaseException | None) -> None:
        super().on_poll_failure(error)
        if len(self.failures) == 1:
            self.poll.want_writable(self)  # inline: the shutdown runs on the poll thread

    def on_writable(self) -> bool:
        self.chunks -= 1
        self.more = self.chunks > 0
        if self.more and self.mark:
            self.poll.ready(self, writable=True)
        return super().on_writable()


def test_a_lingering_virtual_writer_is_drained_during_shutdown(logs):
    poll = links.PollHandler("test-virtual-drain")
    channel = Lingering("lingering", poll, chunks=20)
    added(poll, channel)
    waits = []  # (seconds the drain let epoll wait, chunks the writer still had then)
    epoll_wait = poll._poll

    def recording(timeout=None):
        waits.append((timeout, channel.chunks))
        return epoll_wait(timeout)

    poll._poll = recording  # the drain reads it at each call (the loop's own copy is unaffected)
    poll.shutdown(timeout=8.0)  # a drain window of 4 s
    assert (channel.writes, channel.chunks) == (20, 0)
    assert waits and all(timeout == 0 for timeout, chunks in waits if chunks > 0)  # never slept while marked
    assert channel.failures == [None]  # drained: not told again
    assert poll.handler_count == 0


def test_a_virtual_writer_still_owing_after_the_drain_window_is_dropped():
    poll = links.PollHandler("test-virtual-drop")
    channel = Lingering("stuck", poll, chunks=1_000_000, mark=False)  # never told of room again
    added(poll, channel)
    poll.shutdown(timeout=1.0)  # a drain window of 0.5 s
    assert channel.writes == 1  # its first call, on the mark want_writable made
    assert channel.failures == [None, None]  # closed, then dropped with what it still owed
    assert poll.handler_count == 0
