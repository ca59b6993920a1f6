"""Framers: where one message ends in a stream of bytes, and how to wrap one for the wire.

A framer has two jobs that mirror each other:

* reading: ``frame_length(buf, start, end)`` looks at ``buf[start:end]`` and returns the length
  of the whole frame that starts at ``start`` once all of it is there, or ``None`` when more
  bytes are needed. ``payload(frame)`` strips the framing from one whole frame.
* writing: ``encode(payload)`` returns the whole frame for a payload.

The receive path also uses a batch form when a framer has one: ``payloads(buf, start, end,
out)`` appends the payload of every whole frame in ``buf[start:end]`` to ``out`` and returns
where it stopped: at the first frame that is incomplete, or that ``frame_length`` or
``payload`` refuses. It does not raise for that frame; the engine asks the two methods about
it alone, once the frames before it are out, and they raise. It must agree exactly with the
two methods: ``split_payloads`` is that agreement written out, and the default for framers
without ``payloads``. The built-in framers have their own because one loop over a read's
frames costs a fraction of a method call per frame (benchmarks/RESULTS.md, "Receive path").

Messengers only ever see payloads, so any messenger composes with any framer (a JSON
messenger over a length prefix, a delimiter, or fixed-size records).

``max_frame_size`` bounds the whole frame, header included. A peer that declares more (or,
for delimiters, sends that many bytes without a delimiter) gets ``FrameTooLarge`` and its
connection is closed: without the bound one hostile length field could make us allocate
gigabytes.

Lengths are read with ``struct.unpack_from(fmt, buf, start + offset)``, never by slicing
with hand-computed bounds, so a header at any offset is read from exactly its own bytes.
"""

from __future__ import annotations

import struct
from typing import Protocol as _TypingProtocol

from .._errors import DecodeError, FrameTooLarge

__all__ = ["Framer", "FixedSizeFramer", "LengthPrefixFramer", "DelimiterFramer", "split_payloads"]

Buffer = bytes | bytearray | memoryview


class Framer(_TypingProtocol):
    """What the connection engine needs from a framer."""

    max_frame_size: int

    def frame_length(self, buf: Buffer, start: int, end: int) -> int | None:
        """Whether a whole frame starts at ``buf[start]``, looking no further than ``end``.

        Returns:
            The frame's length in bytes (header and all), or None while it is incomplete.

        Raises:
            FrameTooLarge: the frame would exceed ``max_frame_size``.
            DecodeError: the bytes cannot start a frame.
        """

    def payload(self, frame: memoryview) -> Buffer:
        """The payload inside a whole ``frame`` (a view, valid only during the call), for the messenger."""

    def encode(self, payload: Buffer) -> bytes:
        """Wrap ``payload`` for the wire.

        Returns:
            The whole frame, as bytes.

        Raises:
            FrameTooLarge: the frame would exceed ``max_frame_size``.
            ValueError: the payload cannot be framed this way.
        """


def split_payloads(framer: Framer, buf: bytearray, start: int, end: int, out: list[Buffer]) -> int:
    """Append the payload of every whole frame in ``buf[start:end]`` to ``out``; return where
    the first frame that is incomplete or refused starts (``end`` when there is none).

    Payloads are views of ``buf``, valid until it is written again.
    """
    view = memoryview(buf)
    while start < end:
        try:
            size = framer.frame_length(buf, start, end)
            if size is None:
                break
            payload = framer.payload(view[start : start + size])
        except Exception:  # a user framer may raise anything on hostile bytes
            break  # raised again when this frame is asked about alone, after the ones before it
        out.append(payload)
        start += size
    return start


