"""A yamux peer spoken by hand over a plain socket, for tests of ``links.mux`` against peers
that break the rules (or simply never grant window).

Frames are built with ``struct`` from the specification's header (version u8, type u8,
flags u16, stream id u32, length u32, big endian), not with links' own wire module, so a
mistake there cannot hide behind the same mistake here. Every read is bounded by the
socket's timeout.
"""

from __future__ import annotations

import json
import socket
import struct
from typing import NamedTuple

WAIT = 5.0

HEADER = struct.Struct(">BBHII")
DATA, WINDOW_UPDATE, PING, GO_AWAY = 0, 1, 2, 3
SYN, ACK, FIN, RST = 0x1, 0x2, 0x4, 0x8
WINDOW = 256 * 1024  # every stream's initial window
PROTOCOL_ERROR = 1  # a GO_AWAY's code


def header(kind: int, flags: int, stream_id: int, length: int, version: int = 0) -> bytes:
    return HEADER.pack(version, kind, flags, stream_id, length)


def json_frame(msg: object) -> bytes:
    """A message as the tests' ``Json`` protocol frames it: a 4-byte length, then JSON."""
    body = json.dumps(msg, separators=(",", ":")).encode()  # as JsonMessenger writes it
    return struct.pack(">I", len(body)) + body


class Frame(NamedTuple):
    kind: int
    flags: int
    stream_id: int
    length: int
    payload: bytes  # a DATA frame's; empty for the others


class RawPeer:
    """One end of a TCP connection speaking yamux by hand (see the module docstring)."""

    def __init__(self, sock: socket.socket) -> None:
        sock.settimeout(WAIT)
        self.sock = sock
        self._buf = bytearray()

    @classmethod
    def dial(cls, addr: tuple[str, int]) -> RawPeer:
        return cls(socket.create_connection(addr, timeout=WAIT))

    @property
    def addr(self) -> tuple[str, int]:
        """This end's address: the peer address the server sees."""
        host, port = self.sock.getsockname()[:2]
        return host, port

    # -- writing ----------------------------------------------------------------------------

    def send(self, *frames: bytes) -> None:
        self.sock.sendall(b"".join(frames))

    def open(self, stream_id: int) -> None:
        """SYN ``stream_id`` (on a WINDOW_UPDATE granting nothing more, as links does)."""
        self.send(header(WINDOW_UPDATE, SYN, stream_id, 0))

    def data(self, stream_id: int, payload: bytes, flags: int = 0) -> None:
        self.send(header(DATA, flags, stream_id, len(payload)), payload)

    def grant(self, stream_id: int, credit: int) -> None:
        self.send(header(WINDOW_UPDATE, 0, stream_id, credit))

    # -- reading ----------------------------------------------------------------------------

    def _fill(self, n: int) -> bool:
        """Read until ``n`` bytes are buffered; False at the end of the stream (FIN or RST)."""
        while len(self._buf) < n:
            try:
                chunk = self.sock.recv(1 << 16)
            except ConnectionResetError:
                return False
            if not chunk:
                return False
            self._buf += chunk
        return True

    def read_frame(self) -> Frame | None:
        """The next whole frame; None once the connection ended (a frame cut short included)."""
        if not self._fill(HEADER.size):
            return None
        version, kind, flags, stream_id, length = HEADER.unpack_from(self._buf)
        assert version == 0, f"version {version} from links"
        size = HEADER.size + (length if kind == DATA else 0)
        if not self._fill(size):
            return None
        payload = bytes(self._buf[HEADER.size : size])
        del self._buf[:size]
        return Frame(kind, flags, stream_id, length, payload)

    def expect(self, stream_id: int, flags: int = 0, kind: int | None = None) -> Frame:
        """Read on, past every other frame, to the next on ``stream_id`` with all of ``flags``
        set (and of ``kind``, if given); fails the test if the connection ends first."""
        seen = []
        while (frame := self.read_frame()) is not None:
            if frame.stream_id == stream_id and frame.flags & flags == flags and kind in (None, frame.kind):
                return frame
            seen.append(frame[:4])
        raise AssertionError(f"the connection ended before a frame on {stream_id} with flags {flags}; saw {seen}")

    def data_on(self, stream_id: int, size: int) -> bytes:
        """``size`` bytes of DATA on ``stream_id`` (other streams' frames are skipped)."""
        out = bytearray()
        while len(out) < size:
            out += self.expect(stream_id, kind=DATA).payload
        return bytes(out)

    def rest(self) -> list[Frame]:
        """Every frame until the connection ends."""
        frames = []
        while (frame := self.read_frame()) is not None:
            frames.append(frame)
        return frames

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> RawPeer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
