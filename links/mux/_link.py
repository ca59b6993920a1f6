"""``MuxLink``: the protocol of a physical connection that carries channels.

The physical connection is a links connection like any other (TLS, heartbeats, the gate and
``reconnect=`` work under channels unchanged); its protocol cuts yamux frames
(``YamuxFramer``) and hands each read's frames to a fresh ``MuxDriver`` (``links.mux._driver``),
which routes them to the channels.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from .._core._messenger import Messenger
from .._core._protocol import Protocol
from .._errors import BrokenError
from ._driver import MuxDriver
from ._engine import MuxEngine
from ._stream import StreamTransport
from ._wire import YamuxFramer

if TYPE_CHECKING:
    from .._core._conid import ConId

__all__ = ["MuxLink", "MuxSettings"]


class MuxSettings:
    """What both ends of a physical connection's engine are made with (``MuxEngine``'s args)."""

    def __init__(self, *, window: int, max_streams: int, chunk: int, keepalive: float | None) -> None:
        self.window = window
        self.max_streams = max_streams
        self.chunk = chunk
        self.keepalive = keepalive

    def engine(self, client: bool) -> MuxEngine:
        return MuxEngine(client=client, window=self.window, chunk=self.chunk, max_streams=self.max_streams)


class _Frames(Messenger[Any, Any]):
    """Whole yamux frames both ways, uncopied: the engine reads each during its dispatch. A
    read's frames are one message, a list, so the driver routes them under one lock and
    wakes each stream once per read, not once per frame."""

    def serialize(self, msg: Any) -> Any:
        return msg

    def deserialize(self, payload: Any) -> Any:
        return [payload]

    def deserialize_many(self, payloads: list[Any]) -> list[Any]:
        return [payloads]


class MuxLink(Protocol[Any, Any]):
    """The physical connection's protocol: a fresh driver per TCP connection (each starts a
    new yamux session: streams do not survive a cut unless a resumable session carries them).

    Args:
        client: the side that dialed.
        settings: the engine's.
        on_stream: called (poll thread, no lock held) with each stream the peer opens; it
            makes a channel over it, or refuses it (``StreamTransport.abort``).
        on_driver: called with each new driver (``(driver, None)``), and with the one lost
            when its connection ends (``(None, driver)``).
    """

    messenger = _Frames()

    def __init__(
        self, client: bool, settings: MuxSettings, on_stream: Callable[[StreamTransport], None],
        on_driver: Callable[[MuxDriver | None, MuxDriver | None], None],
    ) -> None:  # fmt: skip
        self.client = client
        self.settings = settings
        self.framer = YamuxFramer(settings.window)
        self.on_stream = on_stream
        self.on_driver = on_driver
        self.driver: MuxDriver | None = None
        self.heartbeat_interval = settings.keepalive  # a PING that often

    def on_connect(self, con: Any) -> None:
        self.driver = MuxDriver(con, self.settings.engine(self.client), self.on_stream)
        self.on_driver(self.driver, None)
        if self.client:
            self.driver.ping()  # something at once: a server's deadline for a first frame

    def on_recv(self, msg: Any) -> None:
        assert self.driver is not None
        self.driver.received(msg)

    def on_disconnect(self, con_id: ConId) -> None:
        driver, self.driver = self.driver, None
        if driver is not None:
            driver.lost(BrokenError(f"{con_id}: the connection under the channels was lost", "mux.connection_lost"))
            self.on_driver(None, driver)

    def send_heartbeat(self, con: Any) -> None:
        if self.driver is not None:
            self.driver.ping()
