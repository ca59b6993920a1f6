"""Interpreter exit ends every wait in links.

Python joins the non-daemon threads *before* it runs ``atexit`` hooks. A user thread blocked
in ``recv()`` on a silent peer (or in a ``send`` waiting for room or for a redial) would
therefore hold the interpreter open for ever, and the ``atexit`` hook that stops the runtime
would never run. So links hooks in one step earlier: once the main thread is done (it
returned, called ``sys.exit``, or was interrupted), every connection still open is closed,
as a local ``close()`` (reason ``interpreter_exit``: what it owes is still written), which
ends every wait on it with ``ClosedError``, and then the default runtime stops.

The hook is threading's own "before joining threads" one, the one ``concurrent.futures``
uses to stop its workers; where it is missing, plain ``atexit``. A program whose worker
threads go on using links after the main thread's last line must keep the main thread
alive meanwhile (``join()`` them): links, like ``concurrent.futures``, treats the end of the
main thread as the end of the program.
"""

from __future__ import annotations

import atexit
import threading
import weakref
from typing import Any

__all__ = ["track", "close_everything"]

# Services and connections, with what their close() is called with at exit; one that is
# forgotten drops out by itself (weak references), and closing twice is harmless.
_open: weakref.WeakKeyDictionary[Any, tuple[str, ...]] = weakref.WeakKeyDictionary()
_lock = threading.Lock()
_ARGS: dict[tuple[str, ...], tuple[str, ...]] = {}


def track(closeable: Any, *close_args: str) -> None:
    """Call ``closeable.close(*close_args)`` at interpreter exit."""
    with _lock:
        # One tuple per kind, not per connection: thousands of channels each keep an entry.
        _open[closeable] = _ARGS.setdefault(close_args, close_args)


def close_everything() -> None:
    """Close every service (first: no new connection comes) and connection, then stop the
    default runtime (``links.shutdown``)."""
    from ._runtime import shutdown  # imported late: the runtime's modules import this one

    with _lock:
        tracked = sorted(_open.items(), key=lambda item: bool(item[1]))  # services: no close args
        _open.clear()
    for closeable, args in tracked:
        try:
            closeable.close(*args)
        except Exception:  # noqa: BLE001 - one failure must not keep the others open
            pass
    shutdown()


try:
    threading._register_atexit(close_everything)  # type: ignore[attr-defined]
except (AttributeError, RuntimeError):  # another Python, or imported during shutdown itself
    atexit.register(close_everything)
