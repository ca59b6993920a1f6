"""A thread that reads for the only channel of a TCP connection leaves the reading parked when
its message came (links._lease, "Parked"): the poll thread does not watch the socket until the
thread is back, so a reply arriving meanwhile wakes nobody. Whatever needs the poll thread's
reading gets it back: the timer's look once no borrow came for a while, a hang-up, a second
channel, a writer waiting for the peer's window, a timer that is gone."""

from __future__ import annotations

import os
import select
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from helpers import Json, epoll_interest
from helpers_lease import Lends
from helpers_yamux import ACK, FIN, PING, SYN, WINDOW_UPDATE, RawPeer, header, json_frame

import links
import links.mux
from links._lease import PARK_LOOK
from links.mux import _stream
from links.testing import FakeClock

pytestmark = pytest.mark.skipif(not os.path.exists("/proc/self/fdinfo"), reason="Linux's /proc tells the epoll interest")

WAIT = 5.0


class Bytes(links.Protocol):
    framer = links.LengthPrefixFramer(header_size=4, max_frame_size=1 << 20)
    messenger = links.RawMessenger()


@pytest.fixture
def lends(monkeypatch):
    monkeypatch.setattr(_stream, "BORROW_SLICE", 60.0)  # a borrow ends with its message here
    return Lends(monkeypatch)


@pytest.fixture
def manual_timer():
    clock = FakeClock()
    timer = links.Timer(clock=clock, thread=False)
    yield timer, clock
    timer.shutdown()


class Link:
    """A client ``links.mux`` connection to a raw yamux peer, and what the tests look at."""

    def __init__(self, mux: links.mux.Mux, peer: RawPeer, poll: links.PollHandler) -> None:
        self.mux, self.peer, self.poll = mux, peer, poll
        self.fd = mux.carrier._driver.att.transport.fileno()
        self.epoll_fd = poll._books.epoll.fileno()

    @property
    def watched(self) -> bool:
        """Whether the poll thread watches the TCP connection for input."""
        return bool(epoll_interest(self.epoll_fd, self.fd) & select.EPOLLIN)

    def parked(self, lends: Lends, protocol: type[links.Protocol] = Json, msg: object = None, frame: bytes | None = None) -> links.Clt:
        """The connection's only channel (stream 1), after a round trip that left the reading parked."""
        ch = self.mux.open(protocol=protocol, timeout=WAIT)
        self.poll.sync()  # its reader is registered: the reading can be lent
        assert self.watched
        self.round_trip(ch, 1, lends, {"hi": 0} if msg is None else msg, frame)
        assert not self.watched  # parked: nobody reads until the next recv
        return ch

    @staticmethod
    def borrowing(ch: links.Clt, lends: Lends) -> tuple[threading.Thread, list]:
        """``ch.recv()`` on a thread of its own, once it borrowed the reading: the thread, and
        the list its message goes into."""
        got: list = []
        reader = threading.Thread(target=lambda: got.append(ch.recv(timeout=WAIT)))
        reader.start()
        lends.wait_lent()
        return reader, got

    def round_trip(self, ch: links.Clt, stream_id: int, lends: Lends, msg: object, frame: bytes | None = None) -> None:
        """``ch.recv()`` on a thread that borrows the reading, answered by the peer with
        ``msg`` (as ``frame``, if the channel's protocol is not ``Json``)."""
        reader, got = self.borrowing(ch, lends)
        self.peer.data(stream_id, json_frame(msg) if frame is None else frame)
        reader.join(WAIT)
        assert got == [msg]


@contextmanager
def linked(poll: links.PollHandler, timer: links.Timer) -> Iterator[Link]:
    with socket.create_server(("127.0.0.1", 0)) as listener:
        mux = links.mux.connect(f"127.0.0.1:{listener.getsockname()[1]}", poll_handler=poll, timer=timer, timeout=WAIT)
        raw, _ = listener.accept()
        with mux, RawPeer(raw) as peer:
            yield Link(mux, peer, poll)


