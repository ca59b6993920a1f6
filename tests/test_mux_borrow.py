"""A thread waiting in a channel's ``recv`` borrows the reading of the TCP connection under the
channels from the poll thread (links._lease) and runs the demultiplexer itself: its reply wakes
it alone. Each channel still gets its own messages, other channels (spawned or read on threads
of their own) receive meanwhile, the reading goes back on a message, a timeout, a close, a
reset, the end of the connection or a poll thread shutting down, TLS included, and the poll
thread does not spin meanwhile."""

from __future__ import annotations

import os
import select
import socket
import threading

import pytest
from helpers import Json, PollPasses, epoll_interest, errors_in_threads
from helpers_lease import Lends
from helpers_tls import tls_contexts
from helpers_yamux import ACK, DATA, GO_AWAY, PING, RST, SYN, WINDOW_UPDATE, RawPeer, header, json_frame

import links
import links.mux
from links.mux import _stream

WAIT = 5.0


@pytest.fixture
def lends(monkeypatch):
    # A borrow lasts until its message or its deadline here: a slow host must not end one
    # midway (another thread could then take the reading, which a test checks is not so).
    monkeypatch.setattr(_stream, "BORROW_SLICE", 60.0)
    return Lends(monkeypatch)


class Echo(Json):
    """Answers every message with itself, but a "quiet" one (the test answers with send_to)."""

    def send_reply(self, msg, con):
        if not msg.get("quiet"):
            con.send(msg)


def serve(poll, timer, **options) -> links.Svc:
    svc = links.Svc.bind("127.0.0.1:0", protocol=Echo, poll_handler=poll, timer=timer, mux=True, **options)
    svc.into_sender_with_spawned_recver()
    return svc


def dial(svc, poll, timer, **options) -> links.mux.Mux:
    return links.mux.connect(f"127.0.0.1:{svc.local_addr[1]}", poll_handler=poll, timer=timer, timeout=WAIT, **options)


def greeted(mux: links.mux.Mux, callback=None) -> links.Clt:
    """A channel whose first message was echoed: it is in the service's pool."""
    ch = mux.open(protocol=Json, callback=callback, timeout=WAIT)
    ch.send({"hi": 0})
    assert ch.recv(timeout=WAIT) == {"hi": 0}
    return ch


def server_side(svc: links.Svc, ch: links.Clt) -> links.ConId:
    """The service's ``ConId`` of the client's channel ``ch`` (the same stream id)."""
    sid = ch.con_id.name.rsplit("#", 1)[1]
    (con_id,) = [c for c in svc.con_ids() if c.name.rsplit("#", 1)[1] == sid]
    return con_id


def recv_on_thread(ch: links.Clt, outcome: dict, key: str, count: int = 1) -> threading.Thread:
    """``ch.recv`` ``count`` times on a thread of its own: the messages, or what it raised, in ``outcome[key]``."""

    def run() -> None:
        try:
            outcome[key] = [ch.recv(timeout=WAIT) for _ in range(count)]
        except links.LinksError as e:
            outcome[key] = e

    thread = threading.Thread(target=run)
    thread.start()
    return thread


# -- every channel its own messages ---------------------------------------------------------------


def test_a_round_trip_on_a_channel_reads_its_reply_on_the_waiting_thread(lends, poll, timer):
    with serve(poll, timer) as svc, dial(svc, poll, timer) as mux:
        ch = mux.open(protocol=Json, timeout=WAIT)
        for i in range(300):
            ch.send({"i": i})
            assert ch.recv(timeout=WAIT) == {"i": i}
        assert lends.count > 0 and lends.active == 0
        got = links.StoreCallback()  # read by the poll thread: nobody borrows now
        other = mux.open(protocol=Json, callback=got, timeout=WAIT).into_sender_with_spawned_recver()
        other.send({"by": "poll thread"})
        assert got.find_recv(lambda m: m == {"by": "poll thread"}, timeout=WAIT) == {"by": "poll thread"}
        other.close()
        ch.close()


def test_threads_waiting_on_channels_at_once_each_get_their_own_messages(lends, poll, timer):
    with serve(poll, timer) as svc, dial(svc, poll, timer) as mux:
        channels = [mux.open(protocol=Json, timeout=WAIT) for _ in range(4)]

        def work(t: int) -> None:
            ch = channels[t]
            for i in range(150):
                ch.send({"t": t, "i": i, "pad": "x" * (i * 7 % 300)})
                assert ch.recv(timeout=WAIT) == {"t": t, "i": i, "pad": "x" * (i * 7 % 300)}

        assert not errors_in_threads(work, 4, WAIT * 2)
        assert lends.count > 0 and lends.active == 0
        for ch in channels:
            ch.close()


