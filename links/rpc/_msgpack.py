"""A framer and a messenger for a stream of msgpack values with no length prefix (Sans-I/O).

msgpack-rpc puts one msgpack value after another on the wire, so where a message ends is
known only by parsing it. ``MsgpackFramer`` finds the boundaries with the ``msgpack``
package's C unpacker in skip mode (it walks the structure without building any object),
and ``MsgpackMessenger`` decodes each whole frame.

Why this cannot be a bomb
    A msgpack container header declares its element count and the C decoder allocates the
    list for it before it reads the elements: ``0xdd ff ff ff ff`` in five bytes asks for four
    billion slots. Here no frame is decoded before the skip found all of it, within
    ``max_frame_size``: every element a header declares is then really there, at least one
    byte each, so what decoding allocates is bounded by the frame's size (times a constant).
    On top of that the messenger passes msgpack's own limits (``max_str_len``,
    ``max_bin_len``, ``max_array_len``, ``max_map_len``, ``max_ext_len``, checked on each
    header before anything is built) and bounds the nesting depth itself (``max_depth``):
    deep values break recursive code downstream (``repr``, ``json``), and msgpack's own
    bound is 1024.

What is refused how
    * The framer raises (the engine logs it and closes the connection: the stream cannot be
      trusted past that point) for a frame over ``max_frame_size`` (``FrameTooLarge``, also
      while it is still incomplete), a byte that cannot start a value, or nesting past
      msgpack's 1024 levels (``MsgpackError``).
    * The messenger never raises for a whole frame: one it cannot decode within its limits
      (bad UTF-8, a string or container over its limit, too deep, a map key that cannot be
      a key) becomes ``Undecodable(reason)`` and the connection stays, because the next
      frame starts where it should.

Speed
    The batch form ``payloads`` feeds a whole read to one unpacker and cuts every frame in it
    (a C skip and a ``tell`` per frame). A frame that arrives over many reads is not parsed
    again from its start each time: the unpacker that stopped in it is kept with where it
    stopped, and fed only the new bytes next time, as long as the receive buffer still holds
    that frame at the same place (it moves only when it grows or compacts).
"""

from __future__ import annotations

from typing import Any

import msgpack  # type: ignore[import-untyped]  # no stubs: msgpack is Any to mypy

from .._core._messenger import Messenger
from .._errors import DecodeError, FrameTooLarge
from ._wire import Undecodable

__all__ = ["MsgpackFramer", "MsgpackMessenger", "MsgpackError", "nesting_depth"]

Buffer = bytes | bytearray | memoryview

_OutOfData = msgpack.OutOfData
_Unpacker = msgpack.Unpacker
# Bytes that may start a container (fixmap, fixarray, map16/32, array16/32): a value nested
# d deep holds at least d of them, so a payload with fewer needs no closer look.
_CONTAINER_BYTES = bytes(1 if (0x80 <= b <= 0x9F or 0xDC <= b <= 0xDF) else 0 for b in range(256))


class MsgpackError(DecodeError):
    """The bytes cannot be a msgpack stream (a reserved byte, nesting past msgpack's 1024
    levels): the framing is lost and the connection is closed."""


