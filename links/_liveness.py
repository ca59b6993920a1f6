"""Liveness: the timer tasks that keep a connection honest, one kind each.

* ``heartbeat``: the protocol's own heartbeat (``Protocol.send_heartbeat``), every
  ``heartbeat_interval``; a send from the timer thread never waits (``links._threads``).
* ``silence_check``: a peer we heard nothing from for a limit is dropped: the connection's
  ``idle_timeout=``, or its protocol's own ``idle_timeout`` (SoupBinTCP's), whichever is
  shorter (``idle_limit``); a session's dead-peer check is the same check. One check for all.
* ``stall_check``: a peer that took none of what we owe it for ``stall_timeout`` is a slow
  consumer and is dropped (started once per backlog by ``Attachment.watch_writable``).

All three read time from the connection's timer clock, so a ``FakeClock`` drives them.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ._core._status import RetryAfter, TaskStatus
from ._errors import LinksError

if TYPE_CHECKING:
    from ._attachment import Attachment
    from ._connection import Connection

__all__ = ["heartbeat", "idle_limit", "silence_check", "stall_check"]


def idle_limit(limit: float | None, protocol: Any) -> tuple[float | None, str, str]:
    """The silence an attachment is allowed, the event that reports it and the reason it ends
    with: the connection's ``idle_timeout=`` (``clt.idle_timeout``, ``idle_timeout``) or the
    protocol's ``idle_timeout`` (its ``idle_event``, both), whichever is shorter."""
    own = getattr(protocol, "idle_timeout", None)
    if own is not None and (limit is None or own < limit):
        return own, protocol.idle_event, protocol.idle_event
    return limit, "clt.idle_timeout", "idle_timeout"


def heartbeat(connection: Connection, att: Attachment) -> Callable[[], TaskStatus]:
    protocol = att.protocol

    def beat() -> TaskStatus:
        if att.closed:
            return TaskStatus.TERMINATE
        try:
            protocol.send_heartbeat(connection.hook_handle(att))
        except LinksError as e:
            connection.log.warning("heartbeat.failed", error=str(e))
        return TaskStatus.TERMINATE if att.closed else TaskStatus.COMPLETED

    return beat


def silence_check(att: Attachment, limit: float, event: str, reason: str) -> Callable[[], Any]:
    """A timer task that drops ``att`` once nothing arrived from the peer for ``limit`` seconds.

    A silent peer (paused, unplugged, behind a NAT that forgot us) sends no FIN, so only
    silence can tell. Bytes waiting unread count as hearing from it: then our reader is behind
    (a busy poll thread, or no thread in ``recv``), not the peer gone. The task runs again
    exactly when the limit could next be reached, so detection lags by timer latency only.
    """

    def check() -> Any:
        if att.closed:
            return TaskStatus.TERMINATE
        clock = att.connection.clock
        idle = clock() - att.last_recv
        if idle >= limit and att.transport.has_unread_data():
            att.last_recv = clock()
            idle = 0.0
        if idle >= limit:
            att.connection.log.warning(event, idle=round(idle, 3), limit=limit, idle_timeout=limit)
            att.drop(reason)
            return TaskStatus.TERMINATE
        return RetryAfter(limit - idle)

    return check


def stall_check(att: Attachment, limit: float) -> Callable[[], Any]:
    """A timer task that drops ``att`` once its peer took none of what we owe it for ``limit``
    seconds: a slow consumer (``links._outbound``). Only that connection ends; its sends
    then raise ``BrokenError("slow_consumer")`` (or, with ``reconnect=``, wait for a redial)."""
    outbound = att.outbound

    def check() -> Any:
        if att.closed and not att.lingering:
            return TaskStatus.TERMINATE
        stalled = outbound.stalled_for()
        if stalled >= limit:
            att.connection.log.warning("clt.slow_consumer", stalled=round(stalled, 3), stall_timeout=limit, owed=outbound.owed_bytes)
            if att.lingering:
                att.unlinger("slow_consumer")
            else:
                att.drop("slow_consumer")
            return TaskStatus.TERMINATE
        return RetryAfter(limit - stalled)

    return check
