"""Multiplexed channels: many logical connections over one TCP connection, in the yamux wire format.

The engine (``MuxEngine``) is Sans-I/O: it can be driven without sockets, and tests do.
"""

from ._engine import (
    GoAway as GoAway,
    MuxEngine as MuxEngine,
    Pong as Pong,
    StreamAccepted as StreamAccepted,
    StreamData as StreamData,
    StreamEnded as StreamEnded,
    StreamOpened as StreamOpened,
    StreamReset as StreamReset,
)
from ._wire import MuxError as MuxError, YamuxFramer as YamuxFramer

__all__ = ["GoAway", "MuxEngine", "MuxError", "Pong", "StreamAccepted", "StreamData", "StreamEnded", "StreamOpened", "StreamReset", "YamuxFramer"]