class FixedSizeFramer:
    """Every frame is exactly ``size`` bytes; the payload is the whole frame."""

    def __init__(self, size: int) -> None:
        if size <= 0:
            raise ValueError("size must be positive")
        self.size = size
        self.max_frame_size = size

    def frame_length(self, buf: Buffer, start: int, end: int) -> int | None:
        """Whether ``size`` bytes are there from ``buf[start]`` to ``end``.

        Returns:
            ``size``, or None while fewer bytes have arrived. Never raises.
        """
        return self.size if end - start >= self.size else None

    def payload(self, frame: memoryview) -> Buffer:
        """The whole ``frame`` itself (a fixed-size frame has no header). Never raises."""
        return frame

    def payloads(self, buf: bytearray, start: int, end: int, out: list[Buffer]) -> int:
        """Append the payload of every whole frame in ``buf[start:end]`` to ``out`` (views of ``buf``).

        The batch form of ``frame_length`` + ``payload``, one loop for a whole read.

        Returns:
            Where the first incomplete or refused frame starts (``end`` when there is none); it
            raises nothing: a refused frame is asked about again alone.
        """
        size, view, append = self.size, memoryview(buf), out.append
        while end - start >= size:
            append(view[start : start + size])
            start += size
        return start

    def encode(self, payload: Buffer) -> bytes:
        """Check that ``payload`` is exactly ``size`` bytes and return it as the frame.

        Raises:
            ValueError: the payload has another length.
        """
        if len(payload) != self.size:
            raise ValueError(f"payload is {len(payload)} bytes, fixed frames are {self.size}")
        return bytes(payload)

    def __repr__(self) -> str:
        return f"FixedSizeFramer(size={self.size})"


class LengthPrefixFramer:
    """A length field (u16 or u32, big or little endian) at ``offset`` bytes into the frame.

    The frame is ``prefix (offset bytes) + length field (header_size bytes) + body``.
    By default the field counts the body only. With ``includes_header=True`` it counts the
    whole frame, prefix and field included (some wire formats do this).

    With ``offset > 0`` the payload handed to the messenger is ``prefix + body`` (the field is
    taken out), and ``encode`` expects the same shape back, so a messenger can own the prefix
    bytes (for example a message type that precedes the length).

    Args:
        header_size: 2 or 4 bytes.
        byteorder: ``"big"`` (network order) or ``"little"``.
        offset: bytes before the length field.
        includes_header: whether the field counts the prefix and itself.
        max_frame_size: the largest whole frame accepted, header included.
    """

    def __init__(
        self,
        header_size: int = 4,
        *,
        byteorder: str = "big",
        offset: int = 0,
        includes_header: bool = False,
        max_frame_size: int = 1 << 20,
    ) -> None:
        if header_size not in (2, 4):
            raise ValueError("header_size must be 2 or 4")
        if byteorder not in ("big", "little"):
            raise ValueError("byteorder must be 'big' or 'little'")
        if offset < 0:
            raise ValueError("offset must be >= 0")
        self.header_size = header_size
        self.byteorder = byteorder
        self.offset = offset
        self.includes_header = includes_header
        self._struct = struct.Struct(("!" if byteorder == "big" else "<") + ("H" if header_size == 2 else "I"))
        self._head = offset + header_size
        # What the field leaves out of the whole frame; encode's pack, bound once (per send).
        self._uncounted = 0 if includes_header else self._head
        self._pack = self._struct.pack
        # The most a header can ever declare, so a small max does not need checking twice.
        field_max = (1 << (8 * header_size)) - 1
        self.max_frame_size = min(max_frame_size, field_max if includes_header else field_max + self._head)

    def frame_length(self, buf: Buffer, start: int, end: int) -> int | None:
        """Read the length field of the frame at ``buf[start]``.

        Returns:
            The whole frame's length (prefix, field and body), or None while its header or body
            is incomplete.

        Raises:
            FrameTooLarge: the declared frame exceeds ``max_frame_size``.
            DecodeError: the declared length is shorter than the header itself.
        """
        if end - start < self._head:
            return None
        (declared,) = self._struct.unpack_from(buf, start + self.offset)
        size = declared if self.includes_header else declared + self._head
        if size > self.max_frame_size:
            raise FrameTooLarge(size, self.max_frame_size)
        if size < self._head:
            # A length that does not even cover its own header can only be garbage.
            raise DecodeError(f"declared frame size {size} is smaller than its {self._head}-byte header")
        return size if end - start >= size else None

    def payload(self, frame: memoryview) -> Buffer:
        """The payload of a whole ``frame``: the body, preceded by the ``offset`` prefix bytes if
        any (the length field is taken out). Never raises.
        """
        if self.offset == 0:
            return frame[self._head :]
        return bytes(frame[: self.offset]) + bytes(frame[self._head :])

    def payloads(self, buf: bytearray, start: int, end: int, out: list[Buffer]) -> int:
        """Append the payload of every whole frame in ``buf[start:end]`` to ``out`` (views of ``buf``).

        The batch form of ``frame_length`` + ``payload``, one loop for a whole read.

        Returns:
            Where the first incomplete or refused frame starts (``end`` when there is none); it
            raises nothing: a refused frame is asked about again alone.
        """
        if self.offset:
            return split_payloads(self, buf, start, end, out)  # payloads in two pieces: the general way
        # frame_length and payload fused into one loop: about 0.3 us a frame instead of 0.7.
        unpack, head, most = self._struct.unpack_from, self._head, self.max_frame_size
        extra = 0 if self.includes_header else head
        view, append = memoryview(buf), out.append
        while end - start >= head:
            (declared,) = unpack(buf, start)
            size = declared + extra
            if size > most or size < head or end - start < size:
                break  # bad (frame_length will say why) or incomplete
            append(view[start + head : start + size])
            start += size
        return start

    def encode(self, payload: Buffer) -> bytes:
        """Prepend the length field (after the first ``offset`` bytes of ``payload``).

        Returns:
            The whole frame, as bytes.

        Raises:
            FrameTooLarge: the frame would exceed ``max_frame_size``.
            ValueError: ``payload`` is shorter than the ``offset`` prefix.
        """
        size = len(payload) + self.header_size
        if size > self.max_frame_size:
            raise FrameTooLarge(size, self.max_frame_size)
        if self.offset == 0:  # the common case first: it is on every send
            return self._pack(size - self._uncounted) + payload
        if len(payload) < self.offset:  # else the body length would be negative
            raise ValueError(f"payload must hold the {self.offset}-byte prefix")
        return bytes(payload[: self.offset]) + self._pack(size - self._uncounted) + bytes(payload[self.offset :])

    def __repr__(self) -> str:
        return (
            f"LengthPrefixFramer(header_size={self.header_size}, byteorder={self.byteorder!r}, "
            f"offset={self.offset}, includes_header={self.includes_header}, "
            f"max_frame_size={self.max_frame_size})"
        )


