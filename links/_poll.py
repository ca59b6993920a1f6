"""``PollHandler``: one thread, one selector, every registered receiver and acceptor.

Ownership
    Only the poll thread touches the selector. Other threads never call ``register`` on it
    directly: ``add()``, ``remove()`` and ``call_soon()`` put a command on a ``SimpleQueue`` and
    wake the thread through a ``WakeupSocketpair``. When the caller *is* the poll thread (a
    callback closing its own connection), the command runs inline, so a handler can remove
    itself without waiting for the next loop pass.

Level-triggered, a bounded batch per event
    The stdlib ``EpollSelector`` is level-triggered: an fd with unread bytes is reported on
    every poll until it is drained. So a handler does *one* bounded unit of work per
    readiness event (a receiver: one ``recv_into`` and the frames it completed; an acceptor: a
    bounded number of ``accept`` calls) and returns. Whatever remains is reported again on
    the next pass, after every other ready fd had its turn. One chatty peer therefore cannot
    starve the rest, and nothing is lost by stopping early. (An edge-triggered design would
    have to drain each fd to ``EAGAIN`` before sleeping, which is exactly the starvation we
    avoid.)

Failures stay local
    Each handler call is wrapped: if it raises, the failure is logged
    (``poll.handler_failed``), the handler is removed and told to close itself, and the loop
    carries on with every other connection. The thread ends only on ``shutdown()``.

Handlers
    Anything with ``fileno()``, ``on_readable() -> bool`` (False: remove me),
    ``on_poll_failure(error)``, a ``closed`` flag and a ``poll_kind`` ("recver" or "acceptor") for log names.
    The loop finds them by fd in a dict of its own, so dispatch is one lookup.

Closing fds
    ``remove(handler, then=fn)`` unregisters the fd and then runs ``fn`` (usually closing the
    socket) on the poll thread, in that order. Closing first would let the kernel reuse the
    fd number for a new socket while the selector still maps it to the old handler.

Reading the events
    The stdlib ``EpollSelector`` keeps the books (which fd is registered) and the loop asks
    its ``select.epoll`` object for events directly: ``select()`` itself is Python, with a
    call per event to map the fd back to its key and a list of new tuples per pass, and on a
    thread that sleeps between messages that Python runs with cold caches. Measured on the
    W2 echo server: 3-7 % less server CPU per round trip (``benchmarks/bench_echo_server.py``;
    ``benchmarks/RESULTS.md``, "Poll loop"), though not a measurably shorter round trip.
    Any other selector (another platform's, a test's subclass) is read through ``select()``,
    and so is the stdlib one if its epoll object is ever not where this expects it.

Busy polling (opt-in)
    By default the thread sleeps in the poll whenever nothing is ready, and the next
    message pays for waking it: on a VM, a wakeup across CPUs costs tens of microseconds, the
    largest part of a loopback round trip. ``PollHandler(busy_poll=s)`` keeps asking without
    sleeping (a poll with a zero timeout) for ``s`` seconds after it handled the last events
    (a command, such as a new registration, counts as one), then sleeps as usual: a busy
    connection finds the thread awake, and an idle one costs nothing. The price is a core kept busy while
    traffic flows, and the GIL taken between polls, which slows other Python threads of the
    process (measurements in ``benchmarks/RESULTS.md``, "Busy polling").

Lifecycle
    The thread starts on first ``add()``. ``shutdown()`` removes every handler (closing its
    connection), stops the thread and closes the selector; it is idempotent and also runs at
    interpreter exit for the default instance (see ``links._runtime``). The thread is a
    daemon so that a forgotten handler can never keep the interpreter alive.
"""

from __future__ import annotations

import queue
import select
import selectors
import threading
from collections.abc import Callable
from typing import Any, Protocol

from ._clock import Clock, MonotonicClock
from ._log import get_logger
from ._wakeup import WakeupSocketpair

__all__ = ["PollHandler", "Pollable"]

_log = get_logger("poll")
_READ = selectors.EVENT_READ


