"""Liveness: the timer tasks that keep a connection honest, one kind each.

* ``start``: one heartbeat writer per attachment, beating for each layer that asks (the
  protocol's ``send_heartbeat`` every ``heartbeat_interval``, a session's ack every its
  interval); a send from the timer thread never waits (``links._threads``).
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
    from ._timer import TimerHandle

__all__ = ["start", "idle_limit", "silence_check", "stall_check", "first_message_check"]



def start(connection: Connection, att: Attachment) -> list[TimerHandle]:
    """The liveness of a new attachment: one heartbeat writer and one idle check, whatever the
    layers. The writer beats for each layer that asks (the protocol's ``send_heartbeat`` every
    ``heartbeat_interval``; a session's ack every its own interval); the check watches the
    shortest silence any of them allows (``idle_limit``)."""
    protocol, timer, tasks = att.protocol, connection.timer, []
    beats: list[tuple[float, Callable[[], None]]] = []
    if protocol.heartbeat_interval:
        beats.append((protocol.heartbeat_interval, _protocol_beat(connection, att)))
    silences = [(connection.idle_timeout, "clt.idle_timeout", "idle_timeout")]
    if protocol.idle_timeout is not None:
        silences.append((protocol.idle_timeout, protocol.idle_event, protocol.idle_event))
    if connection.session is not None:
        interval, beat, dead_after = connection.session.liveness(att)
        beats.append((interval, beat))
        silences.append((dead_after, "session.peer_silent", "peer_silent"))
    if beats:
        every = min(interval for interval, _ in beats)
        tasks.append(timer.schedule(f"heartbeat {att.con_id}", every, _beating(att, beats, connection.clock)))
    limit, event, reason = idle_limit(silences)
    if limit is not None:
        tasks.append(timer.schedule(f"idle {att.con_id}", limit, silence_check(att, limit, event, reason)))
    return tasks


def idle_limit(silences: list[tuple[float | None, str, str]]) -> tuple[float | None, str, str]:
    """The shortest of the silences allowed (``(seconds or None, event, reason)``), with the
    event that reports it and the reason the connection ends with."""
    allowed = [silence for silence in silences if silence[0] is not None]
    return min(allowed, key=lambda silence: silence[0]) if allowed else (None, "", "")  # type: ignore[arg-type,return-value]


def _protocol_beat(connection: Connection, att: Attachment) -> Callable[[], None]:
    protocol = att.protocol

    def beat() -> None:
        try:
            protocol.send_heartbeat(connection.hook_handle(att))
        except LinksError as e:
            connection.log.warning("heartbeat.failed", error=str(e))

    return beat


def _beating(att: Attachment, beats: list[tuple[float, Callable[[], None]]], clock: Callable[[], float]) -> Callable[[], Any]:
    """The one heartbeat writer: each beat when its own interval is due, then again at the next."""
    start = clock()
    due = [start + interval for interval, _ in beats]

    def tick() -> Any:
        if att.closed:
            return TaskStatus.TERMINATE
        now = clock()
        for i, (interval, beat) in enumerate(beats):
            if due[i] <= now + 1e-9:  # a timer may fire a hair early on its own clock
                beat()
                # The next one an interval on; beats missed while the timer lagged are not made up.
                due[i] = due[i] + interval if due[i] + interval > now else now + interval
        if att.closed:
            return TaskStatus.TERMINATE
        return RetryAfter(max(min(due) - now, 0.0))

    return tick


def silence_check(att: Attachment, limit: float, event: str, reason: str) -> Callable[[], Any]:
    """A timer task that drops ``att`` once nothing arrived from the peer for ``limit`` seconds.

    A silent peer (paused, unplugged, behind a NAT that forgot us) sends no FIN, so only
    silence can tell. Bytes waiting unread count as hearing from it: then our reader is behind
    (a busy poll thread, or no thread in ``recv``), not the peer gone. The task runs again
    exactly when the limit could next be reached, so detection lags by timer latency only.
    The silence is counted from now (the check's start), then from each read.
    """
    att.last_recv = att.connection.clock()

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


def first_message_check(att: Attachment, limit: float) -> Callable[[], Any]:
    """A service's deadline on an accepted connection: no whole message within ``limit``
    seconds (a peer that connects and says nothing, or parks one byte short of a frame) and
    it is closed (``svc.handshake_timeout``), so a gate slot is never held for free."""

    def check() -> Any:
        if not att.closed and att.first_deadline is not None:
            att.connection.log.warning("svc.handshake_timeout", handshake_timeout=limit)
            att.drop("handshake_timeout")
        return TaskStatus.TERMINATE

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