def test_the_reading_stays_parked_between_round_trips_until_the_timer_finds_it_unused(lends, poll, manual_timer):
    timer, clock = manual_timer
    with linked(poll, timer) as link:
        a = link.parked(lends)
        for i in range(2):
            link.round_trip(a, 1, lends, {"i": i})
            assert not link.watched  # parked still
        assert lends.count == 3 and lends.active == 0
        link.peer.send(header(PING, SYN, 0, 7))  # only the poll thread would answer it now
        clock.advance(PARK_LOOK)
        timer.run_due()  # borrows came since the last look: still parked
        assert not link.watched
        clock.advance(PARK_LOOK)
        timer.run_due()  # none since: the poll thread reads it again
        assert link.watched
        assert link.peer.expect(0, ACK, kind=PING).length == 7
        a.close()


def test_a_reset_while_parked_ends_the_connection_at_once_a_close_at_the_next_look(lends, poll, manual_timer):
    timer, clock = manual_timer
    for orderly in (False, True):
        with linked(poll, timer) as link:
            a = link.parked(lends)
            closed = threading.Event()
            link.mux.carrier.on_closed(closed.set)
            if orderly:  # a FIN, all read: epoll reports nothing while EPOLLIN is out
                link.peer.sock.shutdown(socket.SHUT_WR)
                clock.advance(PARK_LOOK)
                timer.run_due()
                clock.advance(PARK_LOOK)
                timer.run_due()
            else:  # closed with our bytes unread: a reset, reported whatever the interest
                link.peer.close()
            assert closed.wait(WAIT)
            with pytest.raises(links.BrokenError):
                a.recv(timeout=WAIT)


def test_a_second_channel_is_read_by_the_poll_thread_at_once(lends, poll, manual_timer):
    timer, _ = manual_timer
    with linked(poll, timer) as link:
        a = link.parked(lends)
        got = links.StoreCallback()
        b = link.mux.open(protocol=Json, callback=got, timeout=WAIT).into_sender_with_spawned_recver()  # stream 3
        assert link.watched
        link.peer.data(3, json_frame({"b": 1}))
        assert got.find_recv(lambda m: m == {"b": 1}, timeout=WAIT) == {"b": 1}
        link.round_trip(a, 1, lends, {"hi": 2})
        assert link.watched  # two channels: given back, not parked
        a.close()
        b.close()


def test_bytes_owed_for_the_peers_window_get_the_reading_back(lends, poll, manual_timer):
    timer, _ = manual_timer  # never run: no look gives the reading back
    with linked(poll, timer) as link:
        a = link.parked(lends, Bytes, b"hi", (2).to_bytes(4, "big") + b"hi")
        big = bytes(300 * 1024)  # past the peer's window (256 KiB): the rest is owed until its update
        sent: list = []
        writer = threading.Thread(target=lambda: sent.append(a.send(big, timeout=WAIT)))
        writer.start()
        assert len(link.peer.data_on(1, 256 * 1024)) == 256 * 1024
        link.peer.grant(1, 256 * 1024)  # read by the poll thread: nobody else reads now
        writer.join(WAIT)
        assert sent == [links.SendStatus.COMPLETED]
        assert len(link.peer.data_on(1, len(big) + 4 - 256 * 1024)) == len(big) + 4 - 256 * 1024
        a.close()


def test_closing_while_parked_reads_the_peers_end_at_once(lends, poll, manual_timer):
    timer, _ = manual_timer  # never run: no look gives the reading back
    with linked(poll, timer) as link:
        a = link.parked(lends)
        closed = threading.Event()
        link.mux.carrier.on_closed(closed.set)
        a.close()
        link.mux.close()  # the connection closes once the peer ended stream 1 too
        link.peer.expect(1, FIN)
        link.peer.send(header(WINDOW_UPDATE, FIN, 1, 0))
        assert closed.wait(WAIT)


