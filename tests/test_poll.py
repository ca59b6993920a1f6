"""``PollHandler`` with real connections: a failing receiver is removed alone, shutdown closes
what it services, nothing registers after shutdown, and a flooding peer cannot starve others."""

from __future__ import annotations

import math
import selectors
import socket
import subprocess
import sys
import threading
from contextlib import ExitStack, contextmanager

import pytest
from helpers import Json, epoll_interest, watch_logs

import links
from links.testing import FakeClock

WAIT = 5.0


class Raw(links.Protocol):
    framer = links.LengthPrefixFramer(header_size=2, max_frame_size=1 << 12)
    messenger = links.RawMessenger()


def addr(svc: links.Svc) -> str:
    return f"127.0.0.1:{svc.local_addr[1]}"


def server_con_id(svc: links.Svc, client: links.Clt) -> str:
    return str(links.ConId(links.Role.ACCEPTOR, svc.name, svc.local_addr, client.con_id.local))


class Boom(links.Callback):
    def on_recv(self, con_id, msg):
        if msg.get("boom"):
            raise RuntimeError("callback failed")


def test_a_failing_receiver_is_removed_alone(timer, poll):
    store = links.StoreCallback()
    with watch_logs() as logs, ExitStack() as stack:
        svc = stack.enter_context(
            links.Svc.bind("127.0.0.1:0", protocol=Json, callback=Boom() + store, timer=timer, poll_handler=poll)
        )
        sender = svc.into_sender_with_spawned_recver()
        bad, good = (
            stack.enter_context(links.Clt.connect(addr(svc), protocol=Json, timer=timer, timeout=WAIT))
            for _ in range(2)
        )
        for k, c in enumerate((bad, good)):
            c.send({"hello": k})
            assert store.find_recv(lambda m, k=k: m == {"hello": k}, timeout=WAIT)

        bad.send({"boom": True})
        bad_id = server_con_id(svc, bad)
        failed = logs.wait("poll.handler_failed", con_id=bad_id)
        assert failed is not None and "callback failed" in failed["error"]
        assert logs.wait("poll.recver.removed", con_id=bad_id, reason="failed")
        with pytest.raises(links.BrokenError):  # its connection was closed
            bad.recv(timeout=WAIT)

        good.send({"after": True})
        assert store.find_recv(lambda m: m == {"after": True}, timeout=WAIT)
        poll.sync()
        assert [c.peer for c in sender.con_ids()] == [good.con_id.local]
        assert sender.send({"back": True}) is links.SendStatus.COMPLETED
        assert good.recv(timeout=WAIT) == {"back": True}


def test_registering_after_shutdown_raises(timer, poll):
    poll.shutdown()
    with links.Svc.bind("127.0.0.1:0", protocol=Json, timer=timer, poll_handler=poll) as svc:
        with pytest.raises(RuntimeError):
            svc.into_sender_with_spawned_recver()
        clt = links.Clt.connect(addr(svc), protocol=Json, timer=timer, poll_handler=poll, timeout=WAIT)
        with clt, pytest.raises(RuntimeError):
            clt.into_sender_with_spawned_recver()


def test_shutdown_lets_a_graceful_close_end_first_and_is_bounded_when_it_never_does():
    poll = links.PollHandler("test-linger")
    ended = threading.Event()
    done, never = poll.linger(), poll.linger()
    done()  # ended already: nothing to wait for
    poll.call_soon(ended.set)  # the thread runs
    assert ended.wait(WAIT)
    stopper = threading.Thread(target=poll.shutdown, kwargs={"timeout": 0.4})
    stopper.start()
    stopper.join(WAIT)  # ``never`` is waited for half the timeout, no more
    assert not stopper.is_alive()
    assert repr(poll).startswith("PollHandler('test-linger', stopped")
    never()  # after the end: harmless


def test_shutdown_from_a_timer_task_waits_for_no_graceful_close(timer):
    # A runtime thread never waits: the timer's other tasks (a close's own deadline among
    # them) would wait with it.
    poll = links.PollHandler("test-linger-timer")
    started, stopped = threading.Event(), threading.Event()
    poll.linger()  # never done
    poll.call_soon(started.set)
    assert started.wait(WAIT)

    def stop() -> links.TaskStatus:
        poll.shutdown(timeout=60.0)  # half of it would be the wait
        stopped.set()
        return links.TaskStatus.TERMINATE

    timer.schedule("stop", 1.0, stop, delay=0)
    assert stopped.wait(WAIT)