class DelimiterFramer:
    """Frames end with ``delimiter`` (``b"\\n"`` by default); the payload excludes it."""

    def __init__(self, delimiter: bytes = b"\n", *, max_frame_size: int = 1 << 16) -> None:
        if not delimiter:
            raise ValueError("delimiter must not be empty")
        self.delimiter = bytes(delimiter)
        self.max_frame_size = max_frame_size

    def frame_length(self, buf: Buffer, start: int, end: int) -> int | None:
        # Search only as far as a legal frame can reach, so a peer that never sends the
        # delimiter is refused after max_frame_size bytes instead of growing the buffer.
        """Find the delimiter that ends the frame at ``buf[start]``.

        Returns:
            The frame's length, delimiter included, or None while no delimiter has arrived.

        Raises:
            FrameTooLarge: ``max_frame_size`` bytes arrived without a delimiter.
        """
        limit = min(end, start + self.max_frame_size)
        if isinstance(buf, memoryview):
            buf = bytes(buf)  # memoryview has no find(); the engine passes its bytearray instead
        at = buf.find(self.delimiter, start, limit)
        if at >= 0:
            return at - start + len(self.delimiter)
        if limit - start >= self.max_frame_size:
            raise FrameTooLarge(end - start, self.max_frame_size)
        return None

    def payload(self, frame: memoryview) -> Buffer:
        """The payload of a whole ``frame``: everything before its delimiter. Never raises."""
        return frame[: len(frame) - len(self.delimiter)]

    def encode(self, payload: Buffer) -> bytes:
        """Append the delimiter to ``payload``.

        Returns:
            The whole frame, as bytes.

        Raises:
            ValueError: the payload contains the delimiter (or ends with the start of it).
            FrameTooLarge: the frame would exceed ``max_frame_size``.
        """
        frame = bytes(payload) + self.delimiter
        # The reader cuts at the first delimiter, so it must be the one appended here. Checking
        # the whole frame (not ``delimiter in payload``) also catches a payload whose tail starts
        # a self-overlapping delimiter (b"x\r\n" before b"\r\n\r\n"), and works for memoryviews.
        if frame.find(self.delimiter) != len(frame) - len(self.delimiter):
            raise ValueError("payload contains the delimiter (or ends with the start of it)")
        if len(frame) > self.max_frame_size:
            raise FrameTooLarge(len(frame), self.max_frame_size)
        return frame

    def __repr__(self) -> str:
        return f"DelimiterFramer(delimiter={self.delimiter!r}, max_frame_size={self.max_frame_size})"
