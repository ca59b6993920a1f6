"""How a poll driver reports a handler that failed: logged (``poll.handler_failed``, with the
connection it names), unregistered, and told to close itself; the driver carries on with the
others. Shared by the poll thread (``links._poll``) and the asyncio loop's poller (``links.aio``)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ._log import get_logger

__all__ = ["fail", "handler_ids", "refuse"]

_log = get_logger("poll")


def handler_ids(handler: Any) -> dict[str, str]:  # log fields naming its connection, if any
    con_id = getattr(handler, "con_id", None)
    return {"con_id": str(con_id)} if con_id is not None else {}


def refuse(handler: Any, error: BaseException) -> None:
    """``handler`` cannot be serviced (its fd is closed, or another's): logged, and told."""
    _log.error("poll.handler_failed", kind=handler.poll_kind, handler=repr(handler), error=repr(error))
    handler.on_poll_failure(error)


def fail(handler: Any, error: BaseException, unregister: Callable[[Any, str, None], None]) -> None:
    """A call of ``handler`` raised ``error``: logged, ``handler`` unregistered and told."""
    _log.error("poll.handler_failed", kind=handler.poll_kind, error=repr(error), **handler_ids(handler))
    unregister(handler, "failed", None)
    try:
        handler.on_poll_failure(error)
    except Exception as e:
        _log.error("poll.handler_failed", kind=handler.poll_kind, error=repr(e), during="close")
