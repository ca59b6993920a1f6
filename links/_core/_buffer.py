"""``ReceiveBuffer``: one reusable bytearray that socket reads land in and frames are cut from.

Why this shape:

* The socket reads straight into free space at the end (``recv_into`` on ``writable()``), so a
  read allocates nothing. Frames are found by offset and handed out as ``memoryview`` slices,
  so cutting a frame copies nothing either.
* The bytearray is never resized in place. A resize while a memoryview of it is alive raises
  ``BufferError``, and a messenger might hold one for a moment. Growing replaces the array;
  compacting moves the unread tail to the front with a same-size slice assignment, which
  CPython allows while views exist.
* Frame views are valid until the next ``writable()`` or ``feed()``. Messengers copy what
  they keep (``bytes(view)``, ``json.loads`` of it); that is their documented contract.
* The array is made by the first read (``writable``, ``feed``): a connection that never
  receives (thousands of idle channels) holds none. It starts small (4 KiB), so ten thousand
  busy-once connections cost 40 MB rather than 640 MB; each read that fills all the space offered
  doubles the next offer, up to ``max_read_size`` (256 KiB), so a busy stream soon reads in
  large gulps (one syscall per many frames). It never shrinks: a connection that was busy
  once is likely to be busy again.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ._framer import Framer

__all__ = ["ReceiveBuffer"]

# Every buffer's array until its first read. Never written: a buffer asked for room replaces
# it (it has none), and the view exported here keeps it from ever being resized.
_NO_BYTES = bytearray()
_NO_VIEW = memoryview(_NO_BYTES)


class ReceiveBuffer:
    """Bytes received but not yet cut into frames.

    Args:
        capacity: initial size of the backing array; it grows (up to what the framer's
            ``max_frame_size`` needs) when one frame is larger.
        read_size: the free space ``writable()`` offers at first.
        max_read_size: how far the offer grows for a connection whose reads keep filling it.
    """

    __slots__ = ("_buf", "_view", "_start", "_end", "_read_size", "_max_read_size", "_offered")

    def __init__(self, capacity: int = 1 << 12, read_size: int = 1 << 12, max_read_size: int = 1 << 18) -> None:
        self._buf = _NO_BYTES  # until the first read: see the module docstring
        self._view = _NO_VIEW
        self._start = 0  # first unread byte
        self._end = 0  # one past the last received byte
        self._read_size = read_size
        self._max_read_size = max(max_read_size, read_size)
        # Free bytes the last writable() offered; until the first, the first array's size
        # (``_make_room`` takes it as a floor, which the array's doubling exceeds from then on).
        self._offered = max(capacity, read_size)

    def __len__(self) -> int:
        return self._end - self._start

    def writable(self, min_free: int = 0) -> memoryview:
        """Free space at the end to ``recv_into``; call ``commit(n)`` with what was written."""
        want = max(self._read_size, min_free)
        if len(self._buf) - self._end < want:
            self._make_room(want)
        view = self._view[self._end :]
        self._offered = len(view)
        return view

    def commit(self, n: int) -> None:
        """Count ``n`` bytes just written into the view ``writable()`` returned as received data.

        When a read filled all that was offered, the next ``writable()`` offers more (up to the
        maximum read size). Returns None.
        """
        self._end += n
        if n >= self._offered and self._read_size < self._max_read_size:
            self._read_size *= 2  # the read filled everything offered: offer more next time

    def feed(self, data: bytes | bytearray | memoryview) -> None:
        """Copy ``data`` in (the Sans-I/O entry point, for callers that already hold bytes)."""
        n = len(data)
        self.writable(n)[:n] = data
        self._end += n

    def take_pending(self) -> bytes:
        """Remove and return every unread byte (to hand a stream over to another buffer)."""
        data = bytes(self._view[self._start : self._end])
        self._start = self._end = 0
        return data

    def next_frame(self, framer: Framer) -> memoryview | None:
        """Cut the next whole frame, or return None when more bytes are needed.

        Raises:
            FrameTooLarge: the framer saw a frame over its ``max_frame_size``.
        """
        start, end = self._start, self._end
        if start == end:
            return None
        size = framer.frame_length(self._buf, start, end)
        if size is None:
            return None
        self._start = start + size
        if self._start == self._end:
            # Everything consumed: rewind for free, so the common case never compacts.
            self._start = self._end = 0
        return self._view[start : start + size]

    def cut(self, payloads: Callable[[bytearray, int, int, list[Any]], int], framer: Framer, out: list[Any]) -> None:
        """Cut the whole frames at the front with a framer's ``payloads`` (see ``Framer``),
        appending their payloads to ``out``.

        Raises:
            What ``frame_length`` or ``payload`` raise for the first frame, when ``payloads``
            stopped at it: so a bad frame is reported only after every frame before it was
            taken. A frame whose payload was refused is consumed first (the stream goes on
            after it); one whose length was refused is not (nothing after it can be cut).
        """
        start, end = self._start, self._end
        stop = payloads(self._buf, start, end, out)
        if stop == start and start < end:
            size = framer.frame_length(self._buf, start, end)  # raises for a bad length
            if size is not None:  # whole, so its payload was refused: take it, then ask again
                stop = start + size
                self._start = stop
                out.append(framer.payload(self._view[start:stop]))  # raises, as it did the first time
        if stop == end:
            self._start = self._end = 0
        else:
            self._start = stop

    def _make_room(self, want: int) -> None:
        pending = self._end - self._start
        if len(self._buf) - pending >= want:
            # Enough room once the unread tail moves to the front.
            self._buf[:pending] = self._buf[self._start : self._end]
        else:
            bigger = bytearray(max(2 * len(self._buf), pending + want, self._offered))
            bigger[:pending] = self._view[self._start : self._end]
            self._buf = bigger
            self._view = memoryview(bigger)
        self._start, self._end = 0, pending
