"""The yamux wire format (version 0), as its public specification defines it.

Every frame starts with a 12-byte header, big endian::

    version u8 (0) | type u8 | flags u16 | stream id u32 | length u32

Types: DATA (``length`` payload bytes follow), WINDOW_UPDATE (``length`` is a credit, in
bytes, added to the sender's window for that stream), PING (``length`` is an opaque value the
answer echoes; stream 0) and GO_AWAY (``length`` is a code: normal, protocol error, internal
error; stream 0). Flags: SYN opens a stream (on its first DATA or WINDOW_UPDATE), ACK accepts
one (and answers a PING), FIN half-closes one, RST aborts (or refuses) one. Stream ids are odd
from the client (the side that dialed), even from the server; 0 is the session itself. Every
stream starts with a 256 KiB window in each direction; only DATA payloads count against it.

``YamuxFramer`` cuts a byte stream into whole frames for the engine (``links.mux._engine``);
its bound on a DATA frame's length is what keeps a hostile length field from making us
buffer more than any window allows: such a header is handed on alone, and the engine
refuses it (GO_AWAY, then the connection ends) without a byte of its payload read.
"""

from __future__ import annotations

import struct

from .._errors import ProtocolError

__all__ = [
    "VERSION", "DATA", "WINDOW_UPDATE", "PING", "GO_AWAY", "SYN", "ACK", "FIN", "RST", "HEADER", "HEADER_SIZE",
    "INITIAL_WINDOW", "MAX_WINDOW", "GO_AWAY_NORMAL", "GO_AWAY_PROTOCOL_ERROR", "GO_AWAY_INTERNAL_ERROR",
    "MuxError", "YamuxFramer", "frame",
]  # fmt: skip

VERSION = 0
DATA, WINDOW_UPDATE, PING, GO_AWAY = 0, 1, 2, 3
SYN, ACK, FIN, RST = 0x1, 0x2, 0x4, 0x8
HEADER = struct.Struct(">BBHII")
HEADER_SIZE = HEADER.size  # 12
#: The window every stream starts with, in each direction (the specification's 256 KiB).
INITIAL_WINDOW = 256 * 1024
#: A window is a u32 on the wire (a WINDOW_UPDATE's credit); no window may grow past it.
MAX_WINDOW = 2**32 - 1
GO_AWAY_NORMAL, GO_AWAY_PROTOCOL_ERROR, GO_AWAY_INTERNAL_ERROR = 0, 1, 2

_pack = HEADER.pack


class MuxError(ProtocolError):
    """The peer broke the yamux protocol for the whole connection (a bad version or type, a
    SYN for a stream open now, more data than a window allows, a window past 2**32-1). ``reason`` is
    the log event, ``mux.<what>``; the connection is closed after a GO_AWAY saying why."""

    def __init__(self, message: str, reason: str) -> None:
        super().__init__(message)
        self.reason = reason


def frame(kind: int, flags: int, stream_id: int, length: int) -> bytes:
    """A header alone: a whole frame of any type but DATA, or the start of a DATA frame."""
    return _pack(VERSION, kind, flags, stream_id, length)


class YamuxFramer:
    """Whole yamux frames out of a byte stream: a header, plus a DATA frame's payload.

    The payload handed on is the whole frame, header included (the engine reads the header);
    ``encode`` passes whole frames through (the engine makes them).

    Args:
        max_data: the largest DATA payload accepted, the largest window this side grants: a
            DATA header that declares more has overrun any window, and is handed on as a
            frame alone, before anything is buffered for its payload, for the engine to
            refuse (``mux.window_exceeded``). Raising here instead would end the connection
            without the GO_AWAY that the engine leaves for the peer.
    """

    def __init__(self, max_data: int = INITIAL_WINDOW) -> None:
        self.max_data = max_data
        self.max_frame_size = HEADER_SIZE + max_data

    def frame_length(self, buf: bytes | bytearray | memoryview, start: int, end: int) -> int | None:
        """The whole frame's length once its header is in (a DATA frame's payload counted;
        a DATA header longer than any window is a frame alone, for the engine to refuse)."""
        if end - start < HEADER_SIZE:
            return None
        kind = buf[start + 1]
        if kind != DATA:
            return HEADER_SIZE  # the rest is checked by the engine, which knows the rules
        length = HEADER.unpack_from(buf, start)[4]
        if length > self.max_data:
            return HEADER_SIZE
        size = HEADER_SIZE + length
        return size if end - start >= size else None

    def payloads(self, buf: bytearray, start: int, end: int, out: list[memoryview]) -> int:
        """Every whole frame in ``buf[start:end]`` appended to ``out`` (views of ``buf``), in one
        loop for a whole read, as ``frame_length`` cuts them; returns where the first incomplete
        frame starts."""
        unpack, most, view, append = HEADER.unpack_from, self.max_data, memoryview(buf), out.append
        while end - start >= HEADER_SIZE:
            _, kind, _, _, length = unpack(buf, start)
            size = HEADER_SIZE
            if kind == DATA and length <= most:  # longer: the header alone, for the engine to refuse
                size += length
                if end - start < size:
                    break
            append(view[start : start + size])
            start += size
        return start

    def payload(self, frame: memoryview) -> memoryview:
        """The whole frame, header included: the engine reads the header itself."""
        return frame

    def encode(self, payload: bytes | bytearray | memoryview) -> bytes | bytearray | memoryview:
        """``payload`` as it is: the engine makes whole frames, header included."""
        return payload

    def __repr__(self) -> str:
        return f"YamuxFramer(max_data={self.max_data})"
