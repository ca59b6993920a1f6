"""The wake-ups the poll thread posts to an event loop (links.aio._waker)."""

from __future__ import annotations

import asyncio
import gc
import threading
import weakref

from links.aio._waker import waker_for


def test_a_loop_with_a_waker_is_freed_once_nobody_holds_it() -> None:
    loop = asyncio.new_event_loop()
    waker_for(loop)
    loop.close()
    gone = weakref.ref(loop)
    del loop
    gc.collect()
    assert gone() is None


def test_wake_ups_from_another_thread_run_on_the_loop_and_a_closed_loop_drops_them() -> None:
    loop = asyncio.new_event_loop()
    ran: list[int] = []
    try:
        waker = waker_for(loop)
        assert waker_for(loop) is waker  # one per loop
        posted = threading.Thread(target=lambda: [waker.wake(lambda i=i: ran.append(i)) for i in range(3)])
        posted.start()
        posted.join(5)
        loop.run_until_complete(asyncio.sleep(0))
        assert ran == [0, 1, 2]
    finally:
        loop.close()
    waker.wake(lambda: ran.append(99))  # nothing raised, nothing run
    assert ran == [0, 1, 2]
