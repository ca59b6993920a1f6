"""The errors of ``links.rpc``, placed in links' one tree by who is to blame.

* ``RemoteError``: the peer ran the call and it failed there (its handler raised, or the
  method does not exist). The connection is fine; ``type`` and ``message`` say what failed.
* ``CallTimeout`` (also a ``TimeoutError``): no reply within the call's timeout. Its id is
  retired, so a reply that comes later is dropped, never handed to another call.
* ``CallIndeterminate`` (a ``links.BrokenError``): the connection was cut while the call was
  pending and ``reconnect=`` alone (no session) carries on: the request may or may not have
  run, and TCP cannot tell which. Code that handles a broken connection handles it too.
* ``InFlightLimit``: ``max_in_flight`` calls are pending and the call was told not to wait
  (``timeout=0``).
* ``BadEnvelope`` (a ``links.ProtocolError``): a well-framed msgpack value that is not a
  msgpack-rpc message. Logged (``rpc.bad_envelope``); the connection stays, because the
  stream itself is still in step.

A connection that ends fails every pending call with ``links.ClosedError`` (closed by this
side) or ``links.BrokenError`` (by the peer or the network), as every other links call.
"""

from __future__ import annotations

from typing import Any

from .._errors import BrokenError, LinksError, ProtocolError

__all__ = ["RpcError", "RemoteError", "CallTimeout", "CallIndeterminate", "InFlightLimit", "BadEnvelope"]


class RpcError(LinksError):
    """Base of the errors of a call that ``links.rpc`` raises (besides connection errors)."""


class RemoteError(RpcError):
    """The peer answered the call with an error.

    Attributes:
        type: the name of the exception the handler raised (``"ValueError"``,
            ``"NoSuchMethod"``), or ``""`` when the peer sent an error of another shape.
        message: what it said.
        error: the error object exactly as it came off the wire.
    """

    def __init__(self, type: str, message: str, error: Any = None) -> None:  # noqa: A002 - the documented name
        super().__init__(f"{type}: {message}" if type else message)
        self.type = type
        self.message = message
        self.error = error

    @classmethod
    def from_wire(cls, error: Any) -> RemoteError:
        """The ``RemoteError`` for a response's error field: links' ``"TypeName: message"``
        (split back when the part before ``": "`` is a dotted identifier), a ``[type, message]``
        pair, or anything else another implementation sends (a plain string, a map, ...)."""
        if isinstance(error, str):
            name, sep, message = error.partition(": ")
            if sep and all(part.isidentifier() for part in name.split(".")):
                return cls(name, message, error)
            return cls("", error, error)
        if type(error) is list and len(error) == 2 and isinstance(error[0], str) and isinstance(error[1], str):
            return cls(error[0], error[1], error)
        return cls("", repr(error), error)


class CallTimeout(RpcError, TimeoutError):
    """No reply came within the call's timeout (or no room among ``max_in_flight`` calls opened
    in time). The call's id is retired: a late reply is dropped and logged at debug."""


class CallIndeterminate(BrokenError):
    """The connection was cut with this call pending, and a reconnect (without a session) follows:
    the request may or may not have reached the peer and run. Retry only what is safe to repeat."""

    def __init__(self, message: str) -> None:
        super().__init__(message, "indeterminate")


class InFlightLimit(RpcError):
    """``max_in_flight`` calls are pending and this one was told not to wait (``timeout=0``)."""


class BadEnvelope(ProtocolError):
    """A msgpack value that is not a msgpack-rpc message (wrong type, length or field types)."""
