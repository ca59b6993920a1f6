"""One yamux stream's state in the engine (``links.mux._engine``), and its queued data.

Kept apart from the engine's logic, and small: an idle stream costs this alone.
"""

from __future__ import annotations

from . import _wire as wire

__all__ = ["Queued", "StreamState", "cut"]


class Queued(list):  # type: ignore[type-arg]
    """A stream's queued data: the writers' buffers themselves (see ``MuxEngine.write``),
    ``size`` bytes in all. Made by a first write; a stream with nothing queued holds ``()``."""

    __slots__ = ("size",)


class StreamState:
    """One stream's state."""

    __slots__ = ("send_window", "recv_window", "unacked", "out", "fin_queued", "fin_sent", "fin_received", "blocked")

    def __init__(self, recv_window: int) -> None:
        self.send_window = wire.INITIAL_WINDOW  # what the peer lets us send, minus what we queued
        self.recv_window = recv_window  # what we let the peer send
        self.unacked = 0  # consumed by the application, not yet given back to the peer
        self.out: Queued | tuple[()] = ()  # queued, not yet in a frame (a Queued once there is some)
        self.fin_queued = False  # close() was called: FIN once ``out`` is out
        self.fin_sent = False
        self.fin_received = False
        self.blocked = False  # a write took less than asked: tell the driver when it can take more


def cut(out: list[bytes | memoryview], n: int, parts: list[bytes | bytearray | memoryview]) -> None:
    """Move the first ``n`` bytes of ``out`` (fewer than it holds) to ``parts``, uncopied."""
    i = 0
    while n >= len(out[i]):
        parts.append(out[i])
        n -= len(out[i])
        i += 1
    if n:
        view = memoryview(out[i])
        parts.append(view[:n])
        out[i] = view[n:]
    del out[:i]
