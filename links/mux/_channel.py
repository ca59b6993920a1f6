"""Channels as connections: a ``Clt`` over one stream (``links.mux._stream``).

Either side makes them the same way: a ``Connection`` (the engine every connection runs on)
whose attachment's transport is the stream, named ``name#stream id`` so its ``con_id`` names
the channel and, by its addresses, the TCP connection it travels on.
"""

from __future__ import annotations

import threading
import weakref
from typing import TYPE_CHECKING, Any

from .._callbacks import Callback, DevNullCallback
from .._clt import Clt, ProtocolFactory
from .._connection import Connection
from .._clock import deadline_after
from .._core._conid import Role
from .._errors import ConnectTimeout
from .._exit import track
from .._liveness import first_message_check
from .._runtime import default_poll_handler, default_timer
from ._stream import StreamTransport

if TYPE_CHECKING:
    from ._driver import MuxDriver

__all__ = ["ChannelsAtExit", "channel_connection", "channel_over", "open_channel"]

_NO_CALLBACK = DevNullCallback()  # it keeps nothing: one for every channel given none


class ChannelsAtExit:
    """Closes every channel of one physical connection at interpreter exit (``links._exit``).

    A connection is tracked for that on its own (``Clt``); a channel is not: one entry per TCP
    connection stands for all its channels (the open ones are its driver's streams), as an
    entry of its own costs about 0.1 KB and thousands of channels may idle on one connection.
    It is closed with the services, before any connection (``links._exit``): each channel's
    close is then a local one over a connection that still works (its goodbye goes out, a
    thread waiting in its ``recv`` gets ``ClosedError``), not the loss of the connection.
    """

    __slots__ = ("_driver", "__weakref__")

    _made: weakref.WeakKeyDictionary[MuxDriver, ChannelsAtExit] = weakref.WeakKeyDictionary()
    _lock = threading.Lock()

    def __init__(self, driver: MuxDriver) -> None:
        self._driver = weakref.ref(driver)  # weak: the entry in ``_made`` must not keep its key

    @classmethod
    def of(cls, driver: MuxDriver) -> None:
        """Make sure ``driver``'s channels are closed at exit (once per driver)."""
        with cls._lock:
            if driver not in cls._made:
                cls._made[driver] = closer = cls(driver)
                track(closer)  # no close arguments: closed first, with the services

    def close(self, reason: str = "interpreter_exit") -> None:
        """Close every channel still open on the connection, as ``Clt.close`` does (locally)."""
        driver = self._driver()
        if driver is None:
            return
        with driver.lock:
            atts = [stream.attachment for stream in driver.streams.values() if stream.attachment is not None]
        for att in atts:
            att.connection.close(reason)


def channel_connection(
    stream: StreamTransport, role: Role, name: str, protocol: ProtocolFactory, callback: Callback | None,
    runtime: dict[str, Any], **limits: Any,
) -> Connection:  # fmt: skip
    """The ``Connection`` of a channel over ``stream`` (not opened yet)."""
    timer = runtime.get("timer") or default_timer()
    poll = runtime.get("poll")  # made once per runtime: a closure per channel would cost 0.1 KB
    if poll is None:
        handler = runtime.get("poll_handler")
        poll = runtime["poll"] = (lambda: handler) if handler is not None else default_poll_handler
    return Connection(
        role, f"{name}#{stream.stream_id}", protocol_factory=protocol,
        callback=_NO_CALLBACK if callback is None else callback, timer=timer, poll=poll, **limits,
    )  # fmt: skip


def channel_over(
    stream: StreamTransport, *, name: str, protocol: ProtocolFactory, callback: Callback | None,
    permit: Any = None, handshake_timeout: float | None = None, runtime: dict[str, Any], limits: dict[str, Any],
) -> Clt | None:  # fmt: skip
    """A channel the peer opened, over ``stream``: made a ``Clt`` (its ``on_connect`` ran) and
    accepted (ACK); with ``handshake_timeout``, closed unless a whole message comes within it.
    None, with the stream refused (RST) and the permit released, when ``on_connect`` raised."""
    con = channel_connection(stream, Role.ACCEPTOR, name, protocol, callback, runtime, **limits)
    try:
        clt = Clt(con, tracked=False)  # closed at exit through its driver: see ChannelsAtExit
        att = con.open(stream, con.clock(), permit, wait=False)  # type: ignore[arg-type]
    except Exception as e:
        stream.abort()
        stream.close()
        if permit is not None:
            permit.release()
        con.log.error("mux.channel_failed", stream=stream.stream_id, error=repr(e))
        return None
    if handshake_timeout is not None:
        check = first_message_check(att, handshake_timeout)
        att.first_deadline = att.schedule(f"first message {att.con_id}", handshake_timeout, check)
    stream.attachment = att
    ChannelsAtExit.of(stream.driver)
    stream.driver.accept(stream)
    con.publish(att)
    con.log.info("mux.channel_accepted", stream=stream.stream_id)
    return clt


def open_channel(
    driver: MuxDriver, *, name: str, protocol: ProtocolFactory, callback: Callback | None, timeout: float,
    runtime: dict[str, Any], limits: dict[str, Any],
) -> Clt:  # fmt: skip
    """A new channel of ours on ``driver``'s connection (SYN), as a ``Clt`` whose protocol's
    ``on_connect`` ran and whose handshake (``is_connected()``) completed within ``timeout``.

    Raises:
        ConnectTimeout: the handshake did not complete in time. BrokenError, ClosedError: as
            ``MuxDriver.open_stream``; whatever ``on_connect`` raised.
    """
    deadline = deadline_after(timeout)
    stream = driver.open_stream()
    con = channel_connection(stream, Role.INITIATOR, name, protocol, callback, runtime, **limits)
    clt = Clt(con, tracked=False)  # closed at exit through its driver: see ChannelsAtExit
    try:
        att = con.open(stream, deadline)  # type: ignore[arg-type]
    except TimeoutError as e:
        if isinstance(e, ConnectTimeout):
            raise
        raise ConnectTimeout(f"{con.con_id}: channel handshake did not complete within {timeout}s") from e
    stream.attachment = att
    ChannelsAtExit.of(driver)
    con.publish(att)
    con.log.info("mux.channel_opened", stream=stream.stream_id)
    return clt
