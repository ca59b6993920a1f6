"""Channels: many logical connections over one TCP connection, in the yamux wire format.

``connect("host:port", ...)`` gives a ``Mux`` handle on the (shared, per address) TCP
connection; ``mux.open(protocol=...)`` gives a channel, a ``links.Clt`` like any other. A
service takes channels with ``links.Svc.bind(..., mux=True)``; either side may open them.
The wire is yamux (HashiCorp's specification, version 0), so other implementations of it
are peers too. ``MuxEngine`` is the protocol alone, Sans-I/O (bytes in, events and bytes out);
``Carrier`` is one TCP connection carrying channels, unshared (``Carrier.from_socket`` runs
one over any connected socket). See the README's "Channels".
"""

from ._engine import MuxEngine as MuxEngine
from ._events import (
    GoAway as GoAway,
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
