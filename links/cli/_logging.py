"""Logging set-up for the ``links`` command: structlog, rendered for people, on stderr.

The library never configures structlog (see ``links._log``); a program does, once, before it
opens connections. Every subcommand calls ``configure_logging()`` first. Logs go to stderr so
stdout carries only the command's result (the demo's summary, say), which scripts can read.

Connection events (``svc.accepted``, ``clt.connected``, ``clt.disconnected``, ...) are logged
at info level; the library logs nothing per message, so info is quiet under load.
"""

from __future__ import annotations

import logging
import sys
from typing import IO

import structlog

__all__ = ["LEVELS", "configure_logging"]

#: Level names accepted by ``--log-level``.
LEVELS = ["debug", "info", "warning", "error", "critical"]


def configure_logging(level: str = "info", stream: IO[str] | None = None, *, colors: bool | None = None) -> None:
    """Send structlog events at ``level`` and above to ``stream`` (stderr) as console lines.

    Args:
        level: the lowest level written (a name from ``LEVELS``).
        stream: where lines go; stderr by default.
        colors: ANSI colours; by default only when ``stream`` is a terminal.
    """
    stream = sys.stderr if stream is None else stream
    if colors is None:
        colors = stream.isatty()
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="%H:%M:%S.%f", utc=False),
            structlog.dev.ConsoleRenderer(colors=colors),
        ],
        # Calls below the level become no-ops on the bound logger itself: no level guards needed.
        wrapper_class=structlog.make_filtering_bound_logger(getattr(logging, level.upper())),
        logger_factory=structlog.PrintLoggerFactory(file=stream),
        # Not cached: a later configure_logging() (a test, a second command) must take effect.
        cache_logger_on_first_use=False,
    )
