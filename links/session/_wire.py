"""The session wire format: six frame kinds inside a 4-byte big-endian length prefix.

Every frame is ``length (u32, counts what follows) | kind (u8) | fields``::

    HELLO    0x01  version u8 | key 16 bytes (zeros: new session) | last_received u64
    WELCOME  0x02  resumed u8 | key 16 bytes | last_received u64
    REJECT   0x03  reason u8 | text (UTF-8)
    DATA     0x04  seq u64 | ack u64 | payload (the application's serialized message)
    ACK      0x05  ack u64
    BYE      0x06  last_received u64

BYE ends a session on purpose (a local ``close()``): the peer, on reading it, ends the session
too and answers with its own BYE, the acknowledgment; either BYE acknowledges every frame its
sender received. After a BYE its sender sends nothing more on that session. A session whose
connection is cut without a BYE waits, detached, for its client to resume.

Sequence numbers start at 1 in each direction; 0 means "nothing yet". ``ack`` and
``last_received`` are cumulative: "I have every frame up to and including this one". A frame
of the wrong size for its kind, or of an unknown kind, raises ``DecodeError``; the engine then
closes that connection (the session itself survives and can resume on a new one).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from .._core._framer import LengthPrefixFramer
from .._errors import DecodeError

__all__ = [
    "VERSION", "KEY_SIZE", "NO_KEY", "FRAMER", "HELLO_FRAMER", "DATA_OVERHEAD", "data_framer", "Hello", "Welcome", "Reject", "Data", "Ack", "Bye",
    "RejectReason", "decode", "encode_hello", "encode_welcome", "encode_reject", "encode_data", "encode_ack", "encode_bye",
]  # fmt: skip

VERSION = 1
KEY_SIZE = 16
NO_KEY = bytes(KEY_SIZE)

#: Session frames are length-prefixed (u32 big endian, the prefix not counted). This one is
#: the widest a session frame may be; a connection reads with ``data_framer``'s tighter limit.
FRAMER = LengthPrefixFramer(header_size=4, byteorder="big", max_frame_size=16 << 20)

_HELLO, _WELCOME, _REJECT, _DATA, _ACK, _BYE = 1, 2, 3, 4, 5, 6
_HELLO_S = struct.Struct("!IBB16sQ")
_WELCOME_S = struct.Struct("!IBB16sQ")
_REJECT_S = struct.Struct("!IBB")
_DATA_S = struct.Struct("!IBQQ")
_ACK_S = struct.Struct("!IBQ")
_LEN = 4

#: A HELLO is read with a limit fit for a HELLO (it has one size): a peer that declares more
#: is refused on its header, for a few hundred bytes of server memory.
HELLO_FRAMER = LengthPrefixFramer(header_size=4, byteorder="big", max_frame_size=_HELLO_S.size)
#: What a DATA frame adds to the application's payload.
DATA_OVERHEAD = _DATA_S.size


def data_framer(max_payload: int) -> LengthPrefixFramer:
    """The framer of a session connection whose application allows ``max_payload``-byte
    messages: its frames are bounded by that plus the DATA header, not by ``FRAMER``'s 16 MiB."""
    return _data_framers.get(max_payload) or _data_framers.setdefault(
        max_payload, LengthPrefixFramer(header_size=4, byteorder="big", max_frame_size=DATA_OVERHEAD + max_payload)
    )


_data_framers: dict[int, LengthPrefixFramer] = {}


class RejectReason:
    """Why a server refused a HELLO (the byte on the wire)."""

    UNKNOWN_KEY = 1  # no such session: never existed, or expired and forgotten
    BAD_HELLO = 2  # a version we do not speak, or a malformed handshake
    BUSY = 3  # the server holds max_sessions sessions, every one of them attached
    NAMES = {1: "unknown_key", 2: "bad_hello", 3: "busy"}


@dataclass(frozen=True, slots=True)
class Hello:
    version: int
    key: bytes
    last_received: int


@dataclass(frozen=True, slots=True)
class Welcome:
    resumed: bool
    key: bytes
    last_received: int


@dataclass(frozen=True, slots=True)
class Reject:
    reason: int
    text: str


@dataclass(frozen=True, slots=True)
class Data:
    seq: int
    ack: int
    payload: memoryview | bytes


@dataclass(frozen=True, slots=True)
class Ack:
    ack: int


@dataclass(frozen=True, slots=True)
class Bye:
    last_received: int


def encode_hello(key: bytes, last_received: int) -> bytes:
    return _HELLO_S.pack(_HELLO_S.size - _LEN, _HELLO, VERSION, key, last_received)


def encode_welcome(resumed: bool, key: bytes, last_received: int) -> bytes:
    return _WELCOME_S.pack(_WELCOME_S.size - _LEN, _WELCOME, int(resumed), key, last_received)


def encode_reject(reason: int, text: str) -> bytes:
    body = text.encode()
    return _REJECT_S.pack(_REJECT_S.size - _LEN + len(body), _REJECT, reason) + body


def encode_data(seq: int, ack: int, payload: bytes | bytearray | memoryview) -> bytes:
    return _DATA_S.pack(_DATA_S.size - _LEN + len(payload), _DATA, seq, ack) + payload


def encode_ack(ack: int) -> bytes:
    return _ACK_S.pack(_ACK_S.size - _LEN, _ACK, ack)


def encode_bye(last_received: int) -> bytes:
    return _ACK_S.pack(_ACK_S.size - _LEN, _BYE, last_received)  # the same layout as ACK


def decode(frame: memoryview) -> Hello | Welcome | Reject | Data | Ack | Bye:
    """Parse one whole frame (length prefix included).

    Raises:
        DecodeError: unknown kind, or a size that does not fit the kind.
    """
    if len(frame) < _LEN + 1:
        raise DecodeError("session frame too short")
    kind = frame[_LEN]
    size = len(frame)
    try:
        if kind == _DATA and size >= _DATA_S.size:
            _, _, seq, ack = _DATA_S.unpack_from(frame)
            return Data(seq, ack, frame[_DATA_S.size :])
        if kind == _ACK and size == _ACK_S.size:
            return Ack(_ACK_S.unpack_from(frame)[2])
        if kind == _BYE and size == _ACK_S.size:
            return Bye(_ACK_S.unpack_from(frame)[2])
        if kind == _HELLO and size == _HELLO_S.size:
            _, _, version, key, last = _HELLO_S.unpack_from(frame)
            return Hello(version, key, last)
        if kind == _WELCOME and size == _WELCOME_S.size:
            _, _, resumed, key, last = _WELCOME_S.unpack_from(frame)
            return Welcome(bool(resumed), key, last)
        if kind == _REJECT and size >= _REJECT_S.size:
            reason = _REJECT_S.unpack_from(frame)[2]
            return Reject(reason, bytes(frame[_REJECT_S.size :]).decode(errors="replace"))
    except struct.error as e:  # pragma: no cover - sizes are checked above
        raise DecodeError(f"malformed session frame: {e}") from e
    raise DecodeError(f"session frame kind {kind} with {size} bytes is not valid")
