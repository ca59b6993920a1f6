"""The default runtime threads: one ``PollHandler`` and one ``Timer`` per process, made lazily.

Nothing starts at import. The first connection that needs a poll thread or a timer creates
it; ``links.shutdown()`` stops both (closing every spawned connection) and the next use
creates fresh ones, which is what test suites want between tests. When the main thread ends,
``links._exit`` closes every connection and calls ``shutdown()`` (``atexit`` does too, should
that hook be missing), so an interpreter never waits on links; both threads are daemons besides.
Pass ``poll_handler=`` / ``timer=`` to ``Clt.connect`` or ``Svc.bind`` to use your own.
"""

from __future__ import annotations

import atexit
import threading

from ._poll import PollHandler
from ._timer import Timer

__all__ = ["default_poll_handler", "default_timer", "shutdown"]

_lock = threading.Lock()
_poll: PollHandler | None = None
_timer: Timer | None = None


def default_poll_handler() -> PollHandler:
    """The shared poll handler, created on first use (and again after ``shutdown()``)."""
    global _poll
    with _lock:
        if _poll is None:
            _poll = PollHandler("links-poll")
        return _poll


def default_timer() -> Timer:
    """The shared timer, created on first use (and again after ``shutdown()``)."""
    global _timer
    with _lock:
        if _timer is None:
            _timer = Timer(name="links-timer")
        return _timer


def shutdown(timeout: float = 5.0) -> None:
    """Stop the default poll handler (closing its connections) and timer. Idempotent.

    Raises:
        RuntimeError: called on the default poll thread itself (from a callback), which
            cannot wait for its own end; nothing is changed then.
    """
    global _poll, _timer
    with _lock:
        if _poll is not None and _poll.in_poll_thread():
            raise RuntimeError("links.shutdown() from the poll thread (a callback) would wait for itself; call it elsewhere")
        poll, timer, _poll, _timer = _poll, _timer, None, None
    if poll is not None:
        poll.shutdown(timeout)
    if timer is not None:
        timer.shutdown(timeout)


atexit.register(shutdown)
