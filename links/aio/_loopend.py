"""``LoopEndWatch``: hear of an asyncio event loop's shutdown while the loop still runs.

asyncio has no "closing" hook, but every runner that ends a loop properly (``asyncio.run``,
``asyncio.Runner``, pytest-asyncio's, uvloop's ``run``) calls ``loop.shutdown_asyncgens()``
before ``close()``: it finalizes every async generator the loop saw start, and awaits each
one's ``finally``. So a watch is an async generator of ours, started on the loop's thread while
it runs (the loop's ``firstiter`` hook records it, weakly: the watch keeps it alive), whose
``finally`` awaits ``on_end()``; the loop still runs then, so ``on_end`` may await (a drain).

A loop closed without that (``loop.close()`` alone) never finalizes it: the owner of the
watch finds the loop closed some other way, and ``cancel()``s it (which finishes the
generator here, rather than leave it to a closed loop's finalizer).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import suppress

__all__ = ["LoopEndWatch"]


class LoopEndWatch:
    """Awaits ``on_end()`` when the running loop shuts down (see the module docstring).
    Make it on the loop's thread, inside the running loop."""

    def __init__(self, on_end: Callable[[], Awaitable[None]]) -> None:
        self._gen: AsyncIterator[None] | None = _watch(on_end)
        with suppress(StopIteration):
            self._gen.asend(None).send(None)  # type: ignore[attr-defined]  # its first step: the loop records it

    def cancel(self) -> None:
        """Stop watching; ``on_end`` runs now if it has not (its awaits must not suspend then).
        From inside ``on_end`` itself: only forgets the generator."""
        gen, self._gen = self._gen, None
        if gen is not None:
            with suppress(StopIteration, RuntimeError):  # RuntimeError: it is what runs us now
                gen.aclose().send(None)  # type: ignore[attr-defined]


async def _watch(on_end: Callable[[], Awaitable[None]]) -> AsyncIterator[None]:
    try:
        yield
    finally:
        await on_end()