def test_other_channels_receive_while_a_thread_reads_for_its_own(lends, poll, timer):
    with serve(poll, timer) as svc, dial(svc, poll, timer) as mux:
        got = links.StoreCallback()
        a, c = greeted(mux), greeted(mux)
        b = greeted(mux, callback=got)
        b_sender = b.into_sender_with_spawned_recver()
        a_side, b_side, c_side = (server_side(svc, ch) for ch in (a, b, c))
        outcome: dict = {}
        before = lends.count  # the greetings' recv borrowed too
        a_reader = recv_on_thread(a, outcome, "a")
        lends.wait_lent()  # a's thread reads the TCP connection now, until a message comes for a
        c_reader = recv_on_thread(c, outcome, "c", 20)  # waits on its condition: the reading is lent
        for i in range(20):
            svc.send_to(b_side, {"b": i})
            svc.send_to(c_side, {"c": i})
        assert got.find_recv(lambda m: m == {"b": 19}, timeout=WAIT) == {"b": 19}
        c_reader.join(WAIT)
        assert outcome["c"] == [{"c": i} for i in range(20)]
        assert [m for m in got.recv_msgs() if "b" in m] == [{"b": i} for i in range(20)]
        assert "a" not in outcome and lends.active == 1 and lends.count == before + 1  # all read by a's thread
        svc.send_to(a_side, {"a": 1})
        a_reader.join(WAIT)
        assert outcome["a"] == [{"a": 1}] and lends.active == 0
        c.send({"after": 1})
        assert c.recv(timeout=WAIT) == {"after": 1}
        for ch in (a, b_sender, c):
            ch.close()


def test_a_channel_the_peer_opens_while_a_thread_borrows_is_served(lends, poll, timer):
    taken: list = []
    accepted = threading.Event()  # set once accept= returned (the echo may come before)

    def accept(clt) -> None:
        taken.append(clt.into_sender_with_spawned_recver())
        accepted.set()

    with serve(poll, timer) as svc:
        with dial(svc, poll, timer, protocol=Echo, accept=accept) as mux:
            a = greeted(mux)
            outcome: dict = {}
            a_reader = recv_on_thread(a, outcome, "a")
            lends.wait_lent()
            # Its SYN is read by a's thread, which makes the channel and hands it to accept=.
            towards_client = svc.open_channel(server_side(svc, a), protocol=Json, timeout=WAIT)
            towards_client.send({"from": "server"})
            assert towards_client.recv(timeout=WAIT) == {"from": "server"}  # echoed by the client's Echo
            assert accepted.wait(WAIT) and len(taken) == 1 and "a" not in outcome
            svc.send_to(server_side(svc, a), {"a": 2})
            a_reader.join(WAIT)
            assert outcome["a"] == [{"a": 2}]
            towards_client.close()
            a.close()


# -- giving the reading back ------------------------------------------------------------------------


def test_a_timeout_while_borrowing_gives_the_reading_back(lends, poll, timer):
    with serve(poll, timer) as svc, dial(svc, poll, timer) as mux:
        got = links.StoreCallback()
        a = greeted(mux)
        b = greeted(mux, callback=got).into_sender_with_spawned_recver()
        assert a.recv(timeout=0.05) is None
        assert lends.count > 0 and lends.active == 0
        svc.send_to(server_side(svc, b), {"b": 1})  # read by the poll thread again
        assert got.find_recv(lambda m: m == {"b": 1}, timeout=WAIT) == {"b": 1}
        a.send({"again": 1})
        assert a.recv(timeout=WAIT) == {"again": 1}
        a.close()
        b.close()


def test_a_local_close_wakes_the_thread_reading_for_the_channel(lends, poll, timer):
    # BORROW_SLICE is a minute here: only the PING sent on the close wakes the reader in time.
    with serve(poll, timer) as svc, dial(svc, poll, timer) as mux:
        a, b = greeted(mux), greeted(mux)
        outcome: dict = {}
        reader = recv_on_thread(a, outcome, "a")
        lends.wait_lent()
        a.close()
        reader.join(WAIT)
        assert isinstance(outcome["a"], links.ClosedError) and lends.active == 0
        b.send({"b": 1})
        assert b.recv(timeout=WAIT) == {"b": 1}
        b.close()


