"""``Server``: the methods one side answers, and ``serve`` to put them on a ``links.Svc``.

A handler is any callable; a request's params are its positional arguments. What it does
decides the reply:

* returns a value: the reply, sent at once (with the other replies of the same read);
* raises: an error reply ``"TypeName: message"`` (the caller gets ``RemoteError`` with both);
* returns a ``concurrent.futures.Future``: the reply is sent when the future is done, from
  the thread that completes it, so slow work never holds the other calls back;
* is an ``async def``: its coroutine runs on the server's event loop (``loop=``, or the
  running loop of ``links.aio.serve_rpc``), and its outcome is replied as a future's is. It
  counts against ``max_running`` as an executor's call does; with no loop, or a closed one,
  the call is answered with an error reply (``links.rpc._coroutines``).

Handlers run on the receiving thread (the poll thread, on a service) unless the server has an
``executor``: then each call is submitted to it. Which to use:

* a handler that is quick and never blocks (arithmetic, a dict lookup, handing work to a
  queue and returning a future): the poll thread. No thread handoff, the lowest latency,
  and calls on one connection run in their order of arrival.
* a handler that blocks or takes long (disk, a database, another service, CPU work of
  milliseconds): ``executor=ThreadPoolExecutor(...)``. On the poll thread it would stall
  every connection of the process meanwhile. Calls then run concurrently and their replies go
  out as they finish, in any order (the ids match them up).

A method the server does not have gets the error reply ``"NoSuchMethod: no method '...'"``; the
connection stays up.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Mapping
from concurrent.futures import Executor
from typing import TYPE_CHECKING, Any, TypeVar, overload

from .._svc import Svc
from ._coroutines import Coroutines

if TYPE_CHECKING:
    from .._core._conid import ConId
    from ._peer import Peer
    from ._protocol import RpcProtocol

__all__ = ["Server", "serve"]

F = TypeVar("F", bound=Callable[..., Any])


class Server:
    """A set of methods to answer calls with (see the module docstring).

    Args:
        methods: name -> handler, to start with.
        executor: where handlers run (None: on the receiving thread, the poll thread).
        max_in_flight: the most calls the server's side may have pending on one connection
            (calls it makes to its clients through ``peers()``).
        max_running: the most calls of one connection on the executor (queued or running) at
            once; beyond it a call is answered ``"Busy: ..."`` at once.
        max_frame_size: the largest message accepted or sent, in bytes.
        max_depth: the deepest nesting accepted in a message.
        loop: the event loop ``async def`` handlers run on (settable later as ``.loop``).
    """

    def __init__(
        self,
        methods: Mapping[str, Callable[..., Any]] | None = None,
        *,
        executor: Executor | None = None,
        max_in_flight: int = 10_000,
        max_running: int = 10_000,
        max_frame_size: int = 1 << 20,
        max_depth: int = 32,
        loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        if max_running < 1:
            raise ValueError("max_running must be at least 1")
        self.methods: dict[str, Callable[..., Any]] = dict(methods or {})
        self.executor = executor
        self.loop = loop
        self.coroutines = Coroutines()
        self.max_running = max_running
        self._options: dict[str, Any] = {
            "max_in_flight": max_in_flight, "max_frame_size": max_frame_size, "max_depth": max_depth,
        }  # fmt: skip
        self._peers: dict[Any, Peer] = {}
        self._lock = threading.Lock()

    @overload
    def method(self, fn_or_name: F) -> F: ...

    @overload
    def method(self, fn_or_name: str) -> Callable[[F], F]: ...

    def method(self, fn_or_name: Any) -> Any:
        """Register a handler under its own name (``@server.method``) or another
        (``@server.method("name")``); returns the function unchanged."""
        if isinstance(fn_or_name, str):
            name = fn_or_name

            def register(fn: F) -> F:
                self.add(name, fn)
                return fn

            return register
        self.add(fn_or_name.__name__, fn_or_name)
        return fn_or_name

    def add(self, name: str, fn: Callable[..., Any]) -> None:
        """Register ``fn`` as the handler of ``name`` (replacing any before it)."""
        if not callable(fn):
            raise TypeError(f"a handler must be callable, not {type(fn).__name__}")
        self.methods[name] = fn

    def protocol(self) -> RpcProtocol:
        """A fresh protocol instance (with a ``Peer`` of its own) for one connection: pass the
        method itself as ``protocol=`` (``links.Svc.bind(addr, protocol=server.protocol)``)."""
        from ._peer import Peer

        return Peer(server=self, **self._options).protocol()

    def peers(self) -> list[Peer]:
        """A ``Peer`` for each connection served now, to call the clients back."""
        with self._lock:
            return list(self._peers.values())

    def peer(self, con_id: ConId) -> Peer | None:
        """The ``Peer`` of the connection ``con_id`` (as callbacks and hooks name it), or None."""
        with self._lock:
            return self._peers.get(con_id)

    def joined(self, peer: Peer) -> None:
        """A connection served by this server is up (told by its ``Peer``)."""
        with self._lock:
            self._peers[peer.con_id] = peer

    def left(self, peer: Peer) -> None:
        """That connection ended."""
        with self._lock:
            if self._peers.get(peer.con_id) is peer:
                del self._peers[peer.con_id]

    def __repr__(self) -> str:
        return f"Server({sorted(self.methods)})"


def serve(addr: str, server: Server, **svc_kwargs: Any) -> Svc:
    """Serve ``server``'s methods on a new ``links.Svc`` bound to ``"host:port"``.

    ``svc_kwargs`` are ``links.Svc.bind``'s (``max_connections``, ``tls``, ``session``,
    ``mux``, ``name``, ...). The acceptor and every connection run on the poll thread; close
    the returned service to stop.

    Raises:
        What ``links.Svc.bind`` raises (``OSError`` for an address in use, ``ValueError``).
    """
    svc = Svc.bind(addr, protocol=server.protocol, **svc_kwargs)
    try:
        svc.into_sender_with_spawned_recver()
    except BaseException:
        svc.close()
        raise
    return svc
