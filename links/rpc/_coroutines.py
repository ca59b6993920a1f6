"""``Coroutines``: the async handlers of a ``Server``, run on an event loop the user gives.

A handler written ``async def`` returns a coroutine when the receiving (poll) thread calls
it; nothing of its body has run yet. ``submit`` hands it to the server's loop with
``asyncio.run_coroutine_threadsafe``, whose ``concurrent.futures.Future`` then takes the path
of any handler that returned a future: the reply goes out when it is done, from the loop's
thread, and the poll thread goes on with the other calls meanwhile.

A loop that cannot run it must not leave the caller hanging:

* no loop given, or a loop already closed: ``submit`` raises ``RuntimeError`` at once (the
  coroutine is closed, so Python does not warn that it was never awaited), and the protocol
  answers with an error reply;
* a loop closed while the coroutine is pending (stopped and closed without its tasks being
  cancelled, as ``loop.close()`` after ``run_until_complete``): nothing in asyncio says so,
  so while coroutines are pending a timer task looks at their loops every ``LOOP_CHECK``
  seconds and fails those of a closed loop with ``RuntimeError`` (an error reply); one that
  never started is closed (asyncio still reports the tasks it destroyed pending). A loop
  shut down by ``asyncio.run`` or ``asyncio.Runner`` cancels its tasks itself: those calls
  are answered ``"CancelledError: ..."`` at once. (A loop stopped and never closed may yet
  run again: its calls wait, within the callers' timeouts.)
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine
from concurrent.futures import Future, InvalidStateError
from inspect import CORO_CREATED, getcoroutinestate
from typing import Any

from .._core._status import TaskStatus
from .._timer import Timer

__all__ = ["Coroutines", "LOOP_CHECK"]

#: Seconds between two looks at the loops of pending async handlers (is one closed?).
LOOP_CHECK = 0.25


class Coroutines:
    """The coroutines of one server's async handlers that are pending, and the loops they run on."""

    def __init__(self, timer: Timer | None = None) -> None:
        self._pending: dict[Future[Any], tuple[asyncio.AbstractEventLoop, Coroutine[Any, Any, Any]]] = {}
        self._lock = threading.Lock()
        self.timer = timer
        self._watch: Timer | None = None  # the timer that runs ``_check`` while coroutines are pending

    def __len__(self) -> int:
        return len(self._pending)

    def submit(self, coro: Coroutine[Any, Any, Any], loop: asyncio.AbstractEventLoop | None) -> Future[Any]:
        """Run ``coro`` on ``loop`` (any thread): the future of its outcome.

        Raises:
            RuntimeError: ``loop`` is None or closed (``coro`` is closed, never run).
        """
        if loop is None:
            coro.close()
            raise RuntimeError("an async handler needs an event loop: Server(loop=...), or links.aio.serve_rpc")
        try:
            future = asyncio.run_coroutine_threadsafe(coro, loop)
        except RuntimeError:  # the loop is closed
            coro.close()
            raise
        with self._lock:
            self._pending[future] = (loop, coro)
            # A watch on a timer shut down since (links.shutdown()) runs no more: start another.
            if self._watch is None or self._watch.is_shutdown:
                try:
                    timer = self._timer()
                    timer.schedule("rpc.loop_check", LOOP_CHECK, self._check)
                    self._watch = timer
                except RuntimeError:  # the timer is shut down (the process is ending): no watch
                    pass
        future.add_done_callback(self._done)
        return future

    def _done(self, future: Future[Any]) -> None:
        with self._lock:
            self._pending.pop(future, None)

    def _check(self) -> TaskStatus:
        """Timer thread: fail the coroutines whose loop is closed; stop once none is pending."""
        with self._lock:
            stranded = [(future, coro) for future, (loop, coro) in self._pending.items() if loop.is_closed()]
            for future, _ in stranded:
                del self._pending[future]
            done = not self._pending
            if done:
                self._watch = None
        for future, coro in stranded:
            if getcoroutinestate(coro) == CORO_CREATED:  # posted, never started: close it quietly
                coro.close()
            try:
                future.set_exception(RuntimeError("the event loop was closed before the handler finished"))
            except InvalidStateError:  # it finished just now after all
                pass
        return TaskStatus.TERMINATE if done else TaskStatus.COMPLETED

    def _timer(self) -> Timer:
        if self.timer is not None:
            return self.timer
        from .._runtime import default_timer

        return default_timer()  # not kept: made again after links.shutdown()
