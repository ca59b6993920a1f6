"""``LoopWaker``: the wake-ups the poll thread posts to one event loop, coalesced.

Every ``call_soon_threadsafe`` writes a byte to the loop's self-pipe: a syscall on the poll
thread (which lets the loop thread take the interpreter's lock there and then) and a pass of
the loop. A hundred connections read in one poll pass would pay it a hundred times. So the
connections of one loop share a ``LoopWaker``: the first wake-up posts one call, and every
wake-up that comes before the loop ran it joins that call.

A loop closed meanwhile: the post fails (``RuntimeError``), the wake-ups are dropped, nothing
is raised on the poll thread. What waits for a posted call is bounded: each connection has at
most one wake-up of each kind outstanding (``links.aio._inbox``, ``wake_pending``).
"""

from __future__ import annotations

import asyncio
import threading
import weakref
from collections.abc import Callable

__all__ = ["LoopWaker", "waker_for"]

_wakers: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, LoopWaker] = weakref.WeakKeyDictionary()
_wakers_lock = threading.Lock()


class LoopWaker:
    """Calls ``fn()`` on ``loop`` for each ``wake(fn)``, one ``call_soon_threadsafe`` for those
    that come before the loop got to the previous one."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        # Weakly: the registry's key is the loop, and a value that held it would keep every
        # loop (and its selector's fds) alive for good.
        self._loop = weakref.ref(loop)
        self._lock = threading.Lock()
        self._due: list[Callable[[], None]] = []
        self._posted = False

    def wake(self, fn: Callable[[], None]) -> None:
        """Any thread: run ``fn`` on the loop soon (dropped if the loop is closed)."""
        with self._lock:
            self._due.append(fn)
            if self._posted:
                return
            self._posted = True
        loop = self._loop()
        if loop is not None:
            try:
                loop.call_soon_threadsafe(self._run)
                return
            except RuntimeError:
                pass
        with self._lock:  # the loop is closed or gone: nobody waits there any more
            self._due.clear()
            self._posted = False

    def _run(self) -> None:
        with self._lock:
            due, self._due = self._due, []
            self._posted = False
        for fn in due:
            fn()


def waker_for(loop: asyncio.AbstractEventLoop) -> LoopWaker:
    """The ``LoopWaker`` of ``loop`` (made on first use, gone with the loop)."""
    with _wakers_lock:
        waker = _wakers.get(loop)
        if waker is None:
            waker = _wakers[loop] = LoopWaker(loop)
        return waker
