"""``AsyncServer``: a links service whose connections are handled by coroutines.

``serve`` binds a ``links.Svc`` with the running loop's ``LoopPoller`` as its poll handler
(``links.aio._looppoll``) and spawns it there: accepting, gating, TLS and session handshakes
run on the loop, as they would on a poll thread, and so do the connections' reads (with
``mux=True``, or a ``poll_handler=`` of one's own, all of it stays on that poll thread). As
each connection joins the service's pool, before its first byte is read, it gets a bridge
(``links.aio._bridge``) and becomes an ``AsyncClt``; the loop then runs ``handler(conn)`` as
a task of its own. When the handler
returns (or raises: logged as ``aio.handler_failed``), its connection is closed.

``aclose`` closes the service (no more accepting; every connection closed, which ends each
handler's ``recv`` and ``async for``), then cancels the handlers still running and awaits them.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from .._callbacks import Callback, DevNullCallback
from .._connection import Connection
from .._core._conid import Addr, ConId
from .._core._status import SendStatus
from .._log import get_logger
from .._svc import Svc
from ._bridge import bridge_for
from ._clt import DEFAULT_MAX_QUEUE, AsyncClt
from ._inbox import Inbox
from ._looppoll import loop_poller
from ._offloop import off_loop

__all__ = ["AsyncServer", "serve"]

_log = get_logger("aio")

Handler = Callable[[AsyncClt], Awaitable[Any]]


class AsyncServer:
    """A listening service whose every connection runs ``handler(conn)`` on the loop.

    Made by ``links.aio.serve``. ``local_addr`` is where it listens; ``svc`` the
    ``links.Svc`` underneath (its pool, gate and settings).
    """

    def __init__(self, svc: Svc, handler: Handler, loop: asyncio.AbstractEventLoop, max_queue: int) -> None:
        self.svc = svc
        self._handler = handler
        self._loop = loop
        self._max_queue = max_queue
        self._tasks: set[asyncio.Task[None]] = set()
        self._closed = False
        svc.joined = self._joined  # before any connection can join
        self._sender = svc.into_sender_with_spawned_recver()

    @property
    def local_addr(self) -> Addr:
        """``(host, port)`` it listens on (port 0 at bind: the one the system chose)."""
        return self.svc.local_addr

    @property
    def handlers(self) -> int:
        """How many handlers run now."""
        return sum(not task.done() for task in self._tasks)

    def con_ids(self) -> list[ConId]:
        """The connections open now, in the order they joined."""
        return self.svc.con_ids()

    def broadcast(self, msg: Any) -> int:
        """Send ``msg`` to every connection without waiting (a full one is skipped); how many took it."""
        return self._sender.broadcast(msg, 0)

    def send_to(self, con_id: ConId, msg: Any) -> SendStatus:
        """Send ``msg`` to the connection ``con_id`` without waiting: ``COMPLETED`` or ``WOULD_BLOCK``.

        Raises:
            BrokenError: no such connection (``unknown_connection``); ClosedError: closed.
        """
        return self._sender.send_to(con_id, msg, 0)

    # -- the poll thread ------------------------------------------------------------------

    def _joined(self, con: Connection, sender: Any) -> None:
        """The acceptor's thread (the loop's own, or the poll thread), a connection joining the
        pool before it is read: bridge it, and start its handler (on the loop: posted to it from
        another thread). Never raises (the acceptor would take it for its own)."""
        try:
            bridge = bridge_for(self._loop, con, self._max_queue)
            con.callback = bridge if isinstance(con.callback, DevNullCallback) else con.callback + bridge
            bridge.attach()
            conn = AsyncClt(sender, bridge)
            if asyncio._get_running_loop() is self._loop:
                self._start(conn)
            else:
                self._loop.call_soon_threadsafe(self._start, conn)
        except Exception as e:  # the loop is closed, say: nobody will handle it
            _log.warning("aio.handler_failed", con_id=str(con.con_id), error=repr(e))
            con.close("aio_unhandled")

    # -- the loop -------------------------------------------------------------------------

    def _start(self, conn: AsyncClt) -> None:
        if self._closed:
            conn.close()
            return
        task = self._loop.create_task(self._run(conn), name=f"links.aio handler {conn.con_id}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _run(self, conn: AsyncClt) -> None:
        try:
            await self._handler(conn)
        except asyncio.CancelledError:
            raise
        except Exception as e:
            _log.error("aio.handler_failed", con_id=str(conn.con_id), error=repr(e))
        finally:
            conn.close()

    def close(self) -> None:
        """Stop accepting and close every connection (their handlers' ``recv`` raise
        ``ClosedError``); idempotent. ``aclose`` also waits for the handlers."""
        self._closed = True
        self.svc.close()

    async def aclose(self) -> None:
        """Close the service (on a thread: it waits for the poll thread to free the port),
        cancel the handlers still running, and await them. Idempotent."""
        self._closed = True
        await off_loop(self.svc.close, name="links-aio-close")
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()  # a handler already ending on the close finishes as it was
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
        self._tasks.difference_update(tasks)

    async def __aenter__(self) -> AsyncServer:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    def __repr__(self) -> str:
        return f"AsyncServer({self.svc!r}, handlers={self.handlers})"


async def serve(
    addr: str | Addr,
    *,
    protocol: Any,
    handler: Handler,
    max_connections: int = 128,
    callback: Callback | None = None,
    max_queue: int = DEFAULT_MAX_QUEUE,
    **options: Any,
) -> AsyncServer:
    """Listen on ``"host:port"`` and run ``await handler(conn)`` for each connection, ``conn``
    an ``AsyncClt``; the connection closes when the handler returns.

    Args:
        addr, protocol, max_connections, callback, **options: as ``links.Svc.bind`` (``tls``,
            ``session``, ``mux``, ``handshake_timeout``, ``max_outbound``, ...).
        handler: ``async def handler(conn)``; an exception it raises is logged
            (``aio.handler_failed``) and ends only its connection.
        max_queue: per connection, as ``links.aio.wrap``.

    Raises:
        As ``links.Svc.bind`` (``OSError``: the address cannot be bound; ``ValueError``).
    """
    loop = asyncio.get_running_loop()
    Inbox(max_queue)  # raises ValueError for an unusable max_queue, before binding
    if options.get("poll_handler") is None and not options.get("mux"):  # channels stay on the poll thread
        options["poll_handler"] = loop_poller()  # the loop accepts, reads and writes (links.aio._looppoll)
    svc = Svc.bind(addr, protocol=protocol, callback=callback, max_connections=max_connections, **options)
    try:
        return AsyncServer(svc, handler, loop, max_queue)
    except BaseException:
        svc.close()
        raise
