"""What the two asyncio peers (``aio.py``, ``links_aio.py``) share: running a coroutine on the
stdlib loop or on uvloop, and the client's workloads started the harness's way. Not a peer."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

from links.bench import Control, Params


def run(main: Coroutine[Any, Any, None], flavor: str) -> None:
    """``main`` to its end on the loop ``flavor`` names: ``"uvloop"``, else asyncio's own."""
    if flavor == "uvloop":
        import uvloop

        uvloop.run(main)
    else:
        asyncio.run(main)


async def drive(
    ctl: Control, params: Params, result: dict[str, Any], go: asyncio.Event,
    one_way: Callable[[], Awaitable[int]], ping_pong: Callable[[], Awaitable[None]],
) -> None:  # fmt: skip
    """W2: ``ping_pong``, which fills ``result`` itself. Otherwise ``params.clients`` tasks of
    ``one_way`` (each returns what it sent) at once, released by the harness's ``go``, which
    also starts the measured time; their total goes into ``result``."""
    if params.workload == "w2":
        await ping_pong()
        return
    loop = asyncio.get_running_loop()

    def release() -> None:
        result["t0"] = time.perf_counter()
        go.set()

    ctl.on_line("go", lambda: loop.call_soon_threadsafe(release))
    outcomes = await asyncio.gather(*(one_way() for _ in range(params.clients)), return_exceptions=True)
    sent = sum(n for n in outcomes if isinstance(n, int))
    result.update(sent=sent, bytes=sent * params.size, received=0)