def test_without_a_timer_to_look_the_reading_is_not_parked(lends, poll, manual_timer):
    timer, _ = manual_timer
    with linked(poll, timer) as link:
        a = link.mux.open(protocol=Json, timeout=WAIT)
        poll.sync()
        timer.shutdown()
        link.round_trip(a, 1, lends, {"hi": 1})
        assert link.watched
        a.close()


# -- what asks for the reading while a thread has it borrowed ---------------------------------


def test_bytes_owed_while_another_thread_borrows_keep_the_reading_from_parking(lends, poll, manual_timer):
    timer, _ = manual_timer  # never run: no look gives the reading back
    with linked(poll, timer) as link:
        a = link.mux.open(protocol=Bytes, timeout=WAIT)
        poll.sync()
        reader, got = link.borrowing(a, lends)
        big = bytes(300 * 1024)  # past the peer's window (256 KiB): the rest is owed until its update
        assert a.send(big, timeout=WAIT) is links.SendStatus.COMPLETED
        assert len(link.peer.data_on(1, 256 * 1024)) == 256 * 1024
        link.peer.data(1, (2).to_bytes(4, "big") + b"hi")  # the borrower's message
        reader.join(WAIT)
        assert got == [b"hi"] and link.watched  # given back, not parked: the update is to come
        link.peer.grant(1, 256 * 1024)
        assert len(link.peer.data_on(1, len(big) + 4 - 256 * 1024)) == len(big) + 4 - 256 * 1024
        a.close()


def test_bytes_owed_before_a_borrow_keep_the_reading_from_parking(lends, poll, manual_timer):
    timer, _ = manual_timer  # never run: no look gives the reading back
    with linked(poll, timer) as link:
        a = link.parked(lends, Bytes, b"hi", (2).to_bytes(4, "big") + b"hi")
        big = bytes(300 * 1024)
        assert a.send(big, timeout=WAIT) is links.SendStatus.COMPLETED  # the rest owed, for the peer's update
        assert len(link.peer.data_on(1, 256 * 1024)) == 256 * 1024
        link.round_trip(a, 1, lends, b"hi", (2).to_bytes(4, "big") + b"hi")
        assert link.watched  # given back, not parked: the update is to come
        link.peer.grant(1, 256 * 1024)
        assert len(link.peer.data_on(1, len(big) + 4 - 256 * 1024)) == len(big) + 4 - 256 * 1024
        a.close()


def test_a_channel_opened_as_the_borrower_gives_the_reading_back_keeps_it_from_parking(lends, poll, manual_timer, monkeypatch):
    # The borrower decides to park, then a channel is opened before it gives the reading back:
    # the open's request for the poll thread's reading is kept, and the reading is not parked.
    timer, _ = manual_timer
    may_park = links.mux._driver.MuxDriver.may_park
    decided, opened = threading.Event(), threading.Event()

    def slow_may_park(driver):
        answer = may_park(driver)
        if threading.current_thread() is reader:
            decided.set()
            opened.wait(WAIT)
        return answer

    monkeypatch.setattr(links.mux._driver.MuxDriver, "may_park", slow_may_park)
    with linked(poll, timer) as link:
        a = link.mux.open(protocol=Json, timeout=WAIT)
        poll.sync()
        reader, got = link.borrowing(a, lends)
        link.peer.data(1, json_frame({"hi": 1}))
        assert decided.wait(WAIT)
        store = links.StoreCallback()
        b = link.mux.open(protocol=Json, callback=store, timeout=WAIT).into_sender_with_spawned_recver()  # stream 3
        opened.set()
        reader.join(WAIT)
        assert got == [{"hi": 1}] and link.watched
        link.peer.data(3, json_frame({"b": 1}))
        assert store.find_recv(lambda m: m == {"b": 1}, timeout=WAIT) == {"b": 1}
        a.close()
        b.close()


