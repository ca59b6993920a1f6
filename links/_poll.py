"""``PollHandler``: one thread, one selector, every registered receiver and acceptor.

Ownership
    Only the poll thread touches the selector. ``add()``, ``remove()``, ``want_writable()``, ``ready()``,
    ``pause_reading()``, ``call_soon()`` queue a command and wake it; on the poll thread they run inline.
    ``remove(handler, then=fn)`` unregisters the fd, then runs ``fn`` (closing the socket): the
    other order would let the fd number be reused under the old handler.

Level-triggered, a bounded batch per event
    An fd with unread bytes is reported on every poll until drained, so a handler does *one*
    bounded unit of work per event (a receiver: one ``recv_into`` and the frames it completed; an
    acceptor: a bounded batch of ``accept``); the rest waits for the next pass, after the others.

Failures stay local
    A handler call that raises is logged (``poll.handler_failed``), the handler removed and told
    to close itself; the loop carries on with the others. A hang-up of a handler closed by
    another thread, or whose reading is lent, is not read here (``Registry.hung_up``).

Handlers
    Anything with ``fileno()``, ``on_readable() -> bool`` (False: remove me), ``on_poll_failure``,
    ``closed`` and a ``poll_kind`` for log names, found by fd in the loop's books (``links._registry``:
    it pauses reading too, and lends it to a caller waiting for its reply, ``links._lease``); or, ``virtual``, no fd.

Handlers without a file descriptor
    A multiplexed channel is read and written on the poll thread like a socket, but only the
    code reading its TCP connection knows when it has input or room. A ``virtual`` handler never
    reaches the selector; that code marks it with ``ready(handler, readable=, writable=)`` and
    the loop services the marks each pass (``links._ready``), without sleeping while any are
    pending. Its first service on ``add()`` and ``want_writable()`` comes as a mark too.

Writing (``want_writable``)
    A connection whose socket would not take all it owes asks for ``on_writable() -> bool`` (True:
    still owing) once there is room: the poll thread writes what it can, never waiting, so a frame
    is finished without anybody sending again (a connection read on a user thread: writing only).

Busy polling (opt-in)
    ``PollHandler(busy_poll=s)`` polls without sleeping for ``s`` seconds after the last events
    (or command): the next message does not pay for a wake-up, at the price of a core and the GIL.

Lifecycle
    The thread (a daemon) starts on first ``add()``. ``shutdown(timeout)`` lets graceful closes
    end (``linger``), closes every handler, gives the closed ones that still owe bytes what is
    left of half of ``timeout``, stops the thread and closes the selector. Idempotent.
"""

from __future__ import annotations

import queue
import select
import selectors
import threading
import time
from collections.abc import Callable
from contextlib import suppress
from typing import Any, Protocol

from ._clock import Clock, MonotonicClock
from ._handler_failure import fail, handler_ids, refuse
from ._linger import Lingering
from ._log import get_logger
from ._readiness import fd_events
from ._ready import ReadyMarks
from ._registry import Registry, is_virtual
from ._threads import on_runtime_thread, runtime_thread
from ._wakeup import WakeupSocketpair

__all__ = ["PollHandler", "Pollable"]

_log = get_logger("poll")
_READ = selectors.EVENT_READ
_WRITE = selectors.EVENT_WRITE
# Event bits as epoll reports them; errors and hang-ups whatever the interest (a read raises).
_IN = select.POLLIN | select.POLLPRI | select.POLLERR | select.POLLHUP
_HUNG_UP = select.POLLERR | select.POLLHUP


class Pollable(Protocol):  # see "Handlers" above; writers add on_writable() -> bool; virtual: no fileno()
    poll_kind: str
    closed: bool
    def fileno(self) -> int: ...  # noqa: E301, E704
    def on_readable(self) -> bool: ...  # noqa: E301, E704
    def on_poll_failure(self, error: BaseException) -> None: ...  # noqa: E301, E704


class _Stop(Exception):  # raised inside the loop by the shutdown command
    pass


