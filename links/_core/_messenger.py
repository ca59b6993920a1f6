"""Messengers: turn a message into a payload and a payload back into a message.

A messenger never sees framing: the framer adds and strips it. ``deserialize`` receives a
``memoryview`` that is only valid during the call, so it must copy what it keeps. Bad bytes
raise ``DecodeError``; the engine then closes that one connection with a logged reason.

A messenger whose messages do not depend on what was dispatched before them (it keeps no
state) may also have the batch form ``deserialize_many(payloads) -> list``: the engine then
decodes a whole read at once before dispatching any of it, which saves a method call per
message. If it raises, the engine decodes that batch again one payload at a time to find the
bad one. ``RawMessenger`` has it; a messenger without it is called once per message, in step
with dispatch (the SoupBinTCP messenger, for one, accepts different packets after login).
"""

from __future__ import annotations

import json
from typing import Any, Generic

from .._errors import DecodeError
from ._typevars import RecvT, SendT

__all__ = ["Messenger", "RawMessenger", "JsonMessenger"]

Buffer = bytes | bytearray | memoryview


class Messenger(Generic[SendT, RecvT]):
    """Base class and contract. Subclass and override both methods."""

    def serialize(self, msg: SendT) -> Buffer:
        raise NotImplementedError

    def deserialize(self, payload: Buffer) -> RecvT:
        raise NotImplementedError


class RawMessenger(Messenger[bytes, bytes]):
    """Messages are the payload bytes themselves."""

    def serialize(self, msg: bytes) -> Buffer:
        if not isinstance(msg, Buffer):  # the union, not a tuple built per call: 25 ns a send
            raise TypeError(f"RawMessenger sends bytes, not {type(msg).__name__}")
        return msg

    def deserialize(self, payload: Buffer) -> bytes:
        return bytes(payload)

    def deserialize_many(self, payloads: list[Buffer]) -> list[bytes]:
        return list(map(bytes, payloads))

    def __repr__(self) -> str:
        return "RawMessenger()"


class JsonMessenger(Messenger[Any, Any]):
    """Messages are JSON values (dicts, lists, strings, numbers), UTF-8 on the wire."""

    def __init__(self) -> None:
        self._encoder = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False)
        self._decoder = json.JSONDecoder()

    def serialize(self, msg: Any) -> Buffer:
        return self._encoder.encode(msg).encode()

    def deserialize(self, payload: Buffer) -> Any:
        try:
            return self._decoder.decode(bytes(payload).decode())
        except (UnicodeDecodeError, ValueError) as e:
            raise DecodeError(f"not a JSON document: {e}") from e

    def __repr__(self) -> str:
        return "JsonMessenger()"