def test_shutdown_closes_spawned_connections(timer, poll):
    gone = threading.Event()

    class Watched(Json):
        def on_disconnect(self, con_id):
            gone.set()

    with links.Svc.bind("127.0.0.1:0", protocol=Json, timer=timer) as svc:
        clt = links.Clt.connect(addr(svc), protocol=Watched, timer=timer, poll_handler=poll, timeout=WAIT)
        sender = clt.into_sender_with_spawned_recver()
        with svc.accept(timeout=WAIT) as server:
            sender.send({"n": 1})
            assert server.recv(timeout=WAIT) == {"n": 1}
            poll.shutdown()
            assert gone.is_set()  # shutdown returns after closing what it serviced
            assert not sender.is_connected()
            with pytest.raises(links.ClosedError):
                sender.send({"n": 2})
            with pytest.raises(links.BrokenError):
                server.recv(timeout=WAIT)


class EpollSubclass(selectors.DefaultSelector):
    """Not the stdlib's own class: the poll handler reads it through ``select()``."""


SELECTORS = [selectors.DefaultSelector, EpollSubclass] + [
    getattr(selectors, n) for n in ("PollSelector", "SelectSelector") if hasattr(selectors, n)
]


@pytest.mark.parametrize("selector", SELECTORS, ids=lambda s: s.__name__)
def test_any_selector_serves_connections_and_drops_the_closed_ones(timer, selector):
    poll = links.PollHandler("test-selector", selector=selector)
    try:
        with watch_logs() as logs, links.Svc.bind("127.0.0.1:0", protocol=RawEcho, timer=timer, poll_handler=poll) as svc:
            svc.into_sender_with_spawned_recver()
            with ExitStack() as stack:
                clts = [stack.enter_context(links.Clt.connect(addr(svc), protocol=Raw, timer=timer, timeout=WAIT))
                        for _ in range(3)]  # fmt: skip
                for n, clt in enumerate(clts):
                    clt.send(b"%d" % n)
                    assert clt.recv(timeout=WAIT) == b"%d" % n
                gone = clts.pop(1)
                gone.close()
                assert logs.wait("poll.recver.removed", con_id=server_con_id(svc, gone))
                assert poll.handler_count == 3  # the acceptor and the two still connected
                for clt in clts:
                    clt.send(b"still")
                    assert clt.recv(timeout=WAIT) == b"still"
    finally:
        poll.shutdown(WAIT)
    assert poll.handler_count == 0


class Reader:
    """A bare handler (what ``PollHandler.add`` takes): notes each call, reads what is there."""

    poll_kind = "recver"

    def __init__(self, name: str, sock: socket.socket, calls: list[str]) -> None:
        sock.setblocking(False)
        self.name, self.sock, self.calls, self.closed = name, sock, calls, False

    def fileno(self) -> int:
        return self.sock.fileno()

    def on_readable(self) -> bool:
        self.calls.append(self.name)
        try:
            self.sock.recv(64)
        except BlockingIOError:
            pass
        return True

    def on_poll_failure(self, error):
        pass


@pytest.mark.parametrize("reuse_fd", [False, True], ids=["", "fd_reused"])
@pytest.mark.parametrize("selector", SELECTORS, ids=lambda s: s.__name__)
def test_a_handler_removed_earlier_in_the_same_pass_gets_no_call(selector, reuse_fd):
    """Two handlers ready in one pass; the first removes the other (closing its socket) and,
    with ``reuse_fd``, registers a third on a new socket that takes the freed fd number. The
    removed one's event of that pass reaches neither the removed handler nor the new one."""
    calls: list[str] = []  # appended on the poll thread only; read after an event it set
    armed, entered, held = threading.Event(), threading.Event(), threading.Event()
    first_done, called_again = threading.Event(), threading.Event()
    reused: list[bool] = []
    poll = links.PollHandler("test-same-pass", selector=selector)
    socks: list[socket.socket] = []

    class Remover(Reader):
        def on_readable(self) -> bool:
            super().on_readable()
            if armed.is_set():
                armed.clear()
                other = pair[1] if self is pair[0] else pair[0]
                freed = other.fileno()
                other.closed = True
                poll.remove(other, "removed by the first", then=other.sock.close)  # inline: poll thread
                if reuse_fd:
                    a, b = socket.socketpair()
                    socks.extend((a, b))
                    reused.append(a.fileno() == freed)  # the lowest free number: the one just closed
                    poll.add(Reader("new", a, calls))  # inline too: called once, at registration
                first_done.set()
            elif calls.count(self.name) == 2:
                called_again.set()
            return True

    try:
        ends = [socket.socketpair() for _ in range(2)]
        socks.extend(end for pair_ in ends for end in pair_)
        pair = [Remover(name, end[0], calls) for name, end in zip("XY", ends)]
        for handler in pair:
            poll.add(handler)
        assert poll.sync(WAIT)
        calls.clear()
        armed.set()
        poll.call_soon(lambda: (entered.set(), held.wait(WAIT)))
        assert entered.wait(WAIT)  # the poll thread is held: both become ready before its next poll
        for end in ends:
            end[1].send(b"x")
        held.set()
        assert first_done.wait(WAIT)
        first = calls[0]
        # Its read is done: this byte is reported by a later poll, once the pass under test is over.
        ends["XY".index(first)][1].send(b"x")
        assert called_again.wait(WAIT)
        assert reused == ([True] if reuse_fd else [])
        assert calls == [first] + (["new"] if reuse_fd else []) + [first]
    finally:
        held.set()
        poll.shutdown(WAIT)
        for sock in socks:
            sock.close()