def test_a_borrower_whose_channel_another_thread_closed_does_not_park_the_one_left(lends, poll, manual_timer):
    timer, _ = manual_timer
    with linked(poll, timer) as link:
        link.peer.expect(0, SYN, kind=PING)  # the one sent on connect
        a = link.mux.open(protocol=Json, timeout=WAIT)  # stream 1
        store = links.StoreCallback()
        b = link.mux.open(protocol=Json, callback=store, timeout=WAIT).into_sender_with_spawned_recver()  # stream 3
        poll.sync()
        outcome: list = []

        def recv() -> None:
            try:
                outcome.append(a.recv(timeout=WAIT))
            except links.LinksError as e:
                outcome.append(e)

        reader = threading.Thread(target=recv)
        reader.start()
        lends.wait_lent()
        a.close()  # FIN, and stream 1 forgotten: the connection carries b alone
        ping = link.peer.expect(0, SYN, kind=PING)  # what wakes the borrower
        link.peer.send(header(PING, ACK, 0, ping.length))
        reader.join(WAIT)
        assert isinstance(outcome[0], links.ClosedError) and link.watched
        link.peer.data(3, json_frame({"b": 1}))
        assert store.find_recv(lambda m: m == {"b": 1}, timeout=WAIT) == {"b": 1}
        b.close()


def test_a_timer_shut_down_after_its_look_was_scheduled_gives_the_reading_back(lends, poll, manual_timer):
    timer, _ = manual_timer
    with linked(poll, timer) as link:
        a = link.parked(lends)  # the look is scheduled
        timer.shutdown()
        assert link.watched
        link.peer.send(header(PING, SYN, 0, 7))
        assert link.peer.expect(0, ACK, kind=PING).length == 7
        a.close()


class HookedLock:
    """A lease's ``reading`` lock that runs ``hook`` once on its release: inside ``give_back``,
    with the lease's lock held, between the borrower letting go and the lease parking."""

    def __init__(self, lock, hook) -> None:
        self.lock, self.hook = lock, hook

    def acquire(self, *args):
        return self.lock.acquire(*args)

    def release(self) -> None:
        self.lock.release()
        hook, self.hook = self.hook, None
        if hook is not None:
            hook()


def test_an_unpark_asked_as_the_borrower_gives_the_reading_back_is_not_lost(lends, poll, manual_timer):
    timer, _ = manual_timer  # never run: no look gives the reading back
    with linked(poll, timer) as link:
        a = link.mux.open(protocol=Json, timeout=WAIT)
        poll.sync()
        opened: list = []
        store = links.StoreCallback()
        asked = threading.Thread(target=lambda: opened.append(link.mux.open(protocol=Json, callback=store, timeout=WAIT)))
        reader, got = link.borrowing(a, lends)
        lends.leases[-1].reading = HookedLock(lends.leases[-1].reading, asked.start)  # opens stream 3 then
        link.peer.data(1, json_frame({"hi": 1}))
        reader.join(WAIT)
        asked.join(WAIT)
        assert got == [{"hi": 1}] and opened and link.watched  # the open's unpark waited its turn
        b = opened[0].into_sender_with_spawned_recver()
        link.peer.data(3, json_frame({"b": 1}))
        assert store.find_recv(lambda m: m == {"b": 1}, timeout=WAIT) == {"b": 1}
        a.close()
        b.close()


def test_a_recv_while_the_connection_finishes_does_not_park_it(lends, poll, manual_timer):
    timer, _ = manual_timer  # never run: no look gives the reading back
    with linked(poll, timer) as link:
        a = link.parked(lends)
        link.mux.carrier.finish()  # as a service's close does: it closes once the peer ends stream 1 too
        assert link.watched
        link.round_trip(a, 1, lends, {"last": 1})
        assert link.watched  # the peer's end is the poll thread's to read
        a.close()
        closed = threading.Event()
        link.mux.carrier.on_closed(closed.set)
        link.peer.expect(1, FIN)
        link.peer.send(header(WINDOW_UPDATE, FIN, 1, 0))
        assert closed.wait(WAIT)
