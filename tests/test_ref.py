"""``Ref``: clones of one handle shared by many threads, closing through any clone, holding
the lock across calls, and the spin-then-park lock itself under contention."""

from __future__ import annotations

import sys
import threading
from contextlib import contextmanager

import pytest
from helpers import Json

import links

WAIT = 5.0
DEFAULT_SPINS = links.SpinParkLock().spins
# Both stages of the lock: parking at once (the default), and spinning first.
SPINS = pytest.mark.parametrize("spins", [0, 16], ids=["park_only", "spins_first"])


@contextmanager
def sender_ref(poll, timer, spins=DEFAULT_SPINS):
    """A ``Ref`` to a client's sender, and the store of a spawned service receiving from it."""
    store = links.StoreCallback()
    with links.Svc.bind("127.0.0.1:0", protocol=Json, callback=store, timer=timer, poll_handler=poll) as svc:
        svc.into_sender_with_spawned_recver()
        with links.Clt.connect(f"127.0.0.1:{svc.local_addr[1]}", protocol=Json, timer=timer, timeout=WAIT) as clt:
            _recver, sender = clt.split()
            yield links.Ref(sender, spins=spins), store


def test_clones_share_the_target(poll, timer):
    with sender_ref(poll, timer) as (ref, _store):
        clone = ref.clone()
        assert clone.target is ref.target and clone.clone().target is ref.target
        assert clone.con_id == ref.con_id


@SPINS
def test_four_threads_sending_through_clones_deliver_everything_in_order(poll, timer, spins):
    n = 250
    with sender_ref(poll, timer, spins) as (ref, store):
        clones = [ref.clone() for _ in range(4)]
        start = threading.Barrier(4)

        def run(t: int) -> None:
            start.wait(WAIT)
            for i in range(n):
                clones[t].send({"t": t, "i": i, "pad": "x" * (i % 50)})

        threads = [threading.Thread(target=run, args=(t,)) for t in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(WAIT)
        # Every frame decoded (an interleaved frame would fail to decode and close the link).
        assert store.wait_recv_count(4 * n, timeout=WAIT)
        got = store.recv_msgs()
        for t in range(4):
            assert [m["i"] for m in got if m["t"] == t] == list(range(n))


def test_closing_one_clone_closes_the_connection_for_all(poll, timer):
    with sender_ref(poll, timer) as (ref, store):
        clones = [ref, ref.clone(), ref.clone()]
        clones[1].send({"n": 1})
        assert store.find_recv(timeout=WAIT) == {"n": 1}
        clones[2].close()
        for clone in clones:
            assert not clone.is_connected()
            with pytest.raises(links.ClosedError):
                clone.send({"n": 2})


@SPINS
def test_locked_holds_the_lock_against_every_clone(poll, timer, spins):
    with sender_ref(poll, timer, spins) as (ref, store):
        other = ref.clone()
        started, done = threading.Event(), threading.Event()

        def send_from_other_thread() -> None:
            started.set()
            other.send({"from": "other"})
            done.set()

        thread = threading.Thread(target=send_from_other_thread)
        with ref.locked() as sender:
            assert sender is ref.target
            thread.start()
            assert started.wait(WAIT)
            # Without the lock this send would finish in microseconds.
            assert not done.wait(0.2)
            sender.send({"from": "holder", "i": 0})
            sender.send({"from": "holder", "i": 1})
        assert done.wait(WAIT)
        thread.join(WAIT)
        assert store.wait_recv_count(3, timeout=WAIT)
        assert store.recv_msgs() == [{"from": "holder", "i": 0}, {"from": "holder", "i": 1}, {"from": "other"}]


@SPINS
def test_spin_park_lock_excludes_under_contention(spins):
    lock = links.SpinParkLock(spins)
    counter = [0]
    per_thread = 5000
    start = threading.Barrier(4)

    def bump() -> None:
        start.wait(WAIT)
        for _ in range(per_thread):
            with lock:
                assert lock.locked()
                value = counter[0]
                for _ in range(20):  # loop back-edges are switch points: unguarded, this races
                    pass
                counter[0] = value + 1

    old = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # switch threads as often as possible, to provoke a race
    try:
        threads = [threading.Thread(target=bump) for _ in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(WAIT * 2)
    finally:
        sys.setswitchinterval(old)
    assert counter[0] == 4 * per_thread
    assert not lock.locked()
