"""Shared test helpers: the everyday protocol, waiting for log events other threads emit, and
child processes whose output lines are waited for.

Events come from the poll and timer threads, so a test cannot just look at the captured list
right after acting: it waits on a condition, bounded, for the event to show up. A child's
lines likewise.
"""

from __future__ import annotations

import asyncio
import re
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import structlog

import links

WAIT = 5.0


def addr(server: object) -> str:
    """``"host:port"`` of a listening ``Svc`` or ``links.aio`` server."""
    host, port = server.local_addr[:2]  # type: ignore[attr-defined]
    return f"{host}:{port}"


class Json(links.Protocol):
    """The tests' everyday protocol: JSON messages behind a 4-byte length, 64 KiB at most."""

    framer = links.LengthPrefixFramer(header_size=4, max_frame_size=1 << 16)
    messenger = links.JsonMessenger()


class LogWatch:
    """A ``capture_logs`` processor that tests can wait on. Each entry also gets ``t``, the
    ``time.monotonic()`` at which it was logged, for tests that measure between events, and
    ``log_level`` (``"warning"``, ``"debug"``, ...)."""

    def __init__(self, timeout: float = WAIT) -> None:
        self._cond = threading.Condition()
        self.timeout = timeout
        self.entries: list[dict] = []

    def __call__(self, logger, method, event_dict):
        with self._cond:
            self.entries.append({"log_level": method, **event_dict, "t": time.monotonic()})
            self._cond.notify_all()
        return event_dict

    def matching(self, event: str, **fields) -> list[dict]:
        """Every entry of ``event`` whose fields include ``fields``."""
        with self._cond:
            return [e for e in self.entries if e["event"] == event and fields.items() <= e.items()]

    def wait(self, event: str, count: int = 1, **fields) -> dict | None:
        """The first entry of ``event`` with ``fields`` once ``count`` of them were logged,
        or None if that did not happen within the timeout."""
        with self._cond:
            found = self._cond.wait_for(lambda: len(self.matching(event, **fields)) >= count, self.timeout)
        return self.matching(event, **fields)[0] if found else None

    def expect(self, event: str, count: int = 1, timeout: float | None = None, **fields) -> dict:
        """The ``count``-th entry of ``event`` with ``fields``, waiting for it; fails the test
        (naming what was seen instead) if it does not come within the timeout."""
        timeout = self.timeout if timeout is None else timeout
        with self._cond:
            found = self._cond.wait_for(lambda: len(self.matching(event, **fields)) >= count, timeout)
            entries = self.matching(event, **fields)
        assert found, f"no {count} x {event} {fields} within {timeout}s; saw {[e['event'] for e in self.entries]}"
        return entries[count - 1]

    def wait_count(self, event: str, count: int) -> bool:
        """Whether ``count`` entries of ``event`` were logged within the timeout."""
        return self.wait(event, count) is not None

    def one(self, event: str, **fields) -> dict:
        """The single entry of ``event`` with ``fields`` (asserting there is exactly one)."""
        found = self.matching(event, **fields)
        assert len(found) == 1, f"{event} {fields}: {found} in {self.entries}"
        return found[0]


@contextmanager
def watch_logs(timeout: float = WAIT) -> Iterator[LogWatch]:
    """Capture structlog events for the block, waitable through the yielded ``LogWatch``."""
    watch = LogWatch(timeout)
    with structlog.testing.capture_logs(processors=[watch]):
        yield watch


def waiting_call(call) -> tuple[threading.Thread, list[BaseException]]:
    """``call()`` started on a thread of its own (a user thread blocked in links); the
    ``links.LinksError`` it ends with lands in the list. Join the thread, then look."""
    raised: list[BaseException] = []

    def run() -> None:
        try:
            call()
        except links.LinksError as e:
            raised.append(e)

    thread = threading.Thread(target=run)
    thread.start()
    return thread, raised


def errors_in_threads(work: Callable[[int], None], count: int, timeout: float) -> list[BaseException]:
    """``work(0)`` to ``work(count - 1)``, each on a thread of its own, all at once; each thread
    joined within ``timeout``. The exceptions they raised (a failed assert among them)."""
    errors: list[BaseException] = []

    def run(i: int) -> None:
        try:
            work(i)
        except BaseException as e:  # noqa: BLE001 - returned to the test
            errors.append(e)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout)
    return errors


def complaints(lines: list[str]) -> list[str]:
    """A child's log lines at warning or above, and tracebacks."""
    return [line for line in lines if re.search(r"\[(warning|error|critical) *\]", line) or "Traceback" in line]


