"""``PollHandler`` with real connections: a failing receiver is removed alone, shutdown closes
what it services, nothing registers after shutdown, and a flooding peer cannot starve others."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from contextlib import ExitStack

import pytest
from helpers import Json, watch_logs

import links

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


thread_clocks = pytest.mark.skipif(not hasattr(time, "pthread_getcpuclockid"), reason="needs per-thread CPU clocks")


def thread_cpu(name: str) -> float:
    """CPU seconds the live thread called ``name`` has used so far."""
    [thread] = [t for t in threading.enumerate() if t.name == name]
    return time.clock_gettime(time.pthread_getcpuclockid(thread.ident))


def poll_cpu_over(name: str, seconds: float) -> float:
    """CPU the poll thread uses while the test thread looks away for ``seconds``. An
    observation window, not a wait for anything: no event marks "kept spinning"."""
    before = thread_cpu(name)
    threading.Event().wait(seconds)
    return thread_cpu(name) - before


@pytest.mark.parametrize("busy_poll", [-1e-6, float("nan")])
def test_busy_poll_must_be_a_duration(busy_poll):
    with pytest.raises(ValueError, match="busy_poll"):
        links.PollHandler(busy_poll=busy_poll)


@pytest.mark.parametrize("window", [1e-3, 60.0])
def test_a_busy_polling_handler_serves_and_shuts_down(timer, window):
    poll = links.PollHandler("test-busy-poll", busy_poll=window)
    try:
        with links.Svc.bind("127.0.0.1:0", protocol=RawEcho, timer=timer, poll_handler=poll) as svc:
            svc.into_sender_with_spawned_recver()
            with links.Clt.connect(addr(svc), protocol=Raw, timer=timer, timeout=WAIT) as clt:
                for n in range(200):
                    clt.send(b"%d" % n)
                    assert clt.recv(timeout=WAIT) == b"%d" % n
    finally:
        poll.shutdown(WAIT)  # even mid-spin (window 60 s): shutdown is a command, seen every pass
    assert not [t for t in threading.enumerate() if t.name == "test-busy-poll"]


@thread_clocks
def test_busy_polling_spins_within_its_window_and_parks_after_it(timer):
    spinning = links.PollHandler("test-spin", busy_poll=60.0)
    parking = links.PollHandler("test-park", busy_poll=1e-3)
    try:
        with ExitStack() as stack:
            for poll in (spinning, parking):
                bound = links.Svc.bind("127.0.0.1:0", protocol=RawEcho, timer=timer, poll_handler=poll)
                svc = stack.enter_context(bound)
                svc.into_sender_with_spawned_recver()
                clt = stack.enter_context(links.Clt.connect(addr(svc), protocol=Raw, timer=timer, timeout=WAIT))
                clt.send(b"wake")
                assert clt.recv(timeout=WAIT) == b"wake"  # the poll thread has had an event
            # Within its window the handler asks without sleeping: it burns CPU with nothing to
            # do. Past it (1 ms here), it sleeps in select() like a default handler.
            assert poll_cpu_over("test-spin", 0.3) > 0.05
            assert poll_cpu_over("test-park", 0.3) < 0.02
    finally:
        spinning.shutdown(WAIT)
        parking.shutdown(WAIT)


class Held(links.Callback):
    """Holds the poll thread inside ``on_recv`` until the test lets go: a handler with work to do."""

    def __init__(self) -> None:
        self.entered, self.release, self.left = threading.Event(), threading.Event(), threading.Event()

    def on_recv(self, con_id, msg):
        self.entered.set()
        assert self.release.wait(WAIT)
        self.left.set()


@thread_clocks
def test_the_busy_window_starts_after_the_work_not_before_it(timer):
    poll = links.PollHandler("test-window", busy_poll=0.2)
    held = Held()
    try:
        with links.Svc.bind("127.0.0.1:0", protocol=Raw, callback=held, timer=timer, poll_handler=poll) as svc:
            svc.into_sender_with_spawned_recver()
            with links.Clt.connect(addr(svc), protocol=Raw, timer=timer, timeout=WAIT) as clt:
                clt.send(b"work")
                assert held.entered.wait(WAIT)
                # The handler outlasts the window (0.3 s against 0.2): a window counted from
                # the event would be over by the time the work is done, and the thread would
                # sleep at once. Counted from the end of the work, it still spins.
                threading.Event().wait(0.3)
                held.release.set()
                assert held.left.wait(WAIT)  # not poll.sync(): a command would open a window itself
                assert poll_cpu_over("test-window", 0.1) > 0.03
    finally:
        poll.shutdown(WAIT)
