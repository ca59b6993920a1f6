"""The implementations ``rpc.py`` measures: links (``links.rpc``) and its peers, one module each.

Each module has ``serve(ctl, params)`` and ``client(ctl, params, port)`` on the helpers of
``links.bench`` and of ``calls.py`` (the call, the sequential loop, the pipelined window); the
harness runs each role in its own pinned process by loading the file from its path. Nothing
here imports an optional library: a peer whose library is missing is skipped, and said so.
"""

from __future__ import annotations

from pathlib import Path

from links.bench import Impl

__all__ = ["LINKS", "PEERS"]

HERE = Path(__file__).resolve().parent

LINKS = Impl("links", HERE / "links_rpc.py", requires=("msgpack", "links.rpc"))
#: name -> implementation, in table order
PEERS: dict[str, Impl] = {
    "grpcio": Impl("grpcio", HERE / "grpc_rpc.py", requires=("grpc", "msgpack")),
    "grpcio-aio": Impl("grpcio-aio", HERE / "grpc_aio_rpc.py", requires=("grpc", "msgpack")),
    "zmq": Impl("zmq", HERE / "zmq_rpc.py", requires=("zmq", "msgpack")),
    "amp": Impl("amp", HERE / "amp_rpc.py", requires=("twisted",)),
}
