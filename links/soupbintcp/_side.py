"""``Side``: what a SoupBinTCP client connection and server connection do alike.

Both ends keep the same liveness rules: each sends a heartbeat when it sent nothing for one
interval, and each treats the other as gone after ``idle_timeout`` seconds without a packet
from it. The silence is checked by the engine's one idle check (``Protocol.idle_timeout``,
``links._liveness``), ending the connection as ``soupbintcp.idle_timeout``. The timestamps
come from the connection's timer clock, so a ``FakeClock`` drives both in tests.
"""

from __future__ import annotations

from typing import Any


from .._core._protocol import Protocol
from .._log import get_logger
from ._messenger import SoupBinTcpMessenger, State

__all__ = ["Side", "liveness_settings"]


def liveness_settings(heartbeat_interval: float | None, idle_timeout: float | None) -> tuple[float | None, float | None]:
    """A configuration's ``(heartbeat_interval, idle_timeout)``, checked: each None (off) or
    positive seconds; a ``heartbeat_interval`` of 0 means off too.

    Raises:
        ValueError: anything else. An ``idle_timeout`` of nan would never expire and, in
            ``is_connected``, never count the peer as alive.
    """
    heartbeat_interval = heartbeat_interval or None
    for name, value in (("heartbeat_interval", heartbeat_interval), ("idle_timeout", idle_timeout)):
        if value is not None and not value > 0:
            raise ValueError(f"{name} must be None or a positive number of seconds, not {value!r}")
    return heartbeat_interval, idle_timeout


class Side(Protocol):
    """Base of the per-connection client and server protocols."""

    #: The heartbeat packet this side sends (client R, server H).
    heartbeat: Any = None
    idle_event = "soupbintcp.idle_timeout"

    def __init__(self, role: str, config: Any) -> None:
        self.framer = config.framer
        self.messenger = SoupBinTcpMessenger(role, payload_messenger=config.payload_messenger, justify=config.justify)
        self.heartbeat_interval = config.heartbeat_interval
        self.idle_timeout = config.idle_timeout  # the engine checks it (links._liveness)
        self._con: Any = None
        self._clock: Any = None
        self._log: Any = None
        self._last_recv = self._last_sent = 0.0

    def _start(self, con: Any) -> None:
        """``on_connect``'s common part: remember the connection, start both clocks."""
        self._con = con
        self._clock = con.timer.clock
        self._last_recv = self._last_sent = self._clock.monotonic()
        self._log = get_logger("soupbintcp", con_id=str(con.con_id))

    def is_connected(self) -> bool:
        if self.messenger.state is not State.LOGGED_IN:
            return False
        return self.idle_timeout is None or self._clock.monotonic() - self._last_recv < self.idle_timeout

    def on_sent(self, msg: Any) -> None:
        self._last_sent = self._clock.monotonic()

    def send_heartbeat(self, con: Any) -> None:
        if self.messenger.state is not State.LOGGED_IN:
            return  # the login has its own deadline (Clt.connect's timeout, the server's login_timeout)
        if not self.is_connected():
            return  # silent past idle_timeout: the engine's idle check is ending it; no beat to the dead
        if self._clock.monotonic() - self._last_sent >= self.heartbeat_interval:  # type: ignore[operator]
            con.send(self.heartbeat, timeout=0)  # a full socket already tells the peer we live
