"""Channels as connections: a ``Clt`` over one stream (``links.mux._stream``).

Either side makes them the same way: a ``Connection`` (the engine every connection runs on)
whose attachment's transport is the stream, named ``name#stream id`` so its ``con_id`` names
the channel and, by its addresses, the TCP connection it travels on.
"""

from __future__ import annotations

from typing import Any

from .._callbacks import Callback, DevNullCallback
from .._clt import Clt, ProtocolFactory
from .._connection import Connection
from .._core._conid import Role
from .._liveness import first_message_check
from .._runtime import default_poll_handler, default_timer
from ._stream import StreamTransport

__all__ = ["channel_connection", "channel_over"]


def channel_connection(
    stream: StreamTransport, role: Role, name: str, protocol: ProtocolFactory, callback: Callback | None,
    runtime: dict[str, Any], **limits: Any,
) -> Connection:  # fmt: skip
    """The ``Connection`` of a channel over ``stream`` (not opened yet)."""
    timer = runtime.get("timer") or default_timer()
    poll = runtime.get("poll_handler")
    return Connection(
        role, f"{name}#{stream.stream_id}", protocol_factory=protocol,
        callback=DevNullCallback() if callback is None else callback, timer=timer,
        poll=(lambda: poll) if poll is not None else default_poll_handler, **limits,
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
        clt = Clt(con)
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
    stream.driver.accept(stream)
    con.publish(att)
    con.log.info("mux.channel_accepted", stream=stream.stream_id)
    return clt
