"""Request/response over any links connection: msgpack-rpc calls with ids, deadlines,
cancellation and pipelining.

``connect("host:port", ...)`` gives a ``Peer``: ``call(method, *params, timeout=)`` waits for
the result, ``call_async`` returns a ``concurrent.futures.Future``, ``call_many`` sends a
batch in one write, ``notify`` expects no answer. ``Server`` holds the methods one side answers; ``serve("host:port", server, ...)``
puts them on a ``links.Svc``. Both are links protocols underneath (``Peer.protocol``,
``Server.protocol``), so they run on every kind of connection: TLS, ``reconnect=``,
``session=``, a channel of ``links.mux``; either side may call the other.

The wire is msgpack-rpc (request ``[0, msgid, method, params]``, response ``[1, msgid, error,
result]``, notification ``[2, method, params]``), so other msgpack-rpc programs are peers.
``Correlator`` is the same calls over a protocol of your own whose messages carry ids.
The pieces below the runtime are Sans-I/O: ``MsgpackFramer``, ``MsgpackMessenger``, the
envelopes (``decode``, ``Request``, ...) and ``CallTable``.

Log events (logger ``links.rpc``): ``rpc.bad_envelope``, ``rpc.bad_message``,
``rpc.unknown_reply``, ``rpc.unknown_method`` (a notification), ``rpc.notification_failed``,
``rpc.replies_dropped`` (warning; a connection's first ten bad messages, then debug);
``rpc.late_reply``, ``rpc.reply_lost``, ``rpc.busy`` (debug). See the README's "Request/response".
"""

from ._correlator import Correlator as Correlator
from ._errors import (
    BadEnvelope as BadEnvelope,
    CallIndeterminate as CallIndeterminate,
    CallTimeout as CallTimeout,
    InFlightLimit as InFlightLimit,
    RemoteError as RemoteError,
    RpcError as RpcError,
)
from ._msgpack import MsgpackError as MsgpackError, MsgpackFramer as MsgpackFramer, MsgpackMessenger as MsgpackMessenger
from ._peer import Peer as Peer, connect as connect
from ._protocol import RpcProtocol as RpcProtocol
from ._server import Server as Server, serve as serve
from ._table import CallTable as CallTable, DuplicateId as DuplicateId, TableFull as TableFull
from ._wire import (
    Notification as Notification,
    Request as Request,
    Response as Response,
    Undecodable as Undecodable,
    decode as decode,
)

__all__ = [
    "connect", "serve", "Peer", "Server", "Correlator", "RpcProtocol",
    "RpcError", "RemoteError", "CallTimeout", "CallIndeterminate", "InFlightLimit", "BadEnvelope", "MsgpackError",
    "MsgpackFramer", "MsgpackMessenger", "Request", "Response", "Notification", "Undecodable", "decode",
    "CallTable", "DuplicateId", "TableFull",
]  # fmt: skip
