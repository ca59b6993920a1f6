"""links.aio: links connections from asyncio code, the event loop doing their I/O.

* ``clt = await links.aio.connect("host:port", protocol=Chat, ...)`` (every option of
  ``links.Clt.connect``): ``await clt.send(msg)``, ``clt.send_nowait(msg)``, ``await
  clt.recv()``, ``async for msg in clt``, ``async with clt``, ``await clt.aclose()``.
* ``server = await links.aio.serve("host:port", protocol=Chat, handler=handle, ...)``: ``async
  def handle(conn)`` runs once per connection; ``server.broadcast(msg)``, ``await server.aclose()``.
* ``links.aio.wrap(clt)``: the awaitable face of a ``links.Clt`` (or a ``links.mux`` channel)
  made with the threaded API; threads keep sending through ``.sender``.
* Request/response (``links.rpc``): ``peer = await links.aio.connect_rpc("host:port", ...)``
  (or ``links.aio.wrap_rpc(peer)``): ``await peer.call(method, *params, timeout=)``,
  ``peer.call_async(...)`` (an asyncio future), ``await peer.notify(...)``; ``service = await
  links.aio.serve_rpc("host:port", server)`` runs the server's ``async def`` handlers on the
  running loop.

Who does the I/O. The connections ``connect`` and ``serve`` make are serviced by the running
loop itself (``_looppoll.LoopPoller``: links' poll handler interface on ``loop.add_reader`` /
``add_writer``): the connection engine is links' own, unchanged (handshakes, TLS, redials,
heartbeats on the timer thread, the outbound path), only its poll handler is the loop, so a
read hands its messages to the waiting coroutine on the same thread (``_bridge.LoopBridge``)
and a drained socket wakes a waiting send there. A connection made with the threaded API and
wrapped (``wrap``), a channel, and anything given ``poll_handler=`` stay on a poll thread,
whose reads reach the loop through ``_bridge.Bridge`` and ``_waker.LoopWaker`` (one
``call_soon_threadsafe`` per read that finds a coroutine waiting). ``_looppoll`` says what
happens to a loop-driven connection when its loop stops, shuts down or is closed.

Either way: messages reach the coroutine in order, one wake-up per batch; a ``recv``
cancelled while it waits loses nothing; a coroutine that stops reading makes links stop
reading its socket once ``max_queue`` messages wait (TCP then holds the peer), and read again
at half that. Works under uvloop as under asyncio.
"""

from ._clt import DEFAULT_MAX_QUEUE, AsyncClt, connect, wrap
from ._rpc import AsyncPeer, AsyncRpcService, connect_rpc, serve_rpc, wrap_rpc
from ._server import AsyncServer, serve

__all__ = [
    "AsyncClt", "AsyncServer", "DEFAULT_MAX_QUEUE", "connect", "serve", "wrap",
    "AsyncPeer", "AsyncRpcService", "connect_rpc", "serve_rpc", "wrap_rpc",
]  # fmt: skip
