"""Which threads may never wait on a peer: the runtime's own.

The poll thread services every connection and the timer thread runs every heartbeat and
deadline; a wait on one peer's socket there would stall all the others. A send made on
either (a protocol's reply, a heartbeat, a login started in ``on_connect``) is therefore
treated as ``timeout=0`` whatever timeout it names: it is taken or refused at once, never
waited for. The runtime threads register themselves here when they start.
"""

from __future__ import annotations

import threading

__all__ = ["runtime_thread", "on_runtime_thread"]

_idents: set[int] = set()
_lock = threading.Lock()


class runtime_thread:  # noqa: N801 - used as a context manager around a thread's body
    """``with runtime_thread():`` marks the calling thread as a runtime thread while inside."""

    def __enter__(self) -> None:
        with _lock:
            _idents.add(threading.get_ident())

    def __exit__(self, *exc: object) -> None:
        with _lock:
            _idents.discard(threading.get_ident())


def on_runtime_thread() -> bool:
    """Whether the calling thread is a poll or timer thread (it must never wait on a socket)."""
    return threading.get_ident() in _idents