class PollHandler:
    """The poll thread. Use the lazily created default (``links.default_poll_handler()``) or
    pass your own as ``poll_handler=`` to ``Clt.connect`` / ``Svc.bind``.

    Args:
        name: the thread's name (it shows in ``threading.enumerate()`` and py-spy).
        selector: a ``selectors.BaseSelector`` factory (``DefaultSelector``: epoll on Linux; read
            as ``links._readiness`` says).
        busy_poll: seconds to keep polling without sleeping after the last events (0, the
            default: sleep at once; ``math.inf``: never). See "Busy polling" above.
        clock: what measures the busy-polling window (tests pass a ``FakeClock``).
    """

    def __init__(
        self,
        name: str = "links-poll",
        selector: Callable[[], selectors.BaseSelector] = selectors.DefaultSelector,
        *,
        busy_poll: float = 0.0,
        clock: Clock | None = None,
    ) -> None:
        if not busy_poll >= 0:
            raise ValueError(f"busy_poll must be >= 0 seconds, not {busy_poll!r}")
        self.name = name
        self._busy_poll = busy_poll
        self.clock = MonotonicClock() if clock is None else clock
        self._selector = selector()
        self._wakeup = WakeupSocketpair()
        self._books = Registry(self._selector, self._wakeup)  # who is registered, for what
        self._marks = ReadyMarks()  # readiness told by ready(), for handlers without an fd
        self._poll = fd_events(self._selector)
        self._commands: queue.SimpleQueue[Callable[[], None]] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._ident: int | None = None
        self._start_lock = threading.Lock()
        self._stopped = False
        self._drain_time = 0.0  # seconds shutdown gives owed bytes (set by shutdown())
        self._lingering = Lingering()
        self._final = False  # shutdown's last pass: no new writer is taken

    @property
    def busy_poll(self) -> float:
        """The busy-polling window, in seconds (fixed at construction)."""
        return self._busy_poll

    # -- commands from any thread ---------------------------------------------------------

    def add(self, handler: Pollable) -> None:
        """Start servicing ``handler`` on the poll thread.

        Raises:
            RuntimeError: the poll handler was shut down.
        """
        self._post(lambda: self._register(handler))

    def remove(self, handler: Pollable, reason: str = "removed", then: Callable[[], None] | None = None) -> None:
        """Stop servicing ``handler``; run ``then`` on the poll thread right after (stopped: now)."""
        with suppress(RuntimeError):  # stopped, even meanwhile
            return self._post(lambda: self._unregister(handler, reason, then))
        if then is not None:
            then()

    def want_writable(self, handler: Any) -> None:
        """Call ``handler.on_writable()`` on the poll thread while its socket has room, until it
        returns False. Any thread; RuntimeError in shutdown's last pass."""
        if self._final:
            raise RuntimeError(f"{self.name} is shut down")
        self._post(lambda: self._watch_writable(handler))

    def ready(self, handler: Any, *, readable: bool = False, writable: bool = False) -> None:
        """Tell the poll thread that ``handler`` (``virtual``: no fd) may now read and/or write, from any
        thread: serviced on a pass of the loop, never inside this call; ignored if not registered.
        On the poll thread, ``read_now(handler)`` services its reading at once instead."""
        events = (_READ if readable else 0) | (_WRITE if writable else 0)
        if events and threading.get_ident() == self._ident:  # the usual caller: a demultiplexer here
            self._marks.mark(handler, events)
        elif events and self._thread is not None:  # not started: nothing is registered
            with suppress(RuntimeError):  # shut down: nothing is registered any more
                self._post(lambda: self._marks.mark(handler, events))

    def pause_reading(self, handler: Any, paused: bool = True) -> None:
        """Stop reading ``handler`` (registered still, writing still: TCP holds its peer), or resume."""
        self._post(lambda: self._books.pause(handler, paused, self._marks))

    def linger(self) -> Callable[[], None]:
        """A graceful close under way that needs this thread to end: ``shutdown`` lets it, first
        (``links._linger``). Call what this returns when it is done."""
        return self._lingering.add()

    def call_soon(self, fn: Callable[[], None]) -> None:
        """Run ``fn`` on the poll thread (inline when already on it)."""
        self._post(fn)

    def sync(self, timeout: float | None = 5.0) -> bool:
        """Wait until every command posted before this call has run; False on timeout. Useful
        to know that a ``close()`` from another thread has released its fd."""
        if self._stopped or self._thread is None or self.in_poll_thread():
            return True
        done = threading.Event()
        self._post(done.set)
        return done.wait(timeout)

    def read_now(self, handler: Any) -> None:
        """Poll thread, no lock held: service ``handler``'s reading now (as a pass would), if it
        is registered for it; for a demultiplexer that fed a channel and holds nothing."""
        if self._books.interest.get(id(handler), 0) & _READ:
            self._service(handler)

    def in_poll_thread(self, reading: Any = None) -> bool:
        """Whether the caller is this poll thread (spawned receivers' hooks run there); ``reading``: and reads that handler."""
        return threading.get_ident() == self._ident and (reading is None or bool(self._books.interest.get(id(reading), 0) & _READ))

    @property
    def handler_count(self) -> int:
        """How many receivers and acceptors are registered now."""
        return len(self._books.handlers)

    def shutdown(self, timeout: float = 5.0) -> None:
        """Close every handler, stop the thread, release the selector. Idempotent."""
        with self._start_lock:
            if self._stopped:
                return
            thread = self._thread
            if thread is None:
                self._stopped = True
                self._close_all()
                return
        if self.in_poll_thread():
            raise RuntimeError("shutdown() from the poll thread itself would deadlock")
        # Graceful closes end first (a runtime thread waits for none), owed bytes get the rest of half.
        self._drain_time = timeout / 2 if on_runtime_thread() else self._lingering.wait(timeout / 2)
        self._commands.put(self._stop)
        self._wakeup.wake()
        thread.join(timeout)

    def __enter__(self) -> PollHandler:
        return self

    def __exit__(self, *exc: object) -> None:
        self.shutdown()

    def __repr__(self) -> str:
        state = "stopped" if self._stopped else ("running" if self._thread else "idle")
        return f"PollHandler({self.name!r}, {state}, handlers={len(self._books.handlers)})"

    def _post(self, command: Callable[[], None]) -> None:
        if self.in_poll_thread():
            command()
            return
        with self._start_lock:
            if self._stopped:
                raise RuntimeError(f"{self.name} is shut down")
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name=self.name, daemon=True)
                self._thread.start()
            # Queued under the same lock the stopping thread takes before its final drain, so
            # a command is either refused above or drained: never queued after the last drain.
            self._commands.put(command)
            self._wakeup.wake()

    # -- the poll thread ------------------------------------------------------------------

    def _register(self, handler: Pollable) -> None:
        if handler.closed:
            # Closed between being handed to us and now: its fd may already be released
            # and even reused by another socket, so it must never reach the selector.
            return
        try:
            self._books.add_reading(handler)
        except (KeyError, ValueError, OSError) as e:
            # The fd is closed already, or its number is still mapped to a handler whose
            # removal is queued behind us. Either way this handler cannot be serviced.
            return refuse(handler, e)
        _log.info(f"poll.{handler.poll_kind}.added", **handler_ids(handler))
        # One call right away: a receiver may already hold whole frames that arrived with
        # its handshake, and no new readiness event would ever announce those. A virtual one
        # on the next marks pass: add() may come from inside its demultiplexer's own call.
        if is_virtual(handler):
            self._marks.mark(handler, _READ)
        else:
            self._service(handler)

    def _unregister(self, handler: Pollable, reason: str, then: Callable[[], None] | None) -> None:
        if self._books.remove(handler) & _READ:  # a writer alone came and went unannounced
            _log.info(f"poll.{handler.poll_kind}.removed", reason=reason, **handler_ids(handler))
        if then is not None:
            then()

    def _watch_writable(self, handler: Any) -> None:
        if handler.closed:
            return  # its fd may be released already (see _register)
        try:
            added = self._books.add_writing(handler)
        except (KeyError, ValueError, OSError) as e:
            return refuse(handler, e)  # as in _register
        if added and is_virtual(handler):  # it may have room already, and nothing else would say so
            self._marks.mark(handler, _WRITE)

    def _service_write(self, handler: Any) -> None:
        try:
            more = handler.on_writable()
        except Exception as e:
            fail(handler, e, self._unregister)
            return
        if not more:
            try:
                self._books.drop_writing(handler)  # read only now, or gone if it was here to write
            except (KeyError, ValueError, OSError) as e:
                fail(handler, e, self._unregister)

    def _stop(self) -> None:
        raise _Stop

    def _run_commands(self) -> None:
        """Run every queued command."""
        commands = self._commands
        while not commands.empty():
            command = commands.get_nowait()  # only this thread takes: it cannot be empty now
            try:
                command()
            except _Stop:
                raise
            except Exception as e:  # a command must never take the thread down
                _log.error("poll.command_failed", error=repr(e))

    def _run(self) -> None:
        with runtime_thread():  # a send from a handler never waits on a socket (links._threads)
            self._loop()

    def _loop(self) -> None:
        self._ident = threading.get_ident()
        poll, by_fd, fresh, dispatch = self._poll, self._books.by_fd, self._books.fresh, self._dispatch
        no_commands, marked, service_marks = self._commands.empty, self._marks.pending, self._service_marks
        busy_poll, clock, handled_at = self._busy_poll, self.clock.monotonic, float("-inf")
        try:
            while True:
                # The busy window starts when work is done (a handler's own work must not use
                # it up; a command is work too). empty() first: every pass pays it, a tenth of
                # what a get_nowait() raising Empty costs (0.03 us against 0.31).
                if not no_commands():
                    self._run_commands()
                    if busy_poll:
                        handled_at = clock()
                if fresh:
                    by_fd.update(fresh)
                    fresh.clear()
                if marked:  # the one test of marks a pass: fd-only use pays no more
                    events = poll(service_marks())
                    if busy_poll:
                        handled_at = clock()
                elif not busy_poll:
                    events = poll()
                else:
                    events = poll(0)
                    if not events and clock() - handled_at >= busy_poll:
                        events = poll()  # the window is over: sleep until something happens
                if events:
                    dispatch(events)
                    if busy_poll:
                        handled_at = clock()
        except _Stop:
            pass
        except BaseException as e:  # pragma: no cover - a bug in this loop itself
            _log.critical("poll.crashed", error=repr(e))
            raise
        finally:
            with self._start_lock:
                self._stopped = True
            self._close_all()
            self._ident = None  # thread ids are reused: nobody else may pass for the poll thread

    def _dispatch(self, events: list[tuple[int, int]]) -> None:
        """One pass's events, each to its handler (found by fd)."""
        by_fd, wakeup, write_only = self._books.by_fd, self._wakeup, self._books.write_only
        for fd, ev in events:
            handler = by_fd.get(fd)
            if handler is wakeup:
                wakeup.drain()
            elif handler is not None:  # else: removed earlier in this same pass
                only_write = fd in write_only  # before the writer runs: it may drop its interest
                if only_write or ev & select.POLLOUT:  # POLLOUT: only if asked for
                    self._service_write(handler)
                    if only_write:  # any event, errors included, is for its writer: never read here
                        continue
                # An error or hang-up, reported every pass: not read if it is not for this
                # thread (see "Failures stay local" above, and links._lease).
                if ev & _IN and not (ev & _HUNG_UP and self._books.hung_up(handler)):
                    self._service(handler)

    def _service_marks(self) -> float | None:
        """Service the marked handlers (each for what it is still registered for); the next poll's timeout."""
        interest = self._books.interest
        for handler, marked in self._marks.take():
            if interest.get(id(handler), 0) & marked & _WRITE:  # writing first, as for fds
                self._service_write(handler)
            if interest.get(id(handler), 0) & marked & _READ:  # unless the writer failed
                self._service(handler)
        self._books.join_fresh()  # registered meanwhile: in the lookup before the next poll
        return 0 if self._marks.pending or self._busy_poll else None  # marked more: no sleep, next pass

    def _service(self, handler: Pollable) -> None:
        try:
            keep = handler.on_readable()
        except Exception as e:
            fail(handler, e, self._unregister)
            return
        if not keep:
            self._unregister(handler, "done", None)

    def _close_all(self) -> None:
        """Shut down: finish queued commands, close every handler, then the selector."""
        # Commands posted while we stopped: their effects (closing fds) must still happen,
        # and a queued registration must still be closed below rather than leak its socket.
        while not self._commands.empty():
            with suppress(Exception):
                self._commands.get_nowait()()
        self._close_handlers(but_writers=True)  # closed with bytes owed, a reader turns writer
        self._drain()
        self._final = True
        self._close_handlers()  # what is still owed now is dropped
        self._marks.pending.clear()
        self._selector.close()
        self._wakeup.close()

    def _close_handlers(self, but_writers: bool = False) -> None:
        for handler in list(self._books.handlers.values()):
            if but_writers and self._books.interest.get(id(handler)) == _WRITE:
                continue
            self._unregister(handler, "shutdown", None)
            try:
                handler.on_poll_failure(None)
            except Exception as e:
                _log.error("poll.handler_failed", kind=handler.poll_kind, error=repr(e), during="shutdown")

    def _drain(self) -> None:
        """Shutting down, every reader gone: service the writers left, for ``_drain_time``."""
        deadline = time.monotonic() + self._drain_time  # a real wait: the real clock
        books = self._books
        books.join_fresh()
        while books.handlers and (left := deadline - time.monotonic()) > 0:
            if self._marks.pending:  # virtual writers told they have room: no sleep before them
                self._service_marks()
                left = 0
            for fd, _ in self._poll(left):
                handler = books.by_fd.get(fd)
                if handler is self._wakeup:
                    self._wakeup.drain()
                elif handler is not None:
                    self._service_write(handler)
