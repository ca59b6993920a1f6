"""Request/response (``links.rpc``) from asyncio: ``AsyncPeer`` awaits calls, ``serve_rpc``
serves ``async def`` handlers on the running loop.

Calling. A call is sent from the loop's thread without waiting (``Peer.try_call``); its
reply completes the rpc layer's ``concurrent.futures.Future`` on the poll thread, and the
outcome is copied to an asyncio future on the loop through the loop's ``LoopWaker``
(``links.aio._waker``): the replies of one read cost one loop wake-up, not one each, and a
loop closed meanwhile drops them without a word on the poll thread. No thread per call.
Cancelling the awaiting task (``asyncio.timeout``, ``wait_for``, ``task.cancel()``) cancels
the rpc future, which retires the call's id: a late reply is dropped, never given to another
call. A call that finds no room (the socket full, ``max_in_flight`` calls pending, a redial
under way) tries again after a short pause growing to ``ROOM_CHECK`` seconds, within its
``timeout`` (one budget for sending and the reply, as ``Peer.call``).

Serving. ``serve_rpc`` is ``links.rpc.serve`` with the server's ``loop`` set to the running
loop (unless it has one): its ``async def`` handlers run there (``links.rpc._coroutines``).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any

from .._clock import deadline_after, time_left
from .._core._conid import Addr, ConId
from .._core._status import SendStatus
from .._svc import Svc
from ..rpc._errors import CallTimeout
from ..rpc._peer import Peer, connect
from ..rpc._server import Server, serve
from ._bridge import ROOM_CHECK
from ._offloop import off_loop
from ._waker import waker_for

__all__ = ["AsyncPeer", "AsyncRpcService", "connect_rpc", "serve_rpc", "wrap_rpc"]

#: Seconds a call or notification that found no room first waits before it tries again.
FIRST_PAUSE = 0.001
_WOULD_BLOCK = SendStatus.WOULD_BLOCK


class AsyncPeer:
    """A ``links.rpc.Peer`` awaited from a coroutine: ``await call(...)``, ``call_async``,
    ``await notify(...)``, ``async with``, ``await aclose()``.

    Made by ``links.aio.connect_rpc`` or ``links.aio.wrap_rpc``; bound to the loop that was
    running then. ``peer`` is the threaded ``Peer`` underneath (threads may call on it too).
    """

    def __init__(self, peer: Peer, loop: asyncio.AbstractEventLoop) -> None:
        self.peer = peer
        self._loop = loop
        self._waker = waker_for(loop)

    @property
    def con_id(self) -> ConId | None:
        """The identity of the connection (None before it is up)."""
        return self.peer.con_id

    @property
    def in_flight(self) -> int:
        """How many calls are pending."""
        return self.peer.in_flight

    async def call(self, method: str, *params: Any, timeout: float | None = None) -> Any:
        """Call ``method(*params)`` on the peer and await its result (the loop runs meanwhile).

        Raises:
            RemoteError: the peer answered with an error. CallTimeout: no reply (or no room to
            send) within ``timeout`` seconds. ClosedError, BrokenError, CallIndeterminate: the
            connection ended. TypeError: an argument msgpack cannot encode.
        """
        return await self.call_async(method, *params, timeout=timeout)

    def call_async(self, method: str, *params: Any, timeout: float | None = None) -> asyncio.Future[Any]:
        """Send a call to ``method(*params)`` now (or as soon as there is room) and return an
        asyncio future of its result; cancelling it retires the call.

        Raises:
            At once: ClosedError, BrokenError (the connection ended), TypeError, ValueError (a
            bad ``timeout``). The future fails as ``call`` raises.
        """
        deadline = deadline_after(timeout)
        future = self.peer.try_call(method, params, timeout)
        if future is not None:
            return self._bridge(future)
        return self._loop.create_task(self._call_when_room(method, params, deadline))

    async def _call_when_room(self, method: str, params: tuple[Any, ...], deadline: float | None) -> Any:
        pause = _Pause(deadline)
        while True:
            if not await pause():
                raise CallTimeout(f"{method}: not sent, the connection had no room in time")
            future = self.peer.try_call(method, params, time_left(deadline))
            if future is not None:
                return await self._bridge(future)

    def _bridge(self, future: Future[Any]) -> asyncio.Future[Any]:
        """An asyncio future that takes ``future``'s outcome; cancelling it cancels ``future``."""
        waiting: asyncio.Future[Any] = self._loop.create_future()
        wake = self._waker.wake

        def settle() -> None:  # on the loop
            if waiting.done():  # cancelled meanwhile: the reply is nobody's
                return
            if future.cancelled():
                waiting.cancel()
                return
            error = future.exception()
            if error is not None:
                waiting.set_exception(error)
            else:
                waiting.set_result(future.result())

        def cancelled(waiting: asyncio.Future[Any]) -> None:
            if waiting.cancelled():
                future.cancel()  # retires the call's id (CallFuture.cancel)

        future.add_done_callback(lambda _: wake(settle))  # on the poll (or timer) thread
        waiting.add_done_callback(cancelled)
        return waiting

    async def notify(self, method: str, *params: Any, timeout: float | None = None) -> SendStatus:
        """Send a notification of ``method(*params)`` (no reply), awaiting room if need be.

        Returns:
            ``COMPLETED``, or ``WOULD_BLOCK`` when there was no room within ``timeout``.

        Raises:
            ClosedError, BrokenError: the connection ended; TypeError: an argument msgpack
            cannot encode.
        """
        pause = _Pause(deadline_after(timeout))
        while True:
            status = self.peer.notify(method, *params, timeout=0)
            if status is not _WOULD_BLOCK or not await pause():
                return status

    def notify_nowait(self, method: str, *params: Any) -> SendStatus:
        """Send a notification without waiting: ``COMPLETED``, or ``WOULD_BLOCK`` (no room: not sent)."""
        return self.peer.notify(method, *params, timeout=0)

    def close(self) -> None:
        """Close the connection: every pending call fails with ``ClosedError``. Idempotent."""
        self.peer.close()

    async def aclose(self) -> None:
        """``close()``, as a coroutine."""
        self.peer.close()

    async def __aenter__(self) -> AsyncPeer:
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.peer.close()

    def __repr__(self) -> str:
        return f"AsyncPeer({self.con_id}, in_flight={self.in_flight})"