class Traffic(links.Callback):
    """Counts flood frames; notes how many had arrived when the quiet peer's one frame did."""

    def __init__(self) -> None:
        self.cond = threading.Condition()
        self.flood = 0
        self.flood_at_quiet: int | None = None

    def on_recv(self, con_id, msg):
        with self.cond:
            if msg == b"quiet":
                self.flood_at_quiet = self.flood
            else:
                self.flood += 1
            self.cond.notify_all()

    def wait(self, predicate) -> bool:
        with self.cond:
            return self.cond.wait_for(predicate, WAIT)


FLOODER = """
import socket, struct, sys
frame = struct.pack("!H", 64) + b"f" * 64
blob = frame * 1000
sock = socket.create_connection(("127.0.0.1", int(sys.argv[1])))
try:
    while True:
        sock.sendall(blob)
except OSError:
    pass
"""


def test_a_flooding_peer_does_not_starve_a_quiet_one(timer, poll):
    traffic = Traffic()
    with links.Svc.bind("127.0.0.1:0", protocol=Raw, callback=traffic, timer=timer, poll_handler=poll) as svc:
        svc.into_sender_with_spawned_recver()
        # The flood comes from another process, which refills its socket as fast as the kernel
        # takes bytes, faster than the poll thread decodes frames: a poll thread that drained
        # one socket before looking at the others would never get to the quiet one.
        flooder = subprocess.Popen([sys.executable, "-c", FLOODER, str(svc.local_addr[1])])
        try:
            with links.Clt.connect(addr(svc), protocol=Raw, timer=timer, timeout=WAIT) as quiet:
                assert traffic.wait(lambda: traffic.flood >= 5000)  # the flood is on
                quiet.send(b"quiet")
                assert traffic.wait(lambda: traffic.flood_at_quiet is not None)
                # It arrived while the flood was still going: thousands more flood frames follow it.
                after = traffic.flood_at_quiet + 5000
                assert traffic.wait(lambda: traffic.flood >= after)
                assert flooder.poll() is None
        finally:
            flooder.kill()
            flooder.wait(WAIT)


# -- busy polling ---------------------------------------------------------------------------


class RawEcho(Raw):
    def send_reply(self, msg, con):
        con.send(msg)


@pytest.mark.parametrize("busy_poll", [-1e-6, float("nan")])
def test_busy_poll_must_be_a_duration(busy_poll):
    with pytest.raises(ValueError, match="busy_poll"):
        links.PollHandler(busy_poll=busy_poll)


@pytest.mark.parametrize("window", [1e-3, 60.0, math.inf])
def test_a_busy_polling_handler_serves_and_shuts_down(timer, window):
    with busy_server(timer, window, protocol=RawEcho, name="test-busy-poll") as (poll, clt):
        assert poll.busy_poll == window
        for n in range(200):
            clt.send(b"%d" % n)
            assert clt.recv(timeout=WAIT) == b"%d" % n
    # Shut down even mid-spin (window 60 s, or for ever): shutdown is a command, seen every pass.
    assert not [t for t in threading.enumerate() if t.name == "test-busy-poll"]


class SleepRecorder(selectors.DefaultSelector):
    """A selector that watches the poll thread from ``arm()`` on: how often it polls
    (``select(0)``) before it first goes to sleep (a ``select()`` without a timeout).

    Time is a ``FakeClock`` that only polls move: each one takes ``STEP`` seconds, so a window
    of ``w`` seconds is ``w / STEP`` polls, whatever the machine's speed.
    """

    STEP = 2**-12  # exact in binary, so that a window of whole steps is exactly that many polls
    POLLS = 1000  # ``polled`` is set after this many polls without sleeping

    def __init__(self) -> None:
        super().__init__()
        self.clock = FakeClock()
        self.armed = False
        self.polls: int | None = None  # polls from arm() to the first sleep, once it slept
        self._count = 0
        self.slept, self.polled = threading.Event(), threading.Event()

    def arm(self) -> None:
        self.armed, self.polls, self._count = True, None, 0
        self.slept.clear()
        self.polled.clear()

    def select(self, timeout=None):
        if timeout is not None:
            self.clock.advance(self.STEP)
        if self.armed and self.polls is None:
            if timeout is None:
                self.polls = self._count
                self.slept.set()
            else:
                self._count += 1
                if self._count == self.POLLS:
                    self.polled.set()
        return super().select(timeout)


