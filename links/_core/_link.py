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

or a whole read at a time, as the poll thread does (``next_messages``, below)::

    while msgs := link.next_messages():
        ...
"""

from __future__ import annotations

import weakref
from collections import deque
from collections.abc import Iterable
from functools import partial
from typing import TYPE_CHECKING, Any

from .._errors import DecodeError, FrameTooLarge, ProtocolError
from ._buffer import ReceiveBuffer
from ._framer import split_payloads
from ._protocol import Protocol, batch_form, overrides
from ._status import NEED_DATA

if TYPE_CHECKING:
    from collections.abc import Callable

    from ._framer import Buffer, Framer
    from ._messenger import Messenger

    #: Encode, serialize, payload, deserialize, payloads, deserialize_many (None: none).
    Codec = tuple[
        Callable[[Buffer], bytes], Callable[[Any], Buffer], Callable[[memoryview], Buffer], Callable[[Buffer], Any],
        Callable[[bytearray, int, int, list[Any]], int], Any,  # Callable[[list[Any]], Iterable[Any]] | None
    ]  # fmt: skip

__all__ = ["Link"]


class Link:
    """Framing and (de)serialization for one connection.

    Raises from ``next_message``:
        FrameTooLarge: the peer declared or sent a frame over ``max_frame_size``.
        DecodeError: a whole frame could not be deserialized.
    """

    __slots__ = (
        "protocol", "framer", "messenger", "buffer", "session", "stamps", "_frame", "_serialize",
        "_payload", "_deserialize", "_payloads", "_deserialize_many", "_queue", "batches", "_limit",
    )  # fmt: skip

    def __init__(self, protocol: Protocol, *, read_size: int = 1 << 12, session: Any = None) -> None:
        self.protocol = protocol
        self.session = session
        # A session frames the stream itself and carries the messenger's payloads inside.
        self.framer = protocol.framer if session is None else session.framer_for(protocol.framer)
        # With a session, the application's limit is checked here at send (its framer is not
        # used): a message over it is refused before it is numbered (``_payload_of``).
        self._limit = protocol.framer.max_frame_size
        self.messenger = protocol.messenger
        self.buffer = ReceiveBuffer(capacity=read_size, read_size=read_size)
        self.stamps = overrides(protocol, "on_send")  # False: stamp() can be skipped
        # Bound once: the per-frame paths below are the hottest code in the library, and each
        # attribute lookup saved there is saved per message (benchmarks/RESULTS.md).
        codec = _codec(protocol, self.framer, self.messenger) if session is None else _bind(self.framer, self.messenger)
        self._frame, self._serialize, self._payload, self._deserialize, self._payloads, self._deserialize_many = codec
        #: Whether ``next_messages`` gives a whole read at once (else one message per call).
        self.batches = session is None and self._deserialize_many is not None
        # Payloads cut but not yet deserialized, after a batch that failed to decode.
        self._queue: deque[Any] | tuple[()] = ()  # a deque once needed: most links never do

    # -- receive --------------------------------------------------------------------------

    def receive_data(self, data: bytes | bytearray | memoryview) -> None:
        """Add received bytes (copying them)."""
        self.buffer.feed(data)

    def next_message(self) -> Any:
        """The next whole message, or ``NEED_DATA``."""
        if self._queue:
            return self._dequeue()
        session, framer = self.session, self.framer
        while True:
            frame = self.buffer.next_frame(framer)
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
        except Exception as e:
            raise _decode_error(self.messenger, e)  # noqa: B904 (it sets its own cause)

    def next_messages(self) -> list[Any]:
        """The next messages, in order; empty when more bytes are needed.

        The receive path's batch form, for a driver that dispatches whatever it gets before
        asking again. With a messenger that has ``deserialize_many`` (its messages do not
        depend on what was dispatched before them; ``batches`` is then true) that is every
        message received so far, in one call per read. Otherwise, and with a session, it is
        one message, as ``next_message`` gives, because dispatching it may change how the next
        one decodes. Errors are raised in stream order: the messages before a bad frame come
        out first. After a batch that failed to decode, the rest of it comes one per call.
        """
        if self._queue:
            return [self._dequeue()]
        if not self.batches:
            msg = self.next_message()
            return [] if msg is NEED_DATA else [msg]
        payloads: list[Any] = []
        self.buffer.cut(self._payloads, self.framer, payloads)
        if not payloads:
            return payloads
        try:
            msgs = self._deserialize_many(payloads)
            return msgs if type(msgs) is list else list(msgs)  # an iterator is never "empty"
        except Exception:
            # One of them is bad: one at a time finds which, in its place. The messenger
            # promised no state (it has deserialize_many), so decoding again changes nothing.
            return self._requeue(payloads)

    def drained(self) -> bool:
        """Whether every received byte was handed out (so ``next_messages`` would return [])."""
        return not self._queue and not len(self.buffer)

    def _requeue(self, payloads: list[Any]) -> list[Any]:
        """Queue ``payloads`` (copied: their views die with the next read); return the first
        message in a list."""
        if not self._queue:
            self._queue = deque()
        self._queue.extend(map(bytes, payloads))
        return [self._dequeue()]

    def _dequeue(self) -> Any:
        try:
            return self._deserialize(self._queue.popleft())
        except Exception as e:
            raise _decode_error(self.messenger, e)  # noqa: B904 (it sets its own cause)

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
            return self.session.wrap(self._payload_of(msg))
        return self._frame(self._serialize(msg))

    def _payload_of(self, msg: Any) -> bytes:
        """A session's payload for ``msg``, checked against the application's limit.

        Raises:
            FrameTooLarge: over ``max_frame_size`` (nothing is numbered: the caller's error).
        """
        payload = self._serialize(msg)
        if len(payload) > self._limit:
            raise FrameTooLarge(len(payload), self._limit)
        return payload

    def encode_many(self, msgs: Iterable[Any]) -> tuple[list[Any], bytes]:
        """Stamp and encode a batch into one buffer (one write for all of them)."""
        stamp = self.stamp
        stamped = [stamp(m) for m in msgs] if self.stamps else list(msgs)
        # Link.encode spelled out per case: two method calls fewer per message (0.41 -> 0.29 us
        # for 100-byte raw messages in batches of 64).
        serialize = self._serialize
        if self.session is not None:
            # Every payload made (and checked) before the first is numbered: a batch that
            # fails half-way numbers nothing, so no gap is left for the peer to find.
            payloads = [self._payload_of(m) for m in stamped]
            wrap = self.session.wrap
            return stamped, b"".join([wrap(p) for p in payloads])
        frame = self._frame
        return stamped, b"".join([frame(serialize(m)) for m in stamped])


# Per protocol class whose framer and messenger are its own class attributes (the usual case,
# shared by all its instances): their bound methods, made once and shared by every link of it,
# not bound again per connection (eight bound methods cost 0.5 KB; an idle channel has ~2 KB).
_CODECS: weakref.WeakKeyDictionary[type, tuple[Codec, Any, Any]] = weakref.WeakKeyDictionary()


def _codec(protocol: Protocol, framer: Framer, messenger: Messenger[Any, Any]) -> Codec:
    """``_bind(framer, messenger)``, shared when both are ``protocol``'s class's own."""
    cls = type(protocol)
    known = _CODECS.get(cls)
    if known is not None and known[1] is framer and known[2] is messenger:
        return known[0]
    codec = _bind(framer, messenger)
    if getattr(cls, "framer", None) is framer and getattr(cls, "messenger", None) is messenger:
        _CODECS[cls] = (codec, framer, messenger)
    return codec


def _bind(framer: Framer, messenger: Messenger[Any, Any]) -> Codec:
    """What ``Link`` calls per frame: encode, serialize, payload, deserialize and the batch
    forms when the framer and messenger have them (see their modules)."""
    payloads = batch_form(framer, "payloads", "frame_length", "payload") or partial(split_payloads, framer)
    many = batch_form(messenger, "deserialize_many", "deserialize")
    return framer.encode, messenger.serialize, framer.payload, messenger.deserialize, payloads, many


def _decode_error(messenger: Any, error: Exception) -> ProtocolError:
    """A messenger's failure as the engine reports it (a user messenger may raise anything)."""
    if isinstance(error, ProtocolError):
        return error
    decode = DecodeError(f"{type(messenger).__name__} failed: {error!r}")
    decode.__cause__ = error
    return decode