def test_a_reset_a_go_away_and_the_end_of_the_connection_while_a_thread_borrows(lends, poll, timer):
    with socket.create_server(("127.0.0.1", 0)) as listener:
        mux = links.mux.connect(f"127.0.0.1:{listener.getsockname()[1]}", poll_handler=poll, timer=timer, timeout=WAIT)
        raw, _ = listener.accept()
        with mux, RawPeer(raw) as peer:
            a, b, c, d = (mux.open(protocol=Json, timeout=WAIT) for _ in range(4))  # streams 1, 3, 5, 7
            poll.sync()  # the TCP connection's reader is registered: its reading can be lent
            outcome: dict = {}
            reader = recv_on_thread(a, outcome, "a")
            lends.wait_lent()
            peer.send(header(WINDOW_UPDATE, RST, 1, 0))
            reader.join(WAIT)
            assert isinstance(outcome["a"], links.BrokenError) and outcome["a"].reason == "mux.stream_reset"

            reader = recv_on_thread(b, outcome, "b")
            lends.wait_lent()
            peer.send(header(GO_AWAY, 0, 0, 0))  # no new channel; those open carry on
            peer.data(3, json_frame({"b": 1}))
            reader.join(WAIT)
            assert outcome["b"] == [{"b": 1}]

            readers = [recv_on_thread(c, outcome, "c")]
            lends.wait_lent()
            readers.append(recv_on_thread(d, outcome, "d"))  # on its condition (or not yet in recv)
            peer.close()
            for reader in readers:
                reader.join(WAIT)
            for key in "cd":
                assert isinstance(outcome[key], links.BrokenError) and outcome[key].reason == "mux.connection_lost"
            assert lends.active == 0


def test_a_hostile_frame_read_by_the_borrowing_thread_ends_that_connection_alone(lends, poll, timer, logs):
    # The waiting thread reads what the poll thread would, hostile bytes too: a trickled frame
    # is put together, a bad version ends the TCP connection under the channels with its
    # reason logged, both channels on it see BrokenError, and the poll thread serves the rest.
    with socket.create_server(("127.0.0.1", 0)) as listener, serve(poll, timer) as other_svc:
        mux = links.mux.connect(f"127.0.0.1:{listener.getsockname()[1]}", poll_handler=poll, timer=timer, timeout=WAIT)
        raw, _ = listener.accept()
        with mux, RawPeer(raw) as peer, dial(other_svc, poll, timer) as other:
            a, b = mux.open(protocol=Json, timeout=WAIT), mux.open(protocol=Json, timeout=WAIT)  # streams 1, 3
            poll.sync()  # the TCP connection's reader is registered: its reading can be lent
            outcome: dict = {}
            reader = recv_on_thread(a, outcome, "a")
            lends.wait_lent()
            for byte in header(DATA, 0, 1, 0):  # an empty DATA frame, a byte at a time
                peer.send(bytes([byte]))
            peer.data(1, json_frame({"a": 1}))
            reader.join(WAIT)
            assert outcome["a"] == [{"a": 1}]
            reader = recv_on_thread(a, outcome, "a")
            lends.wait_lent()
            peer.send(b"\x07" + header(PING, SYN, 0, 1)[1:])  # yamux version 7
            reader.join(WAIT)
            assert isinstance(outcome["a"], links.BrokenError) and outcome["a"].reason == "mux.connection_lost"
            logs.expect("mux.protocol_error", reason="mux.bad_version")
            with pytest.raises(links.BrokenError):
                b.recv(timeout=WAIT)
            unharmed = greeted(other)  # the poll thread and other connections carry on
            unharmed.close()
            assert lends.active == 0


def test_bytes_the_borrowing_thread_reads_for_its_channel_arrive_whole_and_in_order(lends, poll, timer):
    # The waiting thread's own bytes land in its channel's buffer directly while they fit, and
    # go through the channel's queue once one does not: one read holding frames of both kinds,
    # and another channel's between them, gives every message whole and in its order.
    with socket.create_server(("127.0.0.1", 0)) as listener:
        mux = links.mux.connect(f"127.0.0.1:{listener.getsockname()[1]}", poll_handler=poll, timer=timer, timeout=WAIT)
        raw, _ = listener.accept()
        with mux, RawPeer(raw) as peer:
            a, b = mux.open(protocol=Json, timeout=WAIT), mux.open(protocol=Json, timeout=WAIT)  # streams 1, 3
            poll.sync()  # the TCP connection's reader is registered: its reading can be lent
            sent = [{"n": i, "pad": "x" * size} for i, size in enumerate([10, 3000, 5, 20_000, 1, 700])]
            data = b"".join(json_frame(m) for m in sent)
            cuts = [0, 7, 60, 61, 3100, 3200, 9000, len(data)]  # frames small, split and large
            outcome: dict = {}
            reader = recv_on_thread(a, outcome, "a", count=len(sent))
            lends.wait_lent()
            frames = [header(DATA, 0, 1, j - i) + data[i:j] for i, j in zip(cuts, cuts[1:])]
            frames.insert(3, header(DATA, 0, 3, len(json_frame({"b": 1}))) + json_frame({"b": 1}))
            peer.send(*frames)  # one write: read together, as far as the kernel goes
            reader.join(WAIT)
            assert outcome["a"] == sent
            assert b.recv(timeout=WAIT) == {"b": 1}
            assert lends.count > 0 and lends.active == 0
            a.close()
            b.close()


