"""``LoopPoller``: links' poll handler interface driven by an asyncio event loop, on its own thread.

``links.aio.connect`` and ``links.aio.serve`` give their connections to the running loop's
``LoopPoller`` (``loop_poller()``) instead of links' poll thread: the loop reads and writes
their sockets, and a message read goes to the coroutine waiting for it on the same thread
(``links.aio._bridge.LoopBridge``): no wake-up across threads, no interpreter lock handed over.

The interface is ``links.PollHandler``'s, the connection engine's only contact with its poll
handler (``add``, ``remove``, ``want_writable``, ``pause_reading``, ``call_soon``, ``sync``, ...):

* **Readiness**: ``loop.add_reader`` / ``add_writer`` per fd, level-triggered (the stdlib
  selector loops, and uvloop's libuv polls, report an fd again on every turn while it is
  ready), so a handler does one bounded unit of work per event and every other ready fd and
  task gets its turn before the rest. A new reader gets a first look on the next turn (it may
  hold whole frames that arrived with its handshake: no readiness would announce them).
* **Commands** from other threads (the timer thread's heartbeats and deadlines, a thread
  sending on ``.sender``, a close from anywhere) are posted with ``call_soon_threadsafe``;
  on the loop's thread (or on the thread that owns the loop while it is stopped) they run
  inline. Handlers run marked as a runtime thread (``links._threads``): a send from a hook
  never waits on a socket, here as on the poll thread.
* **Failures stay local**: a handler that raises is logged (``poll.handler_failed``), removed
  and told (``on_poll_failure``); the loop carries on with the others.
* **Closing fds**: ``remove(handler, then=fn)`` stops watching the fd, then runs ``fn`` (which
  closes the socket): the other order would let the fd number be reused under a live watch.
* Handlers without an fd (``virtual``: ``links.mux`` channels) stay on the poll thread.

The loop's end. A connection driven by a loop lives with that loop:

* While the loop is **stopped** (between two ``run_until_complete``), nothing is read; a
  thread sending on ``.sender`` still writes straight to the socket, but what the socket does
  not take waits for the loop to run again (or for ``stall_timeout``).
* When the loop **shuts down** (``asyncio.run``, ``asyncio.Runner`` and pytest-asyncio finalize
  the loop's async generators before closing it: ``links.aio._loopend`` hears of it), every
  connection still open is closed (``on_poll_failure(None)``: as a local ``close()``, reason
  ``poll_shutdown``), what they still owe is written for up to ``LOOP_END_DRAIN`` seconds, and
  every fd is released. Later commands raise ``RuntimeError`` like a shut-down ``PollHandler``
  (a send that would need the loop to finish it drops its connection).
* A loop **closed without that** (``loop.close()`` alone): the first command that finds it
  closed does the same, at once and without writing what is owed (nothing can watch the
  sockets any more); interpreter exit closes every connection (``links._exit``) and so gets
  there too. ``sync()`` never waits for a loop that is not running: nothing hangs.
"""

from __future__ import annotations

import asyncio
import threading
import weakref
from collections.abc import Callable
from typing import Any

from .._log import get_logger
from .._handler_failure import fail, handler_ids, refuse
from .._registry import is_virtual
from .._threads import _idents as _runtime_idents
from ._loopend import LoopEndWatch

__all__ = ["LoopPoller", "loop_poller", "LOOP_END_DRAIN"]

#: Seconds a loop that shuts down gives its closed connections to write what they still owe.
LOOP_END_DRAIN = 2.0

_log = get_logger("poll")
_get_running_loop = asyncio._get_running_loop
_get_ident = threading.get_ident

_FAILED: Any = object()  # what LoopPoller._call answers for a handler that raised

_pollers: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, LoopPoller] = weakref.WeakKeyDictionary()
_pollers_lock = threading.Lock()


