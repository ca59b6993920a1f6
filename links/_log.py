"""Structured logging that is quiet until the application asks for it.

Every component asks ``get_logger("recver")`` and a connection binds its ``con_id`` once, so
each event carries it without the call sites repeating it. Event names are short, dotted and
stable (``svc.accepted``, ``frame.too_large``); they are a documented contract (see the README
catalog) that tests assert with ``structlog.testing.capture_logs()``. Nothing is logged per
message, at any level: the hot paths stay silent.

Where an event goes is decided when it is logged, never configured here:

* the application configured structlog (or a test captures with ``capture_logs``): structlog,
  in the application's own processors and format. Only a configuration that differs from
  structlog's own default counts: ``capture_logs`` sets the default back when it ends, and
  structlog then says it is configured, yet nobody asked for info lines on stdout;
* otherwise, the stdlib ``logging`` logger ``links.<component>``, as one line
  ``event key=value ...`` with ``event`` and ``fields`` on the record for handlers that want
  them structured. So a program that configures nothing prints no info lines (Python's
  last-resort handler shows warnings and errors on stderr), as an unconfigured library
  should, and one that calls ``logging.basicConfig(level=logging.INFO)`` sees every event.
"""

from __future__ import annotations

import logging
from typing import Any

import structlog

__all__ = ["get_logger", "Logger"]

_LEVELS = {
    "debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING,
    "error": logging.ERROR, "critical": logging.CRITICAL,
}  # fmt: skip


class Logger:
    """A component's logger with fields bound once (``bind``); see the module docstring."""

    __slots__ = ("name", "_bound", "_structlog", "_stdlib")

    def __init__(self, name: str, bound: dict[str, Any]) -> None:
        self.name = name
        self._bound = bound
        self._structlog = structlog.get_logger(name)  # a lazy proxy: the configuration of each call
        self._stdlib = logging.getLogger(name)

    def bind(self, **fields: Any) -> Logger:
        """The same logger with ``fields`` added to every event it logs."""
        return Logger(self.name, {**self._bound, **fields})

    def debug(self, event: str, **fields: Any) -> None:
        self._emit("debug", event, fields)

    def info(self, event: str, **fields: Any) -> None:
        self._emit("info", event, fields)

    def warning(self, event: str, **fields: Any) -> None:
        self._emit("warning", event, fields)

    def error(self, event: str, **fields: Any) -> None:
        self._emit("error", event, fields)

    def critical(self, event: str, **fields: Any) -> None:
        self._emit("critical", event, fields)

    def exception(self, event: str, **fields: Any) -> None:
        """``error``, with the exception being handled attached."""
        self._emit("error", event, fields, exc_info=True)

    def _emit(self, level: str, event: str, fields: dict[str, Any], exc_info: bool = False) -> None:
        if self._bound:
            fields = {**self._bound, **fields}
        if _configured():
            if exc_info:
                self._structlog.exception(event, **fields)
            else:
                getattr(self._structlog, level)(event, **fields)
            return
        number = _LEVELS[level]
        if self._stdlib.isEnabledFor(number):
            line = " ".join([event, *(f"{key}={value}" for key, value in fields.items())])
            # stacklevel: the record names the code that logged (past debug()/info() and here).
            self._stdlib.log(number, "%s", line, exc_info=exc_info, extra={"event": event, "fields": fields}, stacklevel=3)


def _shape(config: dict[str, Any]) -> tuple[Any, ...]:
    """What tells one structlog configuration from another: the very objects it is made of
    (``capture_logs`` puts the same ones back; an application's own are others)."""
    return (tuple(config["processors"]), config["wrapper_class"], config["context_class"], config["logger_factory"])


# structlog's own default, as it is before any configure() (None: configured before links was
# imported, so by the application: every configuration then counts).
_DEFAULT = None if structlog.is_configured() else _shape(structlog.get_config())


def _configured() -> bool:
    """Whether the application (or a test's ``capture_logs``) configured structlog."""
    return structlog.is_configured() and (_DEFAULT is None or _shape(structlog.get_config()) != _DEFAULT)


def get_logger(component: str, **bound: Any) -> Logger:
    """The logger of ``links.<component>``, with ``bound`` fields attached."""
    return Logger(f"links.{component}", bound)