def test_a_close_wakes_the_borrowing_thread_with_a_ping_the_peer_answers(lends, poll, timer):
    # The raw peer answers nothing but that PING (not the FIN), and a borrow lasts a minute here.
    with socket.create_server(("127.0.0.1", 0)) as listener:
        mux = links.mux.connect(f"127.0.0.1:{listener.getsockname()[1]}", poll_handler=poll, timer=timer, timeout=WAIT)
        raw, _ = listener.accept()
        with mux, RawPeer(raw) as peer:
            peer.expect(0, SYN, kind=PING)  # the one sent on connect
            a = mux.open(protocol=Json, timeout=WAIT)
            poll.sync()
            outcome: dict = {}
            reader = recv_on_thread(a, outcome, "a")
            lends.wait_lent()
            a.close()
            ping = peer.expect(0, SYN, kind=PING)
            peer.send(header(PING, ACK, 0, ping.length))
            reader.join(WAIT)
            assert isinstance(outcome["a"], links.ClosedError) and lends.active == 0


def test_a_poll_thread_shutting_down_while_a_thread_borrows_ends_its_channels(lends, timer):
    server_poll, client_poll = links.PollHandler(name="server-poll"), links.PollHandler(name="client-poll")
    try:
        with serve(server_poll, timer) as svc, dial(svc, client_poll, timer) as mux:
            a = greeted(mux)
            outcome: dict = {}
            reader = recv_on_thread(a, outcome, "a")
            lends.wait_lent()
            client_poll.shutdown()
            reader.join(WAIT)
            assert isinstance(outcome["a"], links.LinksError) and lends.active == 0
    finally:
        client_poll.shutdown()
        server_poll.shutdown()


# -- TLS, and the poll thread meanwhile -------------------------------------------------------------


def test_channels_over_tls_read_by_the_waiting_thread(lends, poll, timer):
    server_ctx, client_ctx = tls_contexts()
    with serve(poll, timer, tls=server_ctx) as svc, dial(svc, poll, timer, tls=client_ctx) as mux:
        a, b = mux.open(protocol=Json, timeout=WAIT), mux.open(protocol=Json, timeout=WAIT)
        for i in range(100):
            for ch in (a, b):
                ch.send({"i": i})
                assert ch.recv(timeout=WAIT) == {"i": i}
        big = {"big": "y" * 60_000}  # several TLS records, several yamux frames' worth of reads
        a.send(big)
        assert a.recv(timeout=WAIT) == big
        assert lends.count > 0 and lends.active == 0
        a.close()
        b.close()


@pytest.mark.skipif(not os.path.exists("/proc/self/fdinfo"), reason="Linux's /proc tells the epoll interest")
def test_the_poll_thread_does_not_watch_a_borrowed_connection_for_input(lends, poll, timer):
    passes = PollPasses(poll, WAIT)  # before the thread starts
    with serve(poll, timer) as svc, dial(svc, poll, timer) as mux:
        got = links.StoreCallback()
        a = greeted(mux)
        b = greeted(mux, callback=got).into_sender_with_spawned_recver()
        fd = mux.carrier._driver.att.transport.fileno()
        epoll_fd = poll._books.epoll.fileno()
        assert epoll_interest(epoll_fd, fd) & select.EPOLLIN
        outcome: dict = {}
        reader = recv_on_thread(a, outcome, "a")
        lends.wait_lent()
        interest = epoll_interest(epoll_fd, fd)
        before = passes.count
        for i in range(20):  # b's bytes, read by a's thread, then b read by the poll thread
            svc.send_to(server_side(svc, b), {"b": i})
            assert got.find_recv(lambda m, i=i: m == {"b": i}, timeout=WAIT) == {"b": i}
        spent = passes.count - before
        svc.send_to(server_side(svc, a), {"a": 1})
        reader.join(WAIT)
        assert outcome["a"] == [{"a": 1}] and not interest & select.EPOLLIN
        assert spent < 400  # a spinning loop would make thousands: each message takes a few
        assert epoll_interest(epoll_fd, fd) & select.EPOLLIN  # given back
        a.close()
        b.close()
