"""Which threads may never wait on a peer: the runtime's own.

The poll thread services every connection and the timer thread runs every heartbeat and
deadline; a wait on one peer's socket there would stall all the others. A send made on
either (a protocol's reply, a heartbeat, a login started in ``on_connect``) is therefore
treated as ``timeout=0`` whatever timeout it names: it is taken or refused at once, never
waited for. The runtime threads register themselves here when they start; so does a caller
while it reads a connection in the poll thread's stead (``links._lease``): what it dispatches
then runs under the poll thread's rules.
"""

from __future__ import annotations

import sys
import threading

__all__ = ["runtime_thread", "on_runtime_thread", "in_event_loop"]

# Added to and discarded from without a lock: each is one atomic set operation (the GIL's, or
# the set's own lock without one), and a thread only ever adds or discards its own id. A
# caller that borrows the reading (links._lease) enters and leaves once per call: a lock here
# was half of what that costs.
_idents: set[int] = set()
_get_ident = threading.get_ident


class runtime_thread:  # noqa: N801 - used as a context manager around a thread's body
    """``with runtime_thread():`` marks the calling thread as a runtime thread while inside."""

    def __enter__(self) -> None:
        _idents.add(_get_ident())

    def __exit__(self, *exc: object) -> None:
        _idents.discard(_get_ident())


def on_runtime_thread() -> bool:
    """Whether the calling thread is a poll or timer thread, or one reading in the poll
    thread's stead (``links._lease``): it must never wait on a socket."""
    return _get_ident() in _idents


def in_event_loop() -> bool:
    """Whether the calling thread runs an asyncio event loop now (``links.aio``): a wait there
    stops every coroutine of that loop."""
    asyncio = sys.modules.get("asyncio")  # not imported: no loop can be running
    return asyncio is not None and asyncio._get_running_loop() is not None
