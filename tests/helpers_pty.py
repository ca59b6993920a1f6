"""A pseudo-terminal for tests of what the ``links`` command draws on a terminal (progress
lines are drawn only there)."""

from __future__ import annotations

import os
import pty
import re
import select
import time
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def terminal() -> Iterator[tuple[int, int]]:
    """A pty: yields (the terminal's fd, to hand a child as its stderr; the fd we read from)."""
    master, tty = pty.openpty()
    try:
        yield tty, master
    finally:
        os.close(tty)
        os.close(master)


def read_until(master: int, pattern: re.Pattern[str], timeout: float) -> str:
    """Everything drawn on the terminal until ``pattern`` appears in it (AssertionError at ``timeout``)."""
    text, deadline = "", time.monotonic() + timeout
    while not pattern.search(text):
        remaining = deadline - time.monotonic()
        assert remaining > 0, f"{pattern.pattern!r} never appeared in: {text[-2000:]!r}"
        readable, _, _ = select.select([master], [], [], remaining)
        if readable:
            try:
                chunk = os.read(master, 65536)
            except OSError:  # every writer is gone (EIO)
                break
            text += chunk.decode(errors="replace")
    return text