class Held(links.Callback):
    """Holds the poll thread inside ``on_recv`` for ``hold`` seconds of the recorder's clock (a
    handler with work to do), then arms the recorder, on the poll thread, as its last act."""

    def __init__(self, recorder: SleepRecorder, hold: float = 0.0) -> None:
        self.recorder, self.hold = recorder, hold

    def on_recv(self, con_id, msg):
        self.recorder.clock.advance(self.hold)  # the work's time
        self.recorder.arm()


@contextmanager
def busy_server(timer, window, *, protocol=Raw, callback=None, recorder=None, name="test-busy"):
    """A client connected to a spawned service on a busy-polling handler (watched by
    ``recorder`` and timed by its clock, if given); yields ``(poll, clt)``."""
    extra = {} if recorder is None else {"selector": lambda: recorder, "clock": recorder.clock}
    poll = links.PollHandler(name, busy_poll=window, **extra)
    try:
        with links.Svc.bind("127.0.0.1:0", protocol=protocol, callback=callback, timer=timer, poll_handler=poll) as svc:
            svc.into_sender_with_spawned_recver()
            with links.Clt.connect(addr(svc), protocol=Raw, timer=timer, timeout=WAIT) as clt:
                yield poll, clt
    finally:
        poll.shutdown(WAIT)


def test_busy_polling_polls_within_its_window_and_sleeps_after_it(timer):
    recorder = SleepRecorder()
    with busy_server(timer, 60.0, callback=Held(recorder), recorder=recorder) as (_, clt):
        clt.send(b"work")
        assert recorder.polled.wait(WAIT)  # a thousand polls after the work, and no sleep
        assert recorder.polls is None
    window = 8 * SleepRecorder.STEP
    recorder = SleepRecorder()
    with busy_server(timer, window, callback=Held(recorder), recorder=recorder) as (_, clt):
        clt.send(b"work")
        assert recorder.slept.wait(WAIT)  # the window is over: asleep, as a default handler is
        assert recorder.polls == 8  # the whole window, no more


def test_the_busy_window_starts_after_the_work_not_before_it(timer):
    window = 8 * SleepRecorder.STEP
    recorder = SleepRecorder()
    with busy_server(timer, window, callback=Held(recorder, hold=1.5 * window), recorder=recorder) as (_, clt):
        clt.send(b"work")
        assert recorder.slept.wait(WAIT)
        # The work outlasted the window: counted from the event, the window would be over
        # when the work ends, and the thread would sleep at once. Counted from the end of the
        # work, it polls a whole window first.
        assert recorder.polls == 8, recorder.polls


@pytest.mark.skipif(not hasattr(selectors, "EpollSelector"), reason="Linux's /proc tells the epoll interest")
def test_a_connection_closed_by_a_user_thread_is_not_read_again_while_its_close_runs(timer, poll):
    # The closing thread shuts the socket down, then runs on_disconnect, then has the fd
    # removed: meanwhile the poll thread must not see the hang-up on every pass (a spin that
    # holds the interpreter lock from the very thread that is closing).
    entered, release = threading.Event(), threading.Event()

    class Slow(Raw):
        def on_disconnect(self, con):
            entered.set()
            release.wait(WAIT)

    with links.Svc.bind("127.0.0.1:0", protocol=Raw, timer=timer, poll_handler=poll) as svc:
        svc.into_sender_with_spawned_recver()
        clt = links.Clt.connect(addr(svc), protocol=Slow, timer=timer, poll_handler=poll, timeout=WAIT)
        fd = clt._con.attachment.transport.fileno()
        sender = clt.into_sender_with_spawned_recver()
        assert poll.sync(WAIT)
        epoll_fd = poll._books.epoll.fileno()
        assert epoll_interest(epoll_fd, fd) & selectors.EVENT_READ
        closing = threading.Thread(target=sender.close)
        closing.start()
        try:
            assert entered.wait(WAIT)
            assert poll.sync(WAIT) and poll.sync(WAIT)  # the poll thread saw the hang-up by now
            assert not (epoll_interest(epoll_fd, fd) or 0) & 0x001  # EPOLLIN
        finally:
            release.set()
            closing.join(WAIT)
