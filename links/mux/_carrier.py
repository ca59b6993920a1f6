"""``Carrier``: a physical connection that carries channels, from the side that dialed it.

``Carrier.connect`` dials (with every option of ``Clt.connect``: ``timeout``, ``tls=``,
``reconnect=``, ...) and spawns the physical connection's receiver into the poll thread at
once: it is the one reader of the socket (``links.mux._driver``). ``open()`` then starts a
channel: a ``Clt`` whose transport is a yamux stream, with everything a ``Clt`` has (its own
protocol instance, framer, messenger, callback, ``split``, refs, spawned receiver, heartbeats).
Its ``con_id`` names the channel (``name#stream id``) and the physical connection's addresses.

Channels the peer opens are refused (RST) without ``protocol=``; with it, each is spawned, or
given to ``accept=`` (a function that receives it as a ``Clt`` on the poll thread and owns it
from then on). They take the limits given to the connection (``idle_timeout``,
``stall_timeout``, ``max_outbound``), as a service's channels take the service's.

With ``reconnect=``, a cut ends every channel of the lost connection (``BrokenError``,
``mux.connection_lost``: a new TCP connection is a new yamux session) and ``open`` waits, within
its timeout, for the next connection.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from .._callbacks import Callback
from .._clock import deadline_after, time_left
from .._clt import Clt, ProtocolFactory
from .._core._conid import Addr, ConId, Role
from .._core._status import TaskStatus
from .._errors import ConnectTimeout
from .._outbound import DEFAULT_MAX_OUTBOUND, DEFAULT_STALL_TIMEOUT
from ._channel import channel_over, open_channel
from ._driver import MuxDriver
from ._engine import DEFAULT_CHUNK, DEFAULT_MAX_STREAMS, DEFAULT_WINDOW
from ._link import MuxLink, MuxSettings
from ._stream import StreamTransport

__all__ = ["Carrier", "finish_carrying", "DEFAULT_KEEPALIVE"]

#: Seconds between PINGs on an idle physical connection (its peer's idle deadline, if any,
#: sees them); None: none.
DEFAULT_KEEPALIVE = 30.0


class Carrier:
    """A physical connection carrying channels; see the module docstring."""

    def __init__(self, settings: MuxSettings, name: str) -> None:
        self.settings = settings
        self.name = name
        self._serve: tuple[Any, Any, Any] = (None, None, None)  # protocol, callback, accept: the peer's channels
        self._driver: MuxDriver | None = None
        self._changed = threading.Condition()
        self._physical: Any = None  # the physical connection's CltSender
        self._channel_args: dict[str, Any] = {}
        self._peer_limits: dict[str, Any] = {}  # of the channels the peer opens
        self.timer: Any = None  # the timer given to connect, if any
        self.client = True  # the yamux client (it dialed): odd stream ids

    @classmethod
    def connect(
        cls,
        addr: str | Addr,
        *,
        timeout: float = 1.0,
        name: str = "mux",
        protocol: ProtocolFactory | None = None,
        callback: Callback | None = None,
        accept: Callable[[Clt], None] | None = None,
        window: int = DEFAULT_WINDOW,
        max_channels: int = DEFAULT_MAX_STREAMS,
        keepalive: float | None = DEFAULT_KEEPALIVE,
        chunk: int = DEFAULT_CHUNK,
        **options: Any,
    ) -> Carrier:
        """Dial ``addr`` and start a yamux session on the connection.

        Args:
            timeout, name: as ``Clt.connect``; every other keyword of ``Clt.connect`` but
                ``protocol``, ``callback`` and ``session`` applies to the physical connection
                (``tls=``, ``tls_server_name=``, ``reconnect=``, ``poll_handler=``, ``timer=``,
                ``idle_timeout=``, ``stall_timeout=``, ``max_outbound=`` ...).
            protocol, callback: for channels the *peer* opens; without ``protocol`` they are
                refused (RST). They take this connection's ``idle_timeout``, ``stall_timeout``
                and ``max_outbound``.
            accept: receives each channel the peer opens as a ``Clt`` (poll thread), to own;
                without it, the channel's receiver is spawned (its messages reach ``callback``).
            window: the receive window granted to each channel (256 KiB at least).
            max_channels: channels open at once on this connection.
            keepalive: seconds between PINGs (None: none).
            chunk: bytes of one channel's data sent per turn (fairness between channels).

        Raises:
            As ``Clt.connect``.
        """
        if "session" in options:
            raise TypeError("links.mux.connect does not take session= (channels over a resumable session are not built yet)")
        mux = cls(MuxSettings(window=window, max_streams=max_channels, chunk=chunk, keepalive=keepalive), name)
        mux._serve = (protocol, callback, accept)
        mux._runtime(options)
        physical = Clt.connect(addr, protocol=mux._link, timeout=timeout, name=name, **options)
        mux._physical = physical.into_sender_with_spawned_recver()
        # Closed for good comes after the driver is gone (a redial given up): ``open`` waits on both.
        physical._con.add_listener(lambda _con: mux._set_driver(None))
        return mux

    @classmethod
    def from_socket(
        cls,
        sock: Any,
        *,
        client: bool = True,
        name: str = "mux",
        protocol: ProtocolFactory | None = None,
        callback: Callback | None = None,
        accept: Callable[[Clt], None] | None = None,
        window: int = DEFAULT_WINDOW,
        max_channels: int = DEFAULT_MAX_STREAMS,
        keepalive: float | None = DEFAULT_KEEPALIVE,
        chunk: int = DEFAULT_CHUNK,
        **options: Any,
    ) -> Carrier:
        """Carry channels over a connected socket (or a socket double from ``links.testing``),
        as the yamux client (odd stream ids) or not. The options are ``connect``'s, and
        ``Clt.from_socket``'s for the physical connection."""
        mux = cls(MuxSettings(window=window, max_streams=max_channels, chunk=chunk, keepalive=keepalive), name)
        mux._serve = (protocol, callback, accept)
        mux.client = client
        mux._runtime(options)
        role = Role.INITIATOR if client else Role.ACCEPTOR
        physical = Clt.from_socket(sock, role, protocol=mux._link, name=name, **options)
        mux._physical = physical.into_sender_with_spawned_recver()
        return mux

    def _runtime(self, options: dict[str, Any]) -> None:
        """The runtime threads the channels use: the connection's own; and the limits of the
        channels the peer opens: the connection's too (as a service's channels take its own)."""
        for key in ("timer", "poll_handler"):
            if key in options:
                self._channel_args[key] = options[key]
        for key in ("idle_timeout", "stall_timeout", "max_outbound"):
            if key in options:
                self._peer_limits[key] = options[key]
        self.timer = options.get("timer")

    def _link(self) -> MuxLink:
        return MuxLink(self.client, self.settings, self._peer_opened, self._set_driver)

    def _set_driver(self, driver: MuxDriver | None, gone: MuxDriver | None = None) -> None:
        with self._changed:
            self._driver = driver
            self._changed.notify_all()

    def _peer_opened(self, stream: StreamTransport) -> None:
        protocol, callback, accept = self._serve
        if protocol is None:
            stream.abort()
            stream.close()
            return
        clt = channel_over(
            stream, name=self.name, protocol=protocol, callback=callback, runtime=self._channel_args, limits=self._peer_limits
        )
        if clt is None:
            return
        if accept is not None:
            accept(clt)
        else:
            clt.into_sender_with_spawned_recver()

    @property
    def con_id(self) -> ConId:
        """The physical connection's identity."""
        return self._physical.con_id

    @property
    def closed(self) -> bool:
        """Whether the connection is closed for good (no channel can be opened on it)."""
        return self._physical is None or self._physical._con.closed

    @property
    def shareable(self) -> bool:
        """Whether a new handle may share it: open, and its peer has not said GO_AWAY (which
        refuses new channels: a new connection is needed for those)."""
        driver = self._driver
        return not self.closed and not (driver is not None and driver.engine.peer_going_away)

    def on_closed(self, fn: Callable[[], None]) -> None:
        """Call ``fn()`` once the connection is closed for good (at once if it is)."""
        self._physical._con.add_listener(lambda _con: fn())

    def is_connected(self) -> bool:
        """Whether the TCP connection is up now (False while ``reconnect=`` redials). Never raises."""
        return self._physical is not None and self._physical.is_connected()

    def open(
        self,
        *,
        protocol: ProtocolFactory,
        callback: Callback | None = None,
        name: str | None = None,
        timeout: float = 1.0,
        idle_timeout: float | None = None,
        stall_timeout: float = DEFAULT_STALL_TIMEOUT,
        max_outbound: int = DEFAULT_MAX_OUTBOUND,
    ) -> Clt:
        """A new channel, as a ``Clt``: its protocol's ``on_connect`` has run and its handshake
        (``is_connected()``) is complete.

        Args:
            protocol, callback: as ``Clt.connect``, for this channel alone.
            name: shown in its ``con_id`` (``name#stream id``); the connection's name by default.
            timeout: seconds to wait for a physical connection (redialing) and the handshake.
            idle_timeout, stall_timeout, max_outbound: as ``Clt.connect``, per channel.

        Raises:
            ClosedError: the connection is closed. BrokenError: the connection is lost (without
                ``reconnect=``), or the peer said GO_AWAY. ConnectTimeout: no connection, or no
                completed handshake, within ``timeout``.
        """
        deadline = deadline_after(timeout)
        driver = self._wait_driver(deadline)
        limits = {"idle_timeout": idle_timeout, "stall_timeout": stall_timeout, "max_outbound": max_outbound}
        left = time_left(deadline)
        return open_channel(
            driver, name=name or self.name, protocol=protocol, callback=callback, timeout=0.0 if left is None else left,
            runtime=self._channel_args, limits=limits,
        )  # fmt: skip

    def _wait_driver(self, deadline: float | None) -> MuxDriver:
        with self._changed:
            while True:
                if self._physical is not None and self._physical._con.closed:
                    raise self._physical._con.error()
                if self._driver is not None and self._driver.error is None:
                    return self._driver
                left = time_left(deadline)
                if left == 0.0:
                    raise ConnectTimeout(f"{self.name}: no connection to open a channel on")
                self._changed.wait(left)

    def finish(self) -> None:
        """Close once every channel on the connection has finished (``finish_carrying``)."""
        physical = self._physical
        if physical is None:
            self.close()
            return
        finish_carrying(physical, self._driver, self.close)

    def close(self) -> None:
        """Close the physical connection (GO_AWAY first): every channel on it ends. Idempotent."""
        driver = self._driver
        if driver is not None:
            driver.go_away()
        if self._physical is not None:
            self._physical.close()

    def __enter__(self) -> Carrier:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Carrier({self.name}, connected={self.is_connected()})"


