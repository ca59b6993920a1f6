"""The msgpack-rpc envelopes, as the specification defines them (Sans-I/O).

Three kinds of message, each one msgpack array:

* request ``[0, msgid, method, params]``: ``msgid`` a u32 chosen by the caller, ``method`` a
  string, ``params`` an array (positional arguments);
* response ``[1, msgid, error, result]``: ``error`` nil on success (then ``result`` is the
  value), anything else on failure (links sends one string, ``"TypeName: message"``);
* notification ``[2, method, params]``: no reply is ever sent.

``decode`` checks a decoded value's shape and returns a typed envelope or raises
``BadEnvelope``; the runtime's own receive path (``links.rpc._protocol``) inlines the common
case of it. The ``encode_*`` functions return the packed bytes, so an argument msgpack cannot
encode fails in the caller's thread, before any id is taken.

``Undecodable`` stands for a payload that was framed correctly but could not be decoded within
the limits (bad UTF-8, a string or container over its limit, nesting too deep): the messenger
hands it up in place of the message, so the connection can stay.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import msgpack  # type: ignore[import-untyped]  # no stubs: msgpack is Any to mypy

from ._errors import BadEnvelope

__all__ = [
    "REQUEST", "RESPONSE", "NOTIFICATION", "MAX_MSGID", "Request", "Response", "Notification", "Undecodable",
    "decode", "encode_request", "encode_response", "encode_notification", "error_value", "error_text",
]  # fmt: skip

REQUEST, RESPONSE, NOTIFICATION = 0, 1, 2
#: msgids are u32 on the wire (the specification's "32-bit unsigned integer").
MAX_MSGID = 2**32 - 1

_packb = msgpack.packb


class Request(NamedTuple):
    """``[0, msgid, method, params]``: call ``method(*params)`` and answer with ``msgid``."""

    msgid: int
    method: str
    params: list[Any]


class Response(NamedTuple):
    """``[1, msgid, error, result]``: the answer to the request ``msgid``."""

    msgid: int
    error: Any
    result: Any


class Notification(NamedTuple):
    """``[2, method, params]``: call ``method(*params)``; no answer."""

    method: str
    params: list[Any]


class Undecodable:
    """A well-framed payload that could not be decoded (``reason`` says why)."""

    __slots__ = ("reason",)

    def __init__(self, reason: str) -> None:
        self.reason = reason

    def __repr__(self) -> str:
        return f"Undecodable({self.reason!r})"


def _msgid(value: Any) -> int:
    if type(value) is not int or not 0 <= value <= MAX_MSGID:
        raise BadEnvelope(f"msgid must be a u32, not {_short(value)}")
    return value


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _call(method: Any, params: Any) -> tuple[str, list[Any]]:
    """A request's or notification's method and params, checked. A method name sent as
    binary (msgpack's old raw type, as some implementations still write it) is taken as
    UTF-8."""
    if isinstance(method, bytes):
        try:
            method = method.decode()
        except UnicodeDecodeError:
            raise BadEnvelope(f"method is not UTF-8: {_short(method)}") from None
    if not isinstance(method, str):
        raise BadEnvelope(f"method must be a string, not {_short(method)}")
    if type(params) not in (list, tuple):
        raise BadEnvelope(f"params must be an array, not {_short(params)}")
    return method, list(params)


def decode(obj: Any) -> Request | Response | Notification:
    """The envelope ``obj`` (a decoded msgpack value) is.

    Raises:
        BadEnvelope: not an array of a known kind and length, or a field of the wrong type
            (msgid not a u32, method not a string, params not an array).
    """
    if type(obj) not in (list, tuple) or not obj:
        raise BadEnvelope(f"a msgpack-rpc message is a non-empty array, not {_short(obj)}")
    kind, n = obj[0], len(obj)
    if type(kind) is int and kind == REQUEST and n == 4:
        return Request(_msgid(obj[1]), *_call(obj[2], obj[3]))
    if type(kind) is int and kind == RESPONSE and n == 4:
        return Response(_msgid(obj[1]), obj[2], obj[3])
    if type(kind) is int and kind == NOTIFICATION and n == 3:
        return Notification(*_call(obj[1], obj[2]))
    raise BadEnvelope(f"not a msgpack-rpc message (kind {_short(kind)}, {n} fields)")


def encode_request(msgid: int, method: str, params: Any) -> bytes:
    """A request, packed.

    Raises:
        TypeError: an argument msgpack cannot encode; ValueError: one too large for it.
    """
    data: bytes = _packb([REQUEST, msgid, method, params])
    return data


def encode_response(msgid: int, error: Any, result: Any) -> bytes:
    """A response, packed (``error`` None for success).

    Raises:
        TypeError: a result msgpack cannot encode; ValueError: one too large for it.
    """
    data: bytes = _packb([RESPONSE, msgid, error, result])
    return data


def encode_notification(method: str, params: Any) -> bytes:
    """A notification, packed.

    Raises:
        TypeError: an argument msgpack cannot encode; ValueError: one too large for it.
    """
    data: bytes = _packb([NOTIFICATION, method, params])
    return data


def error_value(error: BaseException) -> str:
    """The error field links sends for an exception a handler raised: one string,
    ``"TypeName: message"`` (the form common msgpack-rpc clients read, Go's among them)."""
    return error_text(type(error).__name__, str(error))


def error_text(type_name: str, message: str) -> str:
    """An error field of links' own: ``"TypeName: message"``."""
    return f"{type_name}: {message}"
