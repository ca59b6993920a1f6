"""SoupBinTCP 4.0 packets: one frozen dataclass per packet type, and their wire encoding.

A packet on the wire is ``length (2 bytes, big endian) + type (1 byte) + body``; the length
counts the type byte and the body. The length belongs to the framer
(``links.LengthPrefixFramer(header_size=2)``); this module encodes and decodes the rest,
``type + body``, and nothing else: no sockets, no clocks, no state.

Field encodings (from the specification):

* alpha: ASCII, space-padded to the field width. We write them left-justified, as the
  specification says, or right-justified for peers that expect that (``justify="right"``).
  We read them with spaces stripped on *both* sides, because peers differ.
* numeric: ASCII digits right-justified with leading spaces. We also read leading zeros and
  trailing spaces; anything else (a sign, a letter, an empty field) is malformed.

Every problem with bytes that came from a peer is a ``links.DecodeError`` with a message
that says what was wrong, so the core logs it (``frame.decode_failed``) and closes that one
connection. Problems with a packet *we* were asked to send (a username longer than six
characters, a negative sequence number) are the caller's bug: ``ValueError``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

from .._core._messenger import Messenger
from .._errors import DecodeError

__all__ = [
    "CLIENT_PACKETS",
    "NOT_AUTHORIZED",
    "SERVER_PACKETS",
    "SESSION_NOT_AVAILABLE",
    "ClientHeartbeat",
    "Debug",
    "EndOfSession",
    "LoginAccepted",
    "LoginRejected",
    "LoginRequest",
    "LogoutRequest",
    "Packet",
    "SequencedData",
    "ServerHeartbeat",
    "UnsequencedData",
    "decode_packet",
    "encode_packet",
]  # fmt: skip

#: Login Rejected reasons.
NOT_AUTHORIZED = "A"
SESSION_NOT_AVAILABLE = "S"

# Field widths.
USERNAME, PASSWORD, SESSION, SEQUENCE = 6, 10, 10, 20
_MAX_SEQUENCE = 10**SEQUENCE - 1


# -- the packets ------------------------------------------------------------------------------
# ``packet_type`` is a class attribute, not a field: it is what the class *is*.


@dataclass(frozen=True, slots=True)
class Debug:
    """``+`` (both directions): free text, for humans."""

    text: str = ""
    packet_type: ClassVar[bytes] = b"+"


@dataclass(frozen=True, slots=True)
class LoginAccepted:
    """``A`` (server to client): the session joined and the number of the next Sequenced Data."""

    session: str
    sequence: int
    packet_type: ClassVar[bytes] = b"A"


@dataclass(frozen=True, slots=True)
class LoginRejected:
    """``J`` (server to client): ``reason`` is ``"A"`` (not authorized) or ``"S"`` (session not available)."""

    reason: str
    packet_type: ClassVar[bytes] = b"J"


@dataclass(frozen=True, slots=True)
class SequencedData:
    """``S`` (server to client): one message of the session's numbered stream.

    ``payload`` is bytes, or an application object when a payload messenger is configured.
    ``sequence`` is *not* on the wire (the number is implicit: one more than the previous
    one). The server fills it in when it numbers the message and the client when it receives
    it, so both sides can see it; it takes no part in equality, so
    ``SequencedData(b"x") == SequencedData(b"x", sequence=7)``.
    """

    payload: Any
    sequence: int | None = field(default=None, compare=False)
    packet_type: ClassVar[bytes] = b"S"


@dataclass(frozen=True, slots=True)
class ServerHeartbeat:
    """``H`` (server to client): sent when the server had nothing else to send for an interval."""

    packet_type: ClassVar[bytes] = b"H"


@dataclass(frozen=True, slots=True)
class EndOfSession:
    """``Z`` (server to client): the server ends the session; the client disconnects."""

    packet_type: ClassVar[bytes] = b"Z"


@dataclass(frozen=True, slots=True)
class LoginRequest:
    """``L`` (client to server). ``session`` blank means the current one; ``sequence`` 0 means
    "from the current end of the stream" (no replay)."""

    username: str
    password: str
    session: str = ""
    sequence: int = 0
    packet_type: ClassVar[bytes] = b"L"

    def __repr__(self) -> str:  # never print a password into a log
        return f"LoginRequest(username={self.username!r}, password='***', session={self.session!r}, sequence={self.sequence})"


@dataclass(frozen=True, slots=True)
class UnsequencedData:
    """``U`` (client to server): one application message, not numbered."""

    payload: Any
    packet_type: ClassVar[bytes] = b"U"


@dataclass(frozen=True, slots=True)
class ClientHeartbeat:
    """``R`` (client to server): sent when the client had nothing else to send for an interval."""

    packet_type: ClassVar[bytes] = b"R"


@dataclass(frozen=True, slots=True)
class LogoutRequest:
    """``O`` (client to server): the client ends the session; the server disconnects."""

    packet_type: ClassVar[bytes] = b"O"


Packet = (
    Debug | LoginAccepted | LoginRejected | SequencedData | ServerHeartbeat | EndOfSession
    | LoginRequest | UnsequencedData | ClientHeartbeat | LogoutRequest
)  # fmt: skip

SERVER_PACKETS: tuple[type, ...] = (Debug, LoginAccepted, LoginRejected, SequencedData, ServerHeartbeat, EndOfSession)
CLIENT_PACKETS: tuple[type, ...] = (Debug, LoginRequest, UnsequencedData, ClientHeartbeat, LogoutRequest)
_BY_TYPE: dict[int, type] = {cls.packet_type[0]: cls for cls in SERVER_PACKETS + CLIENT_PACKETS}

# Packets without a body are all alike: decode to one shared instance each.
SERVER_HEARTBEAT, END_OF_SESSION = ServerHeartbeat(), EndOfSession()
CLIENT_HEARTBEAT, LOGOUT_REQUEST = ClientHeartbeat(), LogoutRequest()
_EMPTY: dict[int, Packet] = {0x48: SERVER_HEARTBEAT, 0x5A: END_OF_SESSION, 0x52: CLIENT_HEARTBEAT, 0x4F: LOGOUT_REQUEST}


# -- encoding ---------------------------------------------------------------------------------


def _alpha(value: str, width: int, name: str, justify: str) -> bytes:
    try:
        raw = value.encode("ascii")
    except UnicodeEncodeError:
        raise ValueError(f"{name} must be ASCII, got {value!r}") from None
    if len(raw) > width:
        raise ValueError(f"{name} is at most {width} characters, got {value!r}")
    return raw.ljust(width) if justify == "left" else raw.rjust(width)


def _numeric(value: int, name: str) -> bytes:
    if not 0 <= value <= _MAX_SEQUENCE:
        raise ValueError(f"{name} must be 0..{_MAX_SEQUENCE}, got {value!r}")
    return str(value).encode().rjust(SEQUENCE)


def _data(payload: Any, payload_messenger: Messenger | None) -> bytes:
    if payload_messenger is not None:
        payload = payload_messenger.serialize(payload)
    elif not isinstance(payload, (bytes, bytearray, memoryview)):
        raise TypeError(f"payload must be bytes (or configure a payload_messenger), not {type(payload).__name__}")
    return bytes(payload)


def encode_packet(packet: Packet, *, payload_messenger: Messenger | None = None, justify: str = "left") -> bytes:
    """``type + body`` of one packet (the framer adds the length).

    Args:
        payload_messenger: serializes the ``payload`` of data packets (default: it is bytes).
        justify: ``"left"`` (the specification) or ``"right"`` for alpha fields.

    Raises:
        ValueError: a field does not fit its wire format.
        TypeError: not a packet, or a data payload that is not bytes without a messenger.
    """
    cls = type(packet)
    if cls is SequencedData or cls is UnsequencedData:
        return cls.packet_type + _data(packet.payload, payload_messenger)
    if cls is LoginRequest:
        return b"".join((
            b"L",
            _alpha(packet.username, USERNAME, "username", justify),
            _alpha(packet.password, PASSWORD, "password", justify),
            _alpha(packet.session, SESSION, "session", justify),
            _numeric(packet.sequence, "sequence"),
        ))  # fmt: skip
    if cls is LoginAccepted:
        return b"A" + _alpha(packet.session, SESSION, "session", justify) + _numeric(packet.sequence, "sequence")
    if cls is LoginRejected:
        if len(packet.reason) != 1:
            raise ValueError(f"reason is one character, got {packet.reason!r}")
        return b"J" + _alpha(packet.reason, 1, "reason", justify)
    if cls is Debug:
        return b"+" + packet.text.encode("ascii")
    if cls in (ServerHeartbeat, EndOfSession, ClientHeartbeat, LogoutRequest):
        return cls.packet_type
    raise TypeError(f"not a SoupBinTCP packet: {packet!r}")


# -- decoding ---------------------------------------------------------------------------------


def _read_alpha(body: bytes, name: str) -> str:
    try:
        return body.decode("ascii").strip(" ")
    except UnicodeDecodeError:
        raise DecodeError(f"{name} field is not ASCII: {body!r}") from None


def _read_numeric(body: bytes, name: str) -> int:
    digits = body.strip(b" ")
    if not digits.isdigit():  # bytes.isdigit() is ASCII-only: no signs, no "1_000", no blanks
        raise DecodeError(f"{name} field is not a number: {body!r}")
    return int(digits)


def is_packet_type(kind: int) -> bool:
    """Whether ``kind`` is one of the ten SoupBinTCP type bytes."""
    return kind in _BY_TYPE


def packet_name(kind: int) -> str:
    """``"'S' (SequencedData)"`` for a type byte, for error messages."""
    cls = _BY_TYPE.get(kind)
    shown = repr(chr(kind)) if 32 <= kind < 127 else f"0x{kind:02x}"
    return f"{shown} ({cls.__name__})" if cls else shown


def _expect_length(body: memoryview, size: int, kind: int) -> None:
    if len(body) != size:
        raise DecodeError(f"packet {packet_name(kind)} must carry {size} bytes after its type, got {len(body)}")


def decode_packet(frame: bytes | bytearray | memoryview, *, payload_messenger: Messenger | None = None) -> Packet:
    """The packet in ``frame`` (``type + body``, the length already removed).

    Sequenced Data comes back with ``sequence=None``: numbering is the receiving side's job
    (see ``SoupBinTcpMessenger``).

    Raises:
        DecodeError: empty frame, unknown type, a length that disagrees with the type, or a
            malformed field.
    """
    view = memoryview(frame)
    if not view:
        raise DecodeError("empty packet: no type byte")
    kind = view[0]
    body = view[1:]
    if kind == 0x53 or kind == 0x55:  # S, U: the hot path
        payload = bytes(body) if payload_messenger is None else payload_messenger.deserialize(body)
        return SequencedData(payload) if kind == 0x53 else UnsequencedData(payload)
    if kind == 0x4C:  # L
        _expect_length(body, USERNAME + PASSWORD + SESSION + SEQUENCE, kind)
        raw = body.tobytes()
        return LoginRequest(
            _read_alpha(raw[:6], "username"),
            _read_alpha(raw[6:16], "password"),
            _read_alpha(raw[16:26], "session"),
            _read_numeric(raw[26:], "sequence"),
        )
    if kind == 0x41:  # A
        _expect_length(body, SESSION + SEQUENCE, kind)
        raw = body.tobytes()
        return LoginAccepted(_read_alpha(raw[:10], "session"), _read_numeric(raw[10:], "sequence"))
    if kind == 0x4A:  # J
        _expect_length(body, 1, kind)
        return LoginRejected(_read_alpha(body.tobytes(), "reason"))
    if kind == 0x2B:  # +
        return Debug(body.tobytes().decode("ascii", errors="replace"))
    empty = _EMPTY.get(kind)
    if empty is not None:
        _expect_length(body, 0, kind)
        return empty
    raise DecodeError(f"unknown packet type {packet_name(kind)}")