class Pollable(Protocol):
    poll_kind: str
    closed: bool

    def fileno(self) -> int: ...

    def on_readable(self) -> bool: ...

    def on_poll_failure(self, error: BaseException) -> None: ...


class _Stop(Exception):
    """Raised inside the loop by the shutdown command."""


class PollHandler:
    """The poll thread. Use the lazily created default (``links.default_poll_handler()``) or
    pass your own as ``poll_handler=`` to ``Clt.connect`` / ``Svc.bind``.

    Args:
        name: the thread's name (it shows in ``threading.enumerate()`` and py-spy).
        selector: a ``selectors.BaseSelector`` factory (``DefaultSelector``: epoll on Linux;
            see "Reading the events" above).
        busy_poll: seconds to keep polling without sleeping after the last events were
            handled (0, the default: sleep at once; ``math.inf``: never sleep). Tens of
            microseconds suit a latency-bound server whose work runs on this thread; see
            "Busy polling" above for the price.
        clock: what measures the busy-polling window (``MonotonicClock`` by default; tests
            pass a ``links.testing.FakeClock``).
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
        self._selector.register(self._wakeup, _READ, None)
        self._poll = _fd_events(self._selector)
        self._commands: queue.SimpleQueue[Callable[[], None]] = queue.SimpleQueue()
        self._handlers: dict[int, Any] = {}  # id(handler) -> handler
        # fd -> handler, the loop's lookup: an fd whose handler was removed earlier in the
        # same pass is no longer here and is skipped. The wakeup fd maps to the wakeup.
        self._by_fd: dict[int, Any] = {self._wakeup.fileno(): self._wakeup}
        # Registered since the last poll, joining _by_fd just before the next one: a handler
        # registered during a pass, on the fd number of one removed earlier in it, must not be
        # handed the removed one's event.
        self._fresh: dict[int, Any] = {}
        self._thread: threading.Thread | None = None
        self._ident: int | None = None
        self._start_lock = threading.Lock()
        self._stopped = False

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
        """Stop servicing ``handler``; run ``then`` on the poll thread right after."""
        if self._stopped:
            if then is not None:
                then()
            return
        self._post(lambda: self._unregister(handler, reason, then))

    def call_soon(self, fn: Callable[[], None]) -> None:
        """Run ``fn`` on the poll thread (inline when already on it)."""
        self._post(fn)

    def sync(self, timeout: float | None = 5.0) -> bool:
        """Wait until every command posted before this call has run; False on timeout.

        Useful to know that a ``close()`` from another thread has released its fd.
        """
        if self._stopped or self._thread is None or self.in_poll_thread():
            return True
        done = threading.Event()
        self._post(done.set)
        return done.wait(timeout)

    def in_poll_thread(self) -> bool:
        return threading.get_ident() == self._ident

    @property
    def handler_count(self) -> int:
        """How many receivers and acceptors are registered now."""
        return len(self._handlers)

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
        self._commands.put(self._stop)
        self._wakeup.wake()
        thread.join(timeout)

    def __enter__(self) -> PollHandler:
        return self

    def __exit__(self, *exc: object) -> None:
        self.shutdown()

    def __repr__(self) -> str:
        state = "stopped" if self._stopped else ("running" if self._thread else "idle")
        return f"PollHandler({self.name!r}, {state}, handlers={len(self._handlers)})"

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
            key = self._selector.register(handler, _READ, handler)
        except (KeyError, ValueError, OSError) as e:
            # The fd is closed already, or its number is still mapped to a handler whose
            # removal is queued behind us. Either way this handler cannot be serviced.
            _log.error("poll.handler_failed", kind=handler.poll_kind, handler=repr(handler), error=repr(e))
            handler.on_poll_failure(e)
            return
        self._handlers[id(handler)] = handler
        self._fresh[key.fd] = handler
        _log.info(f"poll.{handler.poll_kind}.added", **_ids(handler))
        # One call right away: a receiver may already hold whole frames that arrived with
        # its handshake, and no new readiness event would ever announce those.
        self._service(handler)

    def _unregister(self, handler: Pollable, reason: str, then: Callable[[], None] | None) -> None:
        if self._handlers.pop(id(handler), None) is not None:
            try:
                key = self._selector.unregister(handler)
            except (KeyError, ValueError):
                pass  # never made it into the selector
            else:
                if self._fresh.pop(key.fd, None) is None:
                    self._by_fd.pop(key.fd, None)
            _log.info(f"poll.{handler.poll_kind}.removed", reason=reason, **_ids(handler))
        if then is not None:
            then()

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
        self._ident = threading.get_ident()
        poll, by_fd, fresh, wakeup = self._poll, self._by_fd, self._fresh, self._wakeup
        no_commands = self._commands.empty
        busy_poll, clock, handled_at = self._busy_poll, self.clock.monotonic, float("-inf")
        try:
            while True:
                # The busy window starts when work is done, not when it came: a handler's own
                # work (a callback, a reply) must not use it up. A command is work too (a new
                # receiver is serviced at once, inside its registration).
                # empty() first, here: it is every pass, and the call, or a get_nowait() that
                # raises Empty (ten times dearer: 0.31 us against 0.03), would be paid each time.
                if not no_commands():
                    self._run_commands()
                    if busy_poll:
                        handled_at = clock()
                if fresh:
                    by_fd.update(fresh)
                    fresh.clear()
                if not busy_poll:
                    events = poll()
                else:
                    events = poll(0)
                    if not events and clock() - handled_at >= busy_poll:
                        events = poll()  # the window is over: sleep until something happens
                for fd, _ in events:
                    handler = by_fd.get(fd)
                    if handler is wakeup:
                        wakeup.drain()
                    elif handler is not None:  # else: removed earlier in this same pass
                        self._service(handler)
                if events and busy_poll:
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

    def _service(self, handler: Pollable) -> None:
        try:
            keep = handler.on_readable()
        except Exception as e:
            self._fail(handler, e)
            return
        if not keep:
            self._unregister(handler, "done", None)

    def _fail(self, handler: Pollable, error: BaseException) -> None:
        _log.error("poll.handler_failed", kind=handler.poll_kind, error=repr(error), **_ids(handler))
        self._unregister(handler, "failed", None)
        try:
            handler.on_poll_failure(error)
        except Exception as e:
            _log.error("poll.handler_failed", kind=handler.poll_kind, error=repr(e), during="close")

    def _close_all(self) -> None:
        """Shut down: finish queued commands, close every handler, then the selector."""
        # Commands posted while we stopped: their effects (closing fds) must still happen,
        # and a queued registration must still be closed below rather than leak its socket.
        while True:
            try:
                command = self._commands.get_nowait()
            except queue.Empty:
                break
            try:
                command()
            except Exception:
                pass
        for handler in list(self._handlers.values()):
            self._unregister(handler, "shutdown", None)
            try:
                handler.on_poll_failure(None)
            except Exception as e:
                _log.error("poll.handler_failed", kind=handler.poll_kind, error=repr(e), during="shutdown")
        self._selector.close()
        self._wakeup.close()


def _fd_events(selector: selectors.BaseSelector) -> Callable[..., list[tuple[int, int]]]:
    """``poll(timeout=None)``: the ready ``(fd, events)`` pairs; see "Reading the events"."""
    epoll_type = getattr(select, "epoll", None)  # Linux only
    if epoll_type is not None and type(selector) is selectors.EpollSelector:  # not a subclass
        epoll = getattr(selector, "_selector", None)  # the stdlib's own epoll object
        if isinstance(epoll, epoll_type):
            # Seconds, None waits for ever; at most 1,023 events a pass, the rest next pass.
            return epoll.poll
    select_keys = selector.select

    def poll(timeout: float | None = None) -> list[tuple[int, int]]:
        return [(key.fd, events) for key, events in select_keys(timeout)]

    return poll


def _ids(handler: Any) -> dict[str, str]:
    con_id = getattr(handler, "con_id", None)
    return {"con_id": str(con_id)} if con_id is not None else {}