class Child:
    """A child process (the installed ``links`` command, a peer in another language) whose
    stdout and stderr lines are read by threads of their own as they come: a test waits for
    the line it needs (bounded) instead of for the process to end. A context manager: leaving
    it kills the process if it still runs and joins the readers."""

    def __init__(self, argv: list[str], timeout: float = WAIT) -> None:
        self.argv = argv
        self.timeout = timeout
        self.proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self._cond = threading.Condition()
        self.out: list[str] = []
        self.err: list[str] = []
        self._open = 2  # pipes not yet at their end
        self._readers = [
            threading.Thread(target=self._read, args=(self.proc.stdout, self.out), name="child-stdout"),
            threading.Thread(target=self._read, args=(self.proc.stderr, self.err), name="child-stderr"),
        ]
        for reader in self._readers:
            reader.start()

    def _read(self, pipe, lines: list[str]) -> None:
        for line in pipe:
            with self._cond:
                lines.append(line.rstrip("\n"))
                self._cond.notify_all()
        with self._cond:  # the pipe closed: nothing more will come
            self._open -= 1
            self._cond.notify_all()

    def wait_line(self, pattern: str, count: int = 1, stream: str = "out", timeout: float | None = None) -> re.Match:
        """The ``count``-th line of ``stream`` ("out" or "err") that ``pattern`` matches (from its
        start), waiting for it; fails the test, showing what came, if the process ended first or
        it did not come in time."""
        lines = self.out if stream == "out" else self.err
        timeout = self.timeout if timeout is None else timeout

        def found() -> list[re.Match]:
            return [m for m in map(re.compile(pattern).match, lines) if m]

        with self._cond:
            self._cond.wait_for(lambda: len(found()) >= count or not self._open, timeout)
            matches = found()
            why = "timed out" if self._open else "output ended"
        said = f"out {self.out}, err {self.err}"
        assert len(matches) >= count, f"{self.argv[:3]}: no {count} x {pattern!r} ({why}); {said}"
        return matches[count - 1]

    def stop(self, sig: int = signal.SIGINT) -> int:
        """Send ``sig``; the exit status (the process must end within the timeout)."""
        self.proc.send_signal(sig)
        return self.proc.wait(self.timeout)

    def __enter__(self) -> Child:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(self.timeout)
        for reader in self._readers:
            reader.join(self.timeout)
        self.proc.stdout.close()
        self.proc.stderr.close()


def loop_factories() -> dict:
    """The event loops links.aio is tested on, by name: asyncio's, and uvloop's when installed
    (it is in the ``test`` extra). A module that sets ``LOOP_FACTORIES`` to this runs its
    asyncio tests on each (``pytest_asyncio_loop_factories`` in ``conftest.py``)."""
    import asyncio

    factories = {"asyncio": asyncio.new_event_loop}
    try:
        import uvloop
    except ImportError:
        return factories
    factories["uvloop"] = uvloop.new_event_loop
    return factories


async def until(check: Callable[[], object], what: str = "condition", within: float = 10.0) -> None:
    """Let the running loop turn (a turn at a time, no timed sleep) until ``check()`` holds;
    AssertionError naming ``what`` after ``within`` seconds."""
    deadline = time.monotonic() + within
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"never happened: {what}")
        await asyncio.sleep(0)


class PollPasses:
    """Counts a ``PollHandler``'s passes (install before its thread starts: its loop takes
    ``_poll`` once); ``after(n)`` waits for a pass beyond the ``n``-th. A spinning poll thread
    makes thousands of passes where an idle one makes a few."""

    def __init__(self, poll: links.PollHandler, within: float = 5.0) -> None:
        self.count = 0
        self._within = within
        self._polled = threading.Condition()
        events = poll._poll

        def counted(*args: object) -> object:
            with self._polled:
                self.count += 1
                self._polled.notify_all()
            return events(*args)

        poll._poll = counted  # type: ignore[method-assign]

    def after(self, count: int) -> None:
        with self._polled:
            assert self._polled.wait_for(lambda: self.count > count, self._within), "no poll pass"

    def while_idle(self, poll: links.PollHandler, syncs: int = 20) -> int:
        """The passes ``poll`` makes over ``syncs`` round trips of commands, once it is idle
        (after one): a few each, where a thread spinning on a socket makes thousands."""
        assert poll.sync(self._within)
        before = self.count
        for _ in range(syncs):
            assert poll.sync(self._within)
        return self.count - before


def epoll_interest(epoll_fd: int, fd: int) -> int | None:
    """The events ``fd`` is registered for in the epoll instance ``epoll_fd`` (Linux's fdinfo)."""
    with open(f"/proc/self/fdinfo/{epoll_fd}") as info:
        for line in info:
            fields = line.split()
            if fields and fields[0] == "tfd:" and int(fields[1]) == fd:
                return int(fields[3], 16)
    return None