class MsgpackFramer:
    """A ``links.Framer`` for back-to-back msgpack values: each value is one frame, its payload
    the value's own bytes. One instance per connection (it keeps a partly parsed frame).

    Args:
        max_frame_size: the largest value accepted, in bytes; a peer past it is cut.
    """

    def __init__(self, *, max_frame_size: int = 1 << 20) -> None:
        if max_frame_size <= 0:
            raise ValueError("max_frame_size must be positive")
        self.max_frame_size = max_frame_size
        # An incomplete frame's unpacker: (buffer, frame start, bytes fed up to, its first
        # byte, unpacker, the buffer offset of the unpacker's position 0).
        self._partial: tuple[Any, int, int, int, Any, int] | None = None
        # An unpacker that read everything it was fed, without error: the next read's (making
        # one costs more than skipping a small value).
        self._idle: Any = None

    def _unpacker(self, buf: Buffer, start: int, end: int) -> tuple[Any, int]:
        """An unpacker fed with ``buf[start:end]`` whose next value starts at ``start``, and
        the buffer offset its ``tell()`` counts from."""
        partial, self._partial = self._partial, None
        if partial is not None:
            pbuf, pstart, fed, first, unpacker, base = partial
            if pbuf is buf and pstart == start and fed <= end and buf[start] == first:
                if fed < end:
                    unpacker.feed(memoryview(buf)[fed:end])
                return unpacker, base
        unpacker, self._idle = self._idle, None
        if unpacker is None:
            unpacker = _Unpacker(max_buffer_size=2 * self.max_frame_size + (1 << 19))
        unpacker.feed(memoryview(buf)[start:end])
        return unpacker, start - unpacker.tell()

    def frame_length(self, buf: Buffer, start: int, end: int) -> int | None:
        """The length of the msgpack value that starts at ``buf[start]``, or None while it is
        incomplete.

        Raises:
            FrameTooLarge: the value is, or has grown while incomplete, over ``max_frame_size``.
            MsgpackError: the bytes are not msgpack (or nest past 1024 levels).
        """
        unpacker, base = self._unpacker(buf, start, end)
        try:
            unpacker.skip()
        except _OutOfData:
            if end - start > self.max_frame_size:
                raise FrameTooLarge(end - start, self.max_frame_size) from None
            self._partial = (buf, start, end, buf[start], unpacker, base)
            return None
        except msgpack.BufferFull:
            raise FrameTooLarge(end - start, self.max_frame_size) from None
        except Exception as e:  # FormatError, StackError: the stream is lost
            raise MsgpackError(f"not a msgpack stream: {type(e).__name__} {e}".rstrip()) from e
        size: int = base + unpacker.tell() - start
        if size > self.max_frame_size:
            raise FrameTooLarge(size, self.max_frame_size)
        return size

    def payload(self, frame: memoryview) -> Buffer:
        """The frame itself: a msgpack value has no framing around it. Never raises."""
        return frame

    def payloads(self, buf: bytearray, start: int, end: int, out: list[Buffer]) -> int:
        """Append every whole value in ``buf[start:end]`` to ``out`` (views of ``buf``).

        The batch form of ``frame_length`` + ``payload``, one unpacker for a whole read.

        Returns:
            Where the first incomplete or refused value starts (``end`` when there is none); it
            raises nothing: a refused value is asked about again alone.
        """
        if start >= end:
            return start
        try:
            unpacker, base = self._unpacker(buf, start, end)
        except Exception:
            return start
        skip, tell, most = unpacker.skip, unpacker.tell, self.max_frame_size
        view, append = memoryview(buf), out.append
        while start < end:
            try:
                skip()
            except _OutOfData:
                if end - start <= most:  # kept, to be fed the rest; else frame_length says why
                    self._partial = (buf, start, end, buf[start], unpacker, base)
                break
            except Exception:
                break  # frame_length raises it, once the frames before it are out
            stop = base + tell()
            if stop - start > most:
                break
            append(view[start:stop])
            start = stop
        else:
            self._idle = unpacker  # all of it read: it is clean for the next read
        return start

    def encode(self, payload: Buffer) -> bytes:
        """The frame for a packed msgpack value: the value's bytes themselves.

        Raises:
            FrameTooLarge: the value is over ``max_frame_size``.
        """
        if len(payload) > self.max_frame_size:
            raise FrameTooLarge(len(payload), self.max_frame_size)
        return payload if type(payload) is bytes else bytes(payload)

    def __repr__(self) -> str:
        return f"MsgpackFramer(max_frame_size={self.max_frame_size})"


# How many bytes follow each fixed-size header byte (ints, floats, nil, bools, fixext),
# and for the length-prefixed kinds (str, bin, ext) how wide the length is.
_FIXED: dict[int, int] = {0xCA: 4, 0xCB: 8, 0xCC: 1, 0xCD: 2, 0xCE: 4, 0xCF: 8, 0xD0: 1, 0xD1: 2, 0xD2: 4, 0xD3: 8,
                          0xD4: 2, 0xD5: 3, 0xD6: 5, 0xD7: 9, 0xD8: 17}  # fmt: skip
_SIZED: dict[int, tuple[int, int]] = {0xC4: (1, 0), 0xC5: (2, 0), 0xC6: (4, 0), 0xC7: (1, 1), 0xC8: (2, 1),
                                      0xC9: (4, 1), 0xD9: (1, 0), 0xDA: (2, 0), 0xDB: (4, 0)}  # fmt: skip
_CONTAINERS: dict[int, tuple[int, int]] = {0xDC: (2, 1), 0xDD: (4, 1), 0xDE: (2, 2), 0xDF: (4, 2)}


def _count(b: int, data: bytes, pos: int) -> tuple[int, int]:
    """For a container header byte ``b`` at ``pos``: (elements it declares, where they start);
    (-1, next position) for any other value."""
    if 0x90 <= b <= 0x9F:
        return b & 0x0F, pos + 1
    if 0x80 <= b <= 0x8F:
        return 2 * (b & 0x0F), pos + 1
    if b in _CONTAINERS:
        width, per = _CONTAINERS[b]
        return per * int.from_bytes(data[pos + 1 : pos + 1 + width], "big"), pos + 1 + width
    if b in _FIXED:
        return -1, pos + 1 + _FIXED[b]
    if b in _SIZED:
        width, extra = _SIZED[b]
        return -1, pos + 1 + width + extra + int.from_bytes(data[pos + 1 : pos + 1 + width], "big")
    if 0xA0 <= b <= 0xBF:
        return -1, pos + 1 + (b & 0x1F)
    return -1, pos + 1  # fixints, nil, bools (0xc1 never gets here: the framer refused it)


