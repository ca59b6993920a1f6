"""A user thread that finds many bytes queued for the TCP connection under the channels, and
that connection being written by another thread, waits for it and writes them itself
(``MuxDriver._flush``, "Locks"): threads that only queue would keep the interpreter from the
writer. A runtime thread (the poll thread, the timer, a borrowing reader) never waits, nor
does a thread running an asyncio loop."""

from __future__ import annotations

import asyncio
import socket
import threading

import pytest
from helpers_yamux import DATA, RawPeer

import links
import links.aio
import links.mux
from links._threads import runtime_thread
from links.mux import _driver

WAIT = 5.0


class Bytes(links.Protocol):
    framer = links.LengthPrefixFramer(header_size=4, max_frame_size=1 << 20)
    messenger = links.RawMessenger()


class WatchedLock:
    """The physical write lock, telling the test when a thread waits for it."""

    def __init__(self, lock) -> None:
        self.lock, self.waiting = lock, threading.Event()

    def acquire(self, blocking: bool = True, timeout: float = -1) -> bool:
        if blocking and not self.lock.acquire(False):
            self.waiting.set()
            return self.lock.acquire(True, timeout)
        return blocking or self.lock.acquire(False)

    def release(self) -> None:
        self.lock.release()


@pytest.fixture
def linked(poll, timer, monkeypatch):
    monkeypatch.setattr(_driver, "HELP_WRITE", 1000)  # a long queue, for this test
    monkeypatch.setattr(_driver, "LOCK_WAIT", WAIT)  # however late this test lets the lock go
    with socket.create_server(("127.0.0.1", 0)) as listener:
        mux = links.mux.connect(f"127.0.0.1:{listener.getsockname()[1]}", poll_handler=poll, timer=timer, timeout=WAIT)
        raw, _ = listener.accept()
        with mux, RawPeer(raw) as peer:
            yield mux, peer


def send_while_written(mux, runtime: bool) -> tuple[WatchedLock, threading.Thread]:
    """A 5,000 B send on a new channel (stream 1) while this thread holds the physical write
    lock; on a runtime thread if ``runtime``. Returns the watched lock, still held."""
    ch = mux.open(protocol=Bytes, timeout=WAIT)
    driver = mux.carrier._driver
    lock = driver.write_lock = WatchedLock(driver.write_lock)
    lock.lock.acquire()

    def send() -> None:
        if runtime:
            with runtime_thread():
                ch.send(bytes(5000), timeout=0)
        else:
            ch.send(bytes(5000), timeout=WAIT)

    sender = threading.Thread(target=send)
    sender.start()
    return lock, sender


def test_a_user_thread_finding_a_long_queue_waits_to_write_it(linked):
    mux, peer = linked
    lock, sender = send_while_written(mux, runtime=False)
    assert lock.waiting.wait(WAIT)  # it waits for the writer instead of leaving it the bytes
    lock.release()
    sender.join(WAIT)
    payload = peer.data_on(1, 5004)  # written by the sender: this thread writes nothing
    assert payload == (5000).to_bytes(4, "big") + bytes(5000)


def test_a_coroutine_on_an_event_loop_leaves_the_queue_to_the_writer(linked):
    mux, peer = linked
    ch = mux.open(protocol=Bytes, timeout=WAIT)
    driver = mux.carrier._driver
    lock = driver.write_lock = WatchedLock(driver.write_lock)
    lock.lock.acquire()

    async def send() -> links.SendStatus:
        return links.aio.wrap(ch).send_nowait(bytes(5000))  # on the loop's thread

    try:
        assert asyncio.run(send()) is links.SendStatus.COMPLETED
    finally:
        lock.release()
    assert not lock.waiting.is_set()  # the loop's other coroutines never waited behind it


def test_a_runtime_thread_leaves_the_queue_to_the_writer(linked):
    mux, peer = linked
    lock, sender = send_while_written(mux, runtime=True)
    sender.join(WAIT)  # returns without waiting for the lock
    assert not sender.is_alive() and not lock.waiting.is_set()
    lock.release()
    mux.carrier._driver.ping()  # the next step looks at the engine and writes what is queued
    assert peer.expect(1, kind=DATA).length > 0
