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
from ._carrier import Carrier as Carrier
from ._mux import Mux as Mux, connect as connect
from ._wire import MuxError as MuxError, YamuxFramer as YamuxFramer


__all__ = ["connect", "Mux", "Carrier", "GoAway", "MuxEngine", "MuxError", "Pong", "StreamAccepted", "StreamData", "StreamEnded", "StreamOpened", "StreamReset", "YamuxFramer"]
