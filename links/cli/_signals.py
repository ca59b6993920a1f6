"""Signals for the long-running subcommands: Ctrl-C and SIGTERM end them through cleanup."""

from __future__ import annotations

import signal
from collections.abc import Iterator
from contextlib import contextmanager

__all__ = ["signals_held", "interrupt_on_signals"]


@contextmanager
def signals_held() -> Iterator[None]:
    """Hold SIGINT and SIGTERM back until the block ends, then deliver any that came."""
    held = {signal.SIGINT, signal.SIGTERM}
    signal.pthread_sigmask(signal.SIG_BLOCK, held)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, held)


def interrupt_on_signals() -> None:
    """SIGINT and SIGTERM end the command through KeyboardInterrupt, so cleanup runs.

    SIGINT is set explicitly because a shell starting us in the background (``cmd &`` in a
    script) leaves it ignored, and Ctrl-C / ``kill -INT`` must still stop the command.
    """
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, signal.default_int_handler)
