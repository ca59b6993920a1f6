"""Structured logging: structlog, never configured here (applications and the CLI do that).

Every component asks ``get_logger("recver")`` and a connection binds its ``con_id`` once, so
each event carries it without the call sites repeating it. Event names are short, dotted and
stable (``svc.accepted``, ``frame.too_large``); they are a documented contract (see the README
catalog) that tests assert with ``structlog.testing.capture_logs()``. Nothing is logged per
message, at any level: the hot paths stay silent.
"""

from __future__ import annotations

from typing import Any

import structlog

__all__ = ["get_logger"]


def get_logger(component: str, **bound: Any) -> Any:
    """A structlog logger named ``links.<component>`` with ``bound`` fields attached."""
    log = structlog.get_logger(f"links.{component}")
    return log.bind(**bound) if bound else log
