"""Interleavings of a channel's one-step send (``MuxDriver.send_now``) with other threads,
forced at the one point where they meet: the physical write lock held, the driver's lock
not yet taken. A real yamux peer spoken by hand on loopback."""

from __future__ import annotations

import socket
import threading

from helpers import Json
from helpers_yamux import ACK, DATA, RST, SYN, WINDOW_UPDATE, RawPeer, header, json_frame

import links
import links.mux

WAIT = 5.0


class _HookedLock:
    """The driver's lock, running ``hook`` (once) when the armed thread takes it while the
    physical write lock is held: the moment ``send_now`` is between its two locks."""

    def __init__(self, real: threading.Lock, write_lock: threading.Lock) -> None:
        self.real = real
        self.write_lock = write_lock
        self.hook = None
        self.thread: int | None = None

    def acquire(self, blocking: bool = True, timeout: float = -1) -> bool:
        hook = self.hook
        if hook is not None and threading.get_ident() == self.thread and self.write_lock.locked():
            self.hook = None
            hook()
        return self.real.acquire(blocking, timeout)

    def release(self) -> None:
        self.real.release()

    def locked(self) -> bool:
        return self.real.locked()

    def __enter__(self) -> bool:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


def _accepted_pair(peer: RawPeer, mux: links.mux.Mux, callback=None):
    a = mux.open(protocol=Json, callback=callback, timeout=WAIT)
    b = mux.open(protocol=Json, timeout=WAIT)  # streams 1, 3
    for sid in (1, 3):
        peer.expect(sid, SYN)
        peer.send(header(WINDOW_UPDATE, ACK, sid, 0))
    return a, b


def _hook_send_now(driver, hook) -> _HookedLock:
    hooked = _HookedLock(driver.lock, driver.write_lock)
    driver.lock = hooked
    hooked.hook, hooked.thread = hook, threading.get_ident()
    return hooked


def _data_within(peer: RawPeer, sid: int, seconds: float):
    peer.sock.settimeout(seconds)
    try:
        return peer.expect(sid, kind=DATA)
    except TimeoutError:
        return None
    finally:
        peer.sock.settimeout(WAIT)


def test_a_send_that_finds_its_channel_ended_in_send_now_does_not_strand_others_output(poll, timer):
    # a is read by the poll thread. A send on a takes the physical write lock in send_now;
    # meanwhile (before it takes the driver's lock) b's send queues its frame in the engine
    # and leaves it to the write lock's holder (see Locks in links/mux/_driver.py), and the
    # peer resets a, which the poll thread reads: it ends a's channel (lost: the stream shut
    # both ways; its flush finds the write lock held too). Then a's send_now finds the stream
    # shut: ClosedError, raised without looking at the engine again, and the channel's send
    # path does not end the (already ended) attachment, so nothing releases the driver. b was
    # told COMPLETED; its frame must still reach the peer.
    with socket.create_server(("127.0.0.1", 0)) as listener:
        listener.settimeout(WAIT)
        addr = f"127.0.0.1:{listener.getsockname()[1]}"
        with links.mux.connect(addr, poll_handler=poll, timer=timer, timeout=WAIT, keepalive=None) as mux:
            raw, _ = listener.accept()
            with RawPeer(raw) as peer:
                a, b = _accepted_pair(peer, mux)
                a = a.into_sender_with_spawned_recver()
                driver = mux.carrier._driver
                a_ended = threading.Event()
                a._con.add_listener(lambda _con: a_ended.set())
                sent: dict = {}

                def b_sends() -> None:
                    sent["b"] = b.send({"b": 1})

                def hook() -> None:  # a's send holds the physical write lock now
                    other = threading.Thread(target=b_sends)
                    other.start()
                    other.join(WAIT)
                    peer.send(header(WINDOW_UPDATE, RST, 1, 0))
                    assert a_ended.wait(WAIT)

                hooked = _hook_send_now(driver, hook)
                try:
                    a.send({"a": 1})
                except links.LinksError:
                    pass  # a's channel ended: refused, as it should be
                assert hooked.hook is None, "the interleaving was not reached"
                assert sent["b"] == links.SendStatus.COMPLETED
                frame = _data_within(peer, 3, 2.0)
                stranded = driver.engine.has_output
                driver.lock = hooked.real
                assert frame is not None and frame.payload == json_frame({"b": 1}), (
                    f"b's frame was not written (left in the engine: {stranded})"
                )
                b.close()
