"""Worker processes of ``links serve ... --workers N``, started and watched by the first process.

A worker is the same command run with a hidden ``--worker`` option: it binds the port with
``SO_REUSEPORT``, serves, and instead of a progress line it writes one line a second or so
to its stdout, a pipe to the first process: ``ready`` once it listens, then
``tally CONNECTIONS IN OUT``. The first process draws one progress line for the whole server
from these (two processes drawing on one terminal would overwrite each other). A worker
whose pipe breaks has lost its first process and stops.

A worker that dies is not restarted: the first process reports it (``worker 2 of 3 (pid N)
exited with status S``) and stops the whole server with exit status 1. A server running
silently on fewer processes than asked is the failure this prevents; restarting belongs to
whatever supervises the command (systemd, a container runtime), which then sees the exit.

Workers are started with ``links.bench.python_command``, so they import the same ``links``
as the first process whatever the current directory holds.
"""

from __future__ import annotations

import signal
import subprocess
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

__all__ = ["Worker", "Workers", "workers"]

#: How long a worker has to bind and say ``ready``.
READY_TIMEOUT = 15.0


@dataclass
class Worker:
    """One worker process and the last tally it reported."""

    number: int  # 2..N: the first process is worker 1
    proc: subprocess.Popen[str]
    connections: int = 0
    received: int = 0
    sent: int = 0

    def read(self, ready: threading.Event) -> None:
        """Follow the worker's stdout until it ends (a thread per worker)."""
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            words = line.split()
            if words == ["ready"]:
                ready.set()
            elif len(words) == 4 and words[0] == "tally":
                self.connections, self.received, self.sent = map(int, words[1:])
        ready.set()  # gone before it was ready: the waiter looks at the exit status


class Workers:
    """The running workers: their summed tallies, and which of them died."""

    def __init__(self, total: int) -> None:
        self.total = total
        self.items: list[Worker] = []
        self._readers: list[threading.Thread] = []
        self._ready: list[threading.Event] = []

    def start(self, command: Sequence[str], count: int) -> None:
        """Start ``count`` workers running ``command``, numbered up to ``total``."""
        for number in range(self.total - count + 1, self.total + 1):
            # Their own session: a Ctrl-C in the terminal reaches only us, and we pass it on once.
            proc = subprocess.Popen(
                list(command), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, text=True, start_new_session=True
            )
            worker, ready = Worker(number, proc), threading.Event()
            reader = threading.Thread(target=worker.read, args=(ready,), name=f"worker-{number}", daemon=True)
            reader.start()
            self.items.append(worker)
            self._readers.append(reader)
            self._ready.append(ready)

    def wait_ready(self, timeout: float = READY_TIMEOUT) -> str | None:
        """Wait until every worker listens; what went wrong, or None."""
        for worker, ready in zip(self.items, self._ready):
            if not ready.wait(timeout):
                pid = worker.proc.pid
                return f"worker {worker.number} of {self.total} (pid {pid}) did not start within {timeout:g} s"
        return self.dead()

    def dead(self) -> str | None:
        """A line about the first worker that has exited, or None while all run."""
        for worker in self.items:
            code = worker.proc.poll()
            if code is not None:
                how = f"was killed by signal {-code}" if code < 0 else f"exited with status {code}"
                return f"worker {worker.number} of {self.total} (pid {worker.proc.pid}) {how}"
        return None

    def totals(self) -> tuple[int, int, int]:
        """Connections, messages in and messages out, summed over the workers' last reports."""
        items = self.items
        return (sum(w.connections for w in items), sum(w.received for w in items), sum(w.sent for w in items))

    def stop(self) -> None:
        """Interrupt every worker as Ctrl-C would and wait for each to finish."""
        for worker in self.items:
            if worker.proc.poll() is None:
                worker.proc.send_signal(signal.SIGINT)
        for worker in self.items:
            try:
                worker.proc.wait(10)
            except subprocess.TimeoutExpired:
                worker.proc.kill()
                worker.proc.wait()
        for reader in self._readers:
            reader.join(5)
        for worker in self.items:
            if worker.proc.stdout is not None:
                worker.proc.stdout.close()


@contextmanager
def workers(command: Sequence[str], count: int, total: int) -> Iterator[Workers]:
    """Run ``count`` workers (numbered up to ``total``) with ``command`` while the block runs."""
    running = Workers(total)
    try:
        running.start(command, count)  # inside the try: a failed start stops those already started
        yield running
    finally:
        running.stop()
