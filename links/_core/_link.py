"""``Link``: the Sans-I/O engine of one connection. Bytes in, messages out; message in, bytes out.

The drivers own the socket and the threads; the ``Link`` owns
what does not depend on either: the receive buffer, the framer and messenger, and the
``on_send`` stamping. With a resumable session (``links.session``) the session's framing
replaces the protocol's framer: every frame goes through the session, which numbers what is
sent and drops what was already received, and only application payloads reach the messenger.
It can be driven by a test with plain bytes and no socket at all::

    link = Link(MyProtocol())
    link.receive_data(b"...")
    while (msg := link.next_message()) is not NEED_DATA:
        ...
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from .._errors import DecodeError, ProtocolError
from ._buffer import ReceiveBuffer
from ._protocol import Protocol, overrides
from ._status import NEED_DATA

__all__ = ["Link"]


class Link:
    """Framing and (de)serialization for one connection.

    Raises from ``next_message``:
        FrameTooLarge: the peer declared or sent a frame over ``max_frame_size``.
        DecodeError: a whole frame could not be deserialized.
    """

    __slots__ = (
        "protocol", "framer", "messenger", "buffer", "session", "stamps", "_frame", "_serialize", "_next_frame",
        "_payload", "_deserialize",
    )  # fmt: skip

    def __init__(self, protocol: Protocol, *, read_size: int = 1 << 12, session: Any = None) -> None:
        self.protocol = protocol
        self.session = session
        # A session frames the stream itself and carries the messenger's payloads inside.
        self.framer = protocol.framer if session is None else session.framer
        self.messenger = protocol.messenger
        self.buffer = ReceiveBuffer(read_size=read_size)
        self.stamps = overrides(protocol, "on_send")  # False: stamp() can be skipped
        # Bound once: the per-frame paths below are the hottest code in the library, and each
        # attribute lookup saved there is saved per message (benchmarks/RESULTS.md).
        self._frame = self.framer.encode
        self._serialize = self.messenger.serialize
        self._next_frame = self.buffer.next_frame
        self._payload = self.framer.payload
        self._deserialize = self.messenger.deserialize

    # -- receive --------------------------------------------------------------------------

    def receive_data(self, data: bytes | bytearray | memoryview) -> None:
        """Add received bytes (copying them)."""
        self.buffer.feed(data)

    def next_message(self) -> Any:
        """The next whole message, or ``NEED_DATA``."""
        session, framer = self.session, self.framer
        while True:
            frame = self._next_frame(framer)
            if frame is None:
                return NEED_DATA
            if session is None:
                payload = self._payload(frame)
                break
            payload = session.receive(frame)
            if payload is not None:
                break  # else: a control frame or a duplicate, consumed by the session
        try:
            return self._deserialize(payload)
        except ProtocolError:
            raise
        except Exception as e:  # a user messenger may raise anything on hostile bytes
            raise DecodeError(f"{type(self.messenger).__name__} failed: {e!r}") from e

    # -- send -----------------------------------------------------------------------------

    def stamp(self, msg: Any) -> Any:
        """Run ``on_send``; return the message that will really be sent."""
        if self.stamps:
            replaced = self.protocol.on_send(msg)
            if replaced is not None:
                return replaced
        return msg

    def encode(self, msg: Any) -> bytes:
        """The whole frame for an already stamped message (numbered, with a session)."""
        if self.session is not None:
            return self.session.wrap(self._serialize(msg))
        return self._frame(self._serialize(msg))

    def encode_many(self, msgs: Iterable[Any]) -> tuple[list[Any], bytes]:
        """Stamp and encode a batch into one buffer (one write for all of them)."""
        stamped = [self.stamp(m) for m in msgs]
        encode = self.encode
        return stamped, b"".join([encode(m) for m in stamped])
