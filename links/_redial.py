"""``Redialer``: a client connection's reconnect policy, kept outside the connection.

When an attachment of a client with ``reconnect=links.Backoff(...)`` is lost, the connection
hands the matter to its redialer: it waits the backoff's delay on the timer, dials, and runs
the handshakes (the protocol's, and a session's resume) on a short-lived thread of its own,
so a slow dial never delays anybody's heartbeat; then publishes the new attachment on the
connection, or schedules the next attempt. The schedule starts over once a connection stayed
up for the backoff's ``reset_after`` (on the timer's clock, so a ``FakeClock`` drives it).

It gives up (closing the connection with ``BrokenError("reconnect_gave_up")``) when the
backoff says so, and at once when the peer says the session is gone (``SessionLost``) or a
protocol hook failed in the handshake (retrying would repeat it).
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from ._core._backoff import Backoff
from ._core._status import TaskStatus
from ._errors import BrokenError, LinksError, SessionLost

if TYPE_CHECKING:
    import socket

    from ._connection import Connection

__all__ = ["Redialer"]


class Redialer:
    """Redials ``connection`` on ``backoff``'s schedule with ``dial()`` (a fresh socket)."""

    def __init__(self, connection: Connection, backoff: Backoff, dial: Callable[[], socket.socket]) -> None:
        self.connection = connection
        self.backoff = backoff
        self.dial = dial
        self.attempts = 0  # since the last connection that stayed up
        self._rng = random.Random()

    def schedule(self) -> None:
        """The current attachment was lost: plan the next attempt (or give up)."""
        con, backoff = self.connection, self.backoff
        now = con.clock()
        if now - con.attached_at >= backoff.reset_after:
            self.attempts = 0  # it stayed up long enough: start the schedule over
        self.attempts += 1
        attempt = self.attempts
        if backoff.gives_up(attempt):
            con.close("reconnect_gave_up", BrokenError(f"{con.con_id}: gave up after {attempt - 1} attempts", "reconnect_gave_up"))
            return
        delay = backoff.delay(attempt, self._rng)
        con.log.info("clt.reconnecting", attempt=attempt, delay=round(delay, 6), at=now)

        def start() -> TaskStatus:
            if not con.closed:
                threading.Thread(target=self._attempt, args=(attempt,), name=f"links-redial {con.name}", daemon=True).start()
            return TaskStatus.TERMINATE

        try:
            con.timer.schedule(f"reconnect {con.con_id}", delay, start)
        except RuntimeError:  # the timer was shut down (interpreter exit, a test's teardown)
            con.close("timer_shutdown", BrokenError(f"{con.con_id}: timer shut down while reconnecting", "timer_shutdown"))

    def _attempt(self, attempt: int) -> None:
        con = self.connection
        try:
            deadline = time.monotonic() + con.handshake_timeout  # a real wait: the real clock
            att = con.open(self.dial(), deadline)
        except SessionLost as e:
            con.close("session_lost", e)  # every later call raises it: the session is gone
            return
        except (LinksError, OSError, TimeoutError) as e:
            self._failed(attempt, str(e))
            return
        except Exception as e:  # a protocol hook failed in the handshake: retrying would repeat it
            con.log.error("clt.reconnect_failed", attempt=attempt, error=repr(e))
            con.close("reconnect_failed", BrokenError(f"{con.con_id}: handshake failed: {e!r}", "reconnect_failed"))
            return
        try:
            con.publish(att, con.session.replay_frames if con.session is not None else None)
        except LinksError as e:  # the new connection broke while the replay was written to it
            self._failed(attempt, str(e))
            return
        if con.closed and att.closed:
            return  # closed for good during the attempt: publish discarded the new connection
        con.log.info("clt.reconnected", attempt=attempt, local=str(att.con_id.local), at=con.clock())

    def _failed(self, attempt: int, error: str) -> None:
        self.connection.log.info("clt.reconnect_failed", attempt=attempt, error=error)
        if not self.connection.closed:
            self.schedule()