class _Pause:
    """The waits of a send that found no room: short, then longer, never past ``deadline``."""

    def __init__(self, deadline: float | None) -> None:
        self.deadline = deadline
        self.seconds = FIRST_PAUSE

    async def __call__(self) -> bool:
        """Wait before the next try; False (at once) if the deadline has passed."""
        left = time_left(self.deadline)
        if left == 0.0:
            return False
        await asyncio.sleep(self.seconds if left is None else min(self.seconds, left))
        self.seconds = min(self.seconds * 2, ROOM_CHECK)
        return True


def wrap_rpc(peer: Peer) -> AsyncPeer:
    """The awaitable face of a ``links.rpc.Peer`` (from ``links.rpc.connect``, or a ``Peer``
    whose ``protocol`` a connection of yours runs, or one of ``Server.peers()``), on the
    running loop. Threads may keep calling on ``peer``.

    Raises:
        RuntimeError: no running event loop.
    """
    return AsyncPeer(peer, asyncio.get_running_loop())


async def connect_rpc(addr: str, **options: Any) -> AsyncPeer:
    """``links.rpc.connect`` (every option: ``server=``, ``max_in_flight=``, ``timeout=``,
    ``tls=``, ``reconnect=``, ``session=``, ...) on a thread of its own, the loop running
    meanwhile; the peer, awaitable on the running loop. A ``server=`` without a loop gets
    this one: its ``async def`` handlers (the peer calling back) run here.

    Raises:
        As ``links.rpc.connect``. Cancelled while it dials, the connection it then makes is closed.
    """
    loop = asyncio.get_running_loop()
    server = options.get("server")
    if server is not None and (server.loop is None or server.loop.is_closed()):
        server.loop = loop
    peer = await off_loop(lambda: connect(addr, **options), Peer.close, name="links-aio-connect")
    return AsyncPeer(peer, loop)


class AsyncRpcService:
    """A ``links.Svc`` serving a ``links.rpc.Server``'s methods, its ``async def`` handlers on
    the loop. Made by ``links.aio.serve_rpc``; ``svc`` and ``server`` are what it serves with."""

    def __init__(self, svc: Svc, server: Server, loop: asyncio.AbstractEventLoop, restore: Callable[[], None]) -> None:
        self.svc = svc
        self.server = server
        self._loop = loop
        self._restore: Callable[[], None] | None = restore

    @property
    def local_addr(self) -> Addr:
        """``(host, port)`` it listens on."""
        return self.svc.local_addr

    def peers(self) -> list[AsyncPeer]:
        """An ``AsyncPeer`` per connection served now, to call the clients back."""
        return [AsyncPeer(peer, self._loop) for peer in self.server.peers()]

    def close(self) -> None:
        """Stop accepting and close every connection; idempotent. ``aclose`` does it without
        blocking the loop."""
        self._forget_loop()
        self.svc.close()

    async def aclose(self) -> None:
        """Close the service on a thread (it waits for the poll thread to free the port)."""
        self._forget_loop()
        await off_loop(self.svc.close, name="links-aio-close")

    def _forget_loop(self) -> None:
        restore, self._restore = self._restore, None
        if restore is not None:
            restore()

    async def __aenter__(self) -> AsyncRpcService:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    def __repr__(self) -> str:
        return f"AsyncRpcService({self.svc!r}, {self.server!r})"


async def serve_rpc(addr: str, server: Server, **svc_kwargs: Any) -> AsyncRpcService:
    """``links.rpc.serve(addr, server, **svc_kwargs)`` with ``server``'s ``async def``
    handlers running on the running loop (unless ``server.loop`` names another open loop).
    Closing the service gives the server back its loop as it was.

    Raises:
        As ``links.rpc.serve`` (``OSError``: the address cannot be bound; ``ValueError``).
    """
    loop = asyncio.get_running_loop()
    before = server.loop
    if before is None or before.is_closed():
        server.loop = loop

    def restore() -> None:
        if server.loop is loop:
            server.loop = None

    try:
        svc = serve(addr, server, **svc_kwargs)
    except BaseException:
        restore()
        raise
    return AsyncRpcService(svc, server, loop, restore)
