"""``off_loop``: run a call that may block (a dial, a handshake, a service's close) on a thread
of its own, and await its result on the loop without ever blocking the loop.

Cancelling the awaiting coroutine cannot stop the call (it may sit in ``connect``), so its
result is handed to ``dispose`` once it comes (a connection made for nobody is closed), and a
loop closed meanwhile gets nothing posted: the thread disposes of it itself.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from typing import Any, TypeVar

__all__ = ["off_loop"]

T = TypeVar("T")


async def off_loop(fn: Callable[[], T], dispose: Callable[[T], Any] | None = None, name: str = "links-aio") -> T:
    """``fn()`` on a new daemon thread; its result (or exception) here.

    Raises:
        Whatever ``fn`` raised; ``asyncio.CancelledError`` if the caller is cancelled (the
        result, when it comes, goes to ``dispose``).
    """
    loop = asyncio.get_running_loop()
    fut: asyncio.Future[T] = loop.create_future()

    def settle(result: Any, error: BaseException | None) -> None:  # on the loop
        if fut.cancelled():
            if error is None and dispose is not None:
                dispose(result)
        elif error is not None:
            fut.set_exception(error)
        else:
            fut.set_result(result)

    def run() -> None:
        result: Any = None
        error: BaseException | None = None
        try:
            result = fn()
        except BaseException as e:  # handed to the awaiting coroutine
            error = e
        try:
            loop.call_soon_threadsafe(settle, result, error)
        except RuntimeError:  # the loop is closed: nobody will take it
            if error is None and dispose is not None:
                dispose(result)

    threading.Thread(target=run, name=name, daemon=True).start()
    return await fut