class LoopPoller:
    """``links.PollHandler``'s interface on an asyncio event loop (see the module docstring).
    Made by ``loop_poller()``, one per loop, on the loop's thread while it runs."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.name = "links-loop-poller"
        self._owner = _get_ident()  # the thread that runs the loop
        self._handlers: dict[int, Any] = {}  # id(handler) -> handler
        self._fd: dict[int, int] = {}  # id(handler) -> its fd, as registered
        self._by_fd: dict[int, Any] = {}  # fd -> the handler watching it
        self._reading: set[int] = set()  # ids with a reader on the loop
        self._writing: set[int] = set()  # ids with a writer on the loop
        self._paused: set[int] = set()  # ids whose reading is paused (registered still)
        self._lock = threading.Lock()  # the stop, against commands posted meanwhile
        self._queued: set[_Posted] = set()  # posted from other threads, not run yet
        self._stopped = False
        self._final = False  # no new writer: the loop's end is past its drain
        self._idle: asyncio.Future[None] | None = None  # the loop's end waits for the last handler
        self._watch: LoopEndWatch | None = None  # hears of the loop's end (``watch_loop_end``)

    # -- commands from any thread ---------------------------------------------------------

    def add(self, handler: Any) -> None:
        """Start reading ``handler`` on the loop. Raises RuntimeError once the loop ended."""
        self._post(lambda: self._register(handler), handler)

    def remove(self, handler: Any, reason: str = "removed", then: Callable[[], None] | None = None) -> None:
        """Stop servicing ``handler``; run ``then`` on the loop right after (ended: now)."""
        try:
            self._post(lambda: self._unregister(handler, reason, then), then=then)
        except RuntimeError:
            if then is not None:
                then()

    def want_writable(self, handler: Any) -> None:
        """Call ``handler.on_writable()`` on the loop while its socket has room, until it
        returns False. Any thread; RuntimeError once the loop ended."""
        if self._final:
            raise RuntimeError(f"{self.name}: the loop ended")
        self._post(lambda: self._watch_writable(handler), handler)

    def ready(self, handler: Any, *, readable: bool = False, writable: bool = False) -> None:
        """For handlers without an fd, which are never registered here: ignored."""

    def pause_reading(self, handler: Any, paused: bool = True) -> None:
        """Stop reading ``handler`` (registered still, writing still: TCP holds its peer), or resume."""
        self._post(lambda: self._pause(handler, paused))

    def call_soon(self, fn: Callable[[], None]) -> None:
        """Run ``fn`` on the loop (inline when already on it). RuntimeError once the loop ended."""
        self._post(fn)

    def sync(self, timeout: float | None = 5.0) -> bool:
        """Wait until every command posted before this call has run; False on timeout, or at
        once when the loop is not running (nothing would run them: it never waits for that)."""
        if self._stopped or self._inline():
            return True
        if not self.loop.is_running():
            return False
        done = threading.Event()
        try:
            self._post(done.set)
        except RuntimeError:
            return True
        return done.wait(timeout)

    def in_poll_thread(self) -> bool:
        """Whether the caller runs inside this loop (hooks of its connections run there)."""
        return _get_running_loop() is self.loop

    @property
    def handler_count(self) -> int:
        """How many receivers, writers and acceptors are registered now."""
        return len(self._handlers)

    def shutdown(self, timeout: float = 5.0) -> None:
        """Close every handler now (no drain) and refuse later commands. Idempotent."""
        if self._stopped:
            return
        if self._inline() or not self.loop.is_running():  # stopped or closed: nothing runs there now
            self._stop(None)
            return
        done = threading.Event()
        try:
            self.loop.call_soon_threadsafe(lambda: (self._stop(None), done.set()))
        except RuntimeError:
            self._stop(None)
            return
        done.wait(timeout)

    def __repr__(self) -> str:
        state = "stopped" if self._stopped else "running"
        return f"LoopPoller({self.loop!r}, {state}, handlers={len(self._handlers)})"

    def _inline(self) -> bool:
        """Whether a command may run here and now: inside the loop, or on its thread while it is stopped."""
        running = _get_running_loop()
        if running is not None:
            return running is self.loop
        return _get_ident() == self._owner and not self.loop.is_running() and not self.loop.is_closed()

    def _post(self, command: Callable[[], None], handler: Any = None, then: Callable[[], None] | None = None) -> None:
        """Run ``command`` now (``_inline``) or post it. Posted, it is kept until it runs: if the
        loop ends first, ``_stop`` still fails the ``handler`` it would have watched and runs
        the ``then`` it would have run (closing an fd), so nothing posted meanwhile leaks."""
        if self._stopped:
            raise RuntimeError(f"{self.name}: the loop ended")
        if self._inline():
            self._run_command(command)
            return
        posted = _Posted(command, handler, then)
        with self._lock:
            if self._stopped:
                raise RuntimeError(f"{self.name}: the loop ended")
            self._queued.add(posted)
        try:
            self.loop.call_soon_threadsafe(self._run_posted, posted)
        except RuntimeError:  # the loop is closed: nothing will ever watch these fds again
            with self._lock:
                self._queued.discard(posted)
            self._stop(None)
            raise RuntimeError(f"{self.name}: the loop is closed") from None

    def _run_posted(self, posted: _Posted) -> None:
        with self._lock:
            if posted not in self._queued:
                return  # the loop ended before it ran: _stop did what was owed
            self._queued.discard(posted)
        self._run_command(posted.command)

    def _run_command(self, command: Callable[[], None]) -> None:
        fresh = _enter_runtime()
        try:
            command()
        except Exception as e:  # a command must never take the loop's callback down
            _log.error("poll.command_failed", error=repr(e))
        finally:
            if fresh:
                _runtime_idents.discard(_get_ident())

    # -- the loop's thread ----------------------------------------------------------------

    def _fd_for(self, handler: Any) -> int | None:
        """``handler``'s fd, claimed for it; None after failing it (the fd is closed, or its number
        is still watched for a handler whose removal is queued behind this command)."""
        ident = id(handler)
        fd = self._fd.get(ident)
        if fd is not None:
            return fd
        try:
            fd = handler.fileno()
            owner = self._by_fd.get(fd)
            if fd < 0 or (owner is not None and owner is not handler):
                raise ValueError(f"fd {fd} is closed, or still watched for {owner!r}")
        except (OSError, ValueError) as e:
            refuse(handler, e)
            return None
        self._fd[ident] = fd
        self._by_fd[fd] = handler
        self._handlers[ident] = handler
        return fd

    def _register(self, handler: Any) -> None:
        if handler.closed:
            return  # closed between being handed to us and now: its fd may be another's already
        if is_virtual(handler):
            refuse(handler, TypeError("a handler without an fd needs a links.PollHandler"))
            return
        ident = id(handler)
        fd = self._fd_for(handler)
        if fd is None:
            return
        self._paused.discard(ident)
        if ident not in self._reading and not self._watch_fd(handler, fd, self._reading):
            return
        _log.info(f"poll.{handler.poll_kind}.added", **handler_ids(handler))
        self.loop.call_soon(self._first_look, handler)

    def _first_look(self, handler: Any) -> None:
        if id(handler) in self._reading and self._handlers.get(id(handler)) is handler:
            self._readable(handler)

    def _watch_writable(self, handler: Any) -> None:
        if handler.closed:
            return  # its fd may be released already (see _register)
        ident = id(handler)
        if ident in self._writing:
            return
        fd = self._fd_for(handler)
        if fd is not None:
            self._watch_fd(handler, fd, self._writing)

    def _watch_fd(self, handler: Any, fd: int, kind: set[int]) -> bool:
        """Watch ``fd`` for reading (``kind`` is ``_reading``) or writing; False after failing
        ``handler`` (the loop refused the fd: closed meanwhile)."""
        try:
            if kind is self._reading:
                self.loop.add_reader(fd, self._readable, handler)
            else:
                self.loop.add_writer(fd, self._writable, handler)
        except (OSError, ValueError) as e:
            fail(handler, e, self._unregister)
            return False
        kind.add(id(handler))
        return True

    def _unregister(self, handler: Any, reason: str, then: Callable[[], None] | None) -> None:
        ident = id(handler)
        if self._handlers.pop(ident, None) is not None:
            fd = self._fd.pop(ident)
            read = ident in self._reading or ident in self._paused
            self._unwatch(ident, fd)
            if self._by_fd.get(fd) is handler:
                del self._by_fd[fd]
            if read:  # a writer alone came and went unannounced
                _log.info(f"poll.{handler.poll_kind}.removed", reason=reason, **handler_ids(handler))
            if not self._handlers and self._idle is not None and not self._idle.done():
                self._idle.set_result(None)
        if then is not None:
            then()

    def _unwatch(self, ident: int, fd: int) -> None:
        self._paused.discard(ident)
        closed = self.loop.is_closed()  # its selector is gone: nothing to take out
        if ident in self._reading:
            self._reading.discard(ident)
            if not closed:
                self.loop.remove_reader(fd)
        if ident in self._writing:
            self._writing.discard(ident)
            if not closed:
                self.loop.remove_writer(fd)

    def _pause(self, handler: Any, paused: bool) -> None:
        ident = id(handler)
        fd = self._fd.get(ident)
        if fd is None or self._handlers.get(ident) is not handler:
            return  # removed meanwhile
        if paused and ident in self._reading:
            self._reading.discard(ident)
            self._paused.add(ident)
            self.loop.remove_reader(fd)
        elif not paused and ident in self._paused:
            self._paused.discard(ident)
            self._watch_fd(handler, fd, self._reading)

    def _call(self, handler: Any, method: Callable[[], bool]) -> Any:
        """``method()`` (a handler's ``on_readable`` or ``on_writable``), marked as on a runtime
        thread; on failure ``_FAILED`` (true) once the handler is failed."""
        fresh = _enter_runtime()
        try:
            return method()
        except Exception as e:
            fail(handler, e, self._unregister)
            return _FAILED
        finally:
            if fresh:
                _runtime_idents.discard(_get_ident())

    def _readable(self, handler: Any) -> None:
        if not self._call(handler, handler.on_readable):
            self._unregister(handler, "done", None)

    def _writable(self, handler: Any) -> None:
        ident = id(handler)
        if self._call(handler, handler.on_writable) or ident not in self._writing or self._handlers.get(ident) is not handler:
            return  # still owing, failed, or gone meanwhile
        if ident in self._reading or ident in self._paused:  # read only now (paused: registered still)
            self._writing.discard(ident)
            self.loop.remove_writer(self._fd[ident])
        else:  # it was here only to write
            self._unregister(handler, "done", None)

    # -- the loop's end -------------------------------------------------------------------

    def watch_loop_end(self) -> None:
        """Hear of the loop's shutdown (``links.aio._loopend``); on the loop's thread, while it runs."""
        self._watch = LoopEndWatch(self._loop_ending)

    async def _loop_ending(self) -> None:
        """The loop shuts down (still running): close every connection, let them write what
        they owe for ``LOOP_END_DRAIN`` seconds, then release whatever is left."""
        self._close_handlers(but_writers=True)
        if self._handlers and not self._stopped:
            self._idle = self.loop.create_future()
            await asyncio.wait((self._idle,), timeout=LOOP_END_DRAIN)
        self._stop(None)

    def _stop(self, _: object) -> None:
        """Refuse every later command, close every handler and forget this loop."""
        with self._lock:
            if self._stopped:
                return
            self._stopped = True
            queued, self._queued = self._queued, set()
        self._final = True
        with _pollers_lock:
            if _pollers.get(self.loop) is self:
                del _pollers[self.loop]
        self._close_handlers()  # their fds unwatched first: the thens below close some of them
        for posted in queued:
            try:
                if posted.handler is not None and not posted.handler.closed:
                    posted.handler.on_poll_failure(None)
                if posted.then is not None:
                    posted.then()
            except Exception as e:
                _log.error("poll.command_failed", error=repr(e), during="shutdown")
        watch, self._watch = self._watch, None
        if watch is not None:
            watch.cancel()

    def _close_handlers(self, but_writers: bool = False) -> None:
        for ident, handler in list(self._handlers.items()):
            if self._handlers.get(ident) is not handler:
                continue  # gone meanwhile, with a connection an earlier one closed (a service's)
            if but_writers and ident in self._writing and ident not in self._reading and ident not in self._paused:
                continue  # a closed connection still writing what it owes
            self._unregister(handler, "shutdown", None)
            try:
                handler.on_poll_failure(None)
            except Exception as e:
                _log.error("poll.handler_failed", kind=handler.poll_kind, error=repr(e), during="shutdown")


class _Posted:
    """A command posted to the loop from another thread (see ``LoopPoller._post``)."""

    __slots__ = ("command", "handler", "then")

    def __init__(self, command: Callable[[], None], handler: Any, then: Callable[[], None] | None) -> None:
        self.command = command
        self.handler = handler
        self.then = then


def loop_poller(loop: asyncio.AbstractEventLoop | None = None) -> LoopPoller:
    """The ``LoopPoller`` of the running loop (made on first use; a new one after the loop's
    end was heard). Call it from a coroutine (or a callback) of that loop.

    Raises:
        RuntimeError: no running event loop, or ``loop`` is not the running one.
    """
    running = asyncio.get_running_loop()
    if loop is not None and loop is not running:
        raise RuntimeError("loop_poller() must be called on the loop's own thread, while it runs")
    with _pollers_lock:
        poller = _pollers.get(running)
        if poller is not None:
            return poller
        poller = _pollers[running] = LoopPoller(running)
    poller.watch_loop_end()
    return poller


def _enter_runtime() -> bool:
    """Mark this thread as a runtime thread (a send never waits here); False if it already was."""
    ident = _get_ident()
    if ident in _runtime_idents:
        return False
    _runtime_idents.add(ident)  # a set's add and discard hold the interpreter lock: no lock needed
    return True
