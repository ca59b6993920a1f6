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
    """Turns messages into payloads and back: subclass it and override both methods.

    ``Messenger[SendT, RecvT]`` names the types sent and received; without parameters both are
    ``Any``. A messenger never sees framing: the framer adds and strips it.
    """

    def serialize(self, msg: SendT) -> Buffer:
        """Turn ``msg`` into the payload of one frame.

        Returns:
            The payload (bytes, bytearray or memoryview).

        Raises:
            Any error for a message it cannot encode (``TypeError``, ``ValueError``, ...): the
            send raises it, after ``Protocol.on_error``; ``NotImplementedError`` in the base class.
        """
        raise NotImplementedError

    def deserialize(self, payload: Buffer) -> RecvT:
        """Turn one frame's ``payload`` into a message. ``payload`` is valid only during the
        call: copy what you keep.

        Returns:
            The message.

        Raises:
            DecodeError: the bytes are not a valid message (the engine then closes that
                connection, logged ``frame.decode_failed``); ``NotImplementedError`` in the base class.
        """
        raise NotImplementedError


class RawMessenger(Messenger[bytes, bytes]):
    """Messages are the payload bytes themselves."""

    def serialize(self, msg: bytes) -> Buffer:
        """The payload is ``msg`` itself.

        Raises:
            TypeError: ``msg`` is not bytes, bytearray or memoryview.
        """
        if not isinstance(msg, Buffer):  # the union, not a tuple built per call: 25 ns a send
            raise TypeError(f"RawMessenger sends bytes, not {type(msg).__name__}")
        return msg

    def deserialize(self, payload: Buffer) -> bytes:
        """A copy of ``payload`` as ``bytes``. Never raises."""
        return bytes(payload)

    def deserialize_many(self, payloads: list[Buffer]) -> list[bytes]:
        """``deserialize`` for a whole read at once: a list of ``bytes``, one per payload. Never raises."""
        return list(map(bytes, payloads))

    def __repr__(self) -> str:
        return "RawMessenger()"


class JsonMessenger(Messenger[Any, Any]):
    """Messages are JSON values (dicts, lists, strings, numbers), UTF-8 on the wire."""

    def __init__(self) -> None:
        self._encoder = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False)
        self._decoder = json.JSONDecoder()

    def serialize(self, msg: Any) -> Buffer:
        """``msg`` as compact JSON, UTF-8 encoded.

        Raises:
            TypeError: ``msg`` holds something JSON cannot represent; ValueError: a circular reference.
        """
        return self._encoder.encode(msg).encode()

    def deserialize(self, payload: Buffer) -> Any:
        """The JSON value in ``payload`` (a dict, list, str, number, bool or None).

        Raises:
            DecodeError: the payload is not UTF-8 JSON.
        """
        try:
            return self._decoder.decode(bytes(payload).decode())
        except (UnicodeDecodeError, ValueError) as e:
            raise DecodeError(f"not a JSON document: {e}") from e

    def __repr__(self) -> str:
        return "JsonMessenger()"