def nesting_depth(data: bytes, limit: int) -> int:
    """How deep the (whole, valid) msgpack value in ``data`` nests, counting up to ``limit + 1``
    at most (an array of scalars is 1, a scalar 0)."""
    depth = deepest = pos = 0
    left: list[int] = []  # elements still to come in each open container
    end = len(data)
    while pos < end:
        count, pos = _count(data[pos], data, pos)
        if count >= 0 and depth + 1 > deepest:  # a container, empty or not: one level more
            deepest = depth + 1
            if deepest > limit:
                return deepest
        if count > 0:
            left.append(count)
            depth += 1
            continue
        # a scalar or an empty container: it completes one element of each container it ends
        while left:
            left[-1] -= 1
            if left[-1]:
                break
            left.pop()
            depth -= 1
        if not left:
            break
    return deepest


class MsgpackMessenger(Messenger[Any, Any]):
    """Messages are msgpack values (``str`` for msgpack str, ``bytes`` for bin, lists for
    arrays); a ``bytes`` message is taken as an already packed value and sent as it is.

    Args:
        max_depth: the deepest nesting accepted (an array of arrays is 2).
        max_str_len, max_bin_len, max_ext_len: the longest string, binary or extension value.
        max_container_len: the most elements in one array or pairs in one map.
        Each defaults to msgpack's own bound for the frame size, so only ``max_depth`` (32)
        is tighter than the frame itself.
    """

    def __init__(
        self,
        *,
        max_depth: int = 32,
        max_str_len: int = -1,
        max_bin_len: int = -1,
        max_ext_len: int = -1,
        max_container_len: int = -1,
    ) -> None:
        if max_depth < 1:
            raise ValueError("max_depth must be at least 1")
        self.max_depth = max_depth
        self._limits = dict(
            raw=False, strict_map_key=False, max_str_len=max_str_len, max_bin_len=max_bin_len,
            max_ext_len=max_ext_len, max_array_len=max_container_len, max_map_len=max_container_len,
        )  # fmt: skip
        self._packer = msgpack.Packer()  # serialize runs under the connection's write lock
        # One unpacker fed one whole payload at a time: half the cost of ``unpackb`` with
        # limits, which builds a new one per call. Only the receiving thread decodes.
        self._unpacker = _Unpacker(**self._limits)

    def serialize(self, msg: Any) -> Buffer:
        """``msg`` packed (a ``bytes`` message is sent as it is: already packed).

        Raises:
            TypeError: a value msgpack cannot encode; ValueError: one too large for it.
        """
        if type(msg) is bytes:
            return msg
        data: bytes = self._packer.pack(msg)
        return data

    def deserialize(self, payload: Buffer) -> Any:
        """The msgpack value in one whole frame, or ``Undecodable(reason)``. Never raises."""
        return self.deserialize_many([payload])[0]

    def deserialize_many(self, payloads: list[Buffer]) -> list[Any]:
        """``deserialize`` for a whole read at once. Never raises."""
        unpacker, most = self._unpacker, self.max_depth
        feed, unpack = unpacker.feed, unpacker.unpack
        out: list[Any] = []
        append = out.append
        for payload in payloads:
            if len(payload) > most and payload_is_deep(payload, most):
                append(Undecodable(f"nested deeper than max_depth={most}"))
                continue
            try:
                feed(payload)
                append(unpack())
            except Exception as e:  # bad UTF-8, a limit, an unhashable map key, ...
                append(Undecodable(f"{type(e).__name__}: {e}"))
                # whatever it left half-read must not prefix the next payload
                unpacker = self._unpacker = _Unpacker(**self._limits)
                feed, unpack = unpacker.feed, unpacker.unpack
        return out

    def __repr__(self) -> str:
        return f"MsgpackMessenger(max_depth={self.max_depth})"


def payload_is_deep(payload: Buffer, limit: int) -> bool:
    """Whether the msgpack value in ``payload`` nests deeper than ``limit``: a count of the bytes
    that may start a container first (cheap, in C), a walk of the structure only when there
    are more of them than ``limit``."""
    data = payload if type(payload) is bytes else bytes(payload)
    if data.translate(_CONTAINER_BYTES).count(1) <= limit:
        return False
    return nesting_depth(data, limit) > limit