def finish_carrying(physical: Any, driver: MuxDriver | None, close: Callable[[], None]) -> None:
    """Close a connection carrying channels once every channel on it has finished: GO_AWAY now
    (no new channel either way), ``close()`` when each stream has ended both ways, so what its
    channel was told was COMPLETED reached the peer, which read it (``MuxDriver.finish``). A peer
    that leaves a channel unfinished is closed on after the connection's ``stall_timeout``; a
    poll handler's shutdown (``links.shutdown()``, at exit) lets it end first (``linger``).

    Args:
        physical: the connection's sender. driver: its yamux session (None: none now).
        close: closes it (GO_AWAY first).
    """
    if driver is None or driver.error is not None:
        close()
        return
    limit = physical._con.stall_timeout

    def close_now() -> TaskStatus:
        close()
        return TaskStatus.TERMINATE

    try:
        # The connection's own timer and poll thread, never fresh defaults: this may run while
        # links.shutdown() stops them (the defaults are let go of first).
        task = physical._con.timer.schedule(f"mux finish {physical.con_id}", limit, close_now, delay=limit)
    except RuntimeError:  # the timer shut down: nothing could bound the wait
        close()
        return
    # Until then the poll thread must go on reading and writing it: its shutdown waits.
    poll = driver.att.poll
    if poll is None:  # no poll thread (any more) reads or writes it: nothing can finish
        task.cancel()
        close()
        return
    linger = getattr(poll, "linger", None)  # an event loop's poller (links.aio) has none
    if linger is not None:
        done = linger()
        physical._con.add_listener(lambda _con: done())

    def finished() -> None:
        task.cancel()
        close()

    driver.finish(finished)
