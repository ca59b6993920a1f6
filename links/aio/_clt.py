"""``AsyncClt``: a links connection as awaitables; ``connect`` and ``wrap`` make one.

``connect`` dials with the running loop's ``LoopPoller`` as the connection's poll handler
(``links.aio._looppoll``), so the loop reads it and its ``LoopBridge`` hands each message to
the waiting coroutine on the loop's thread. ``wrap`` spawns a threaded connection's receiver
on its own poll handler (a poll thread, for a ``links.Clt`` or a channel) and a ``Bridge``
carries the messages across (``links.aio._bridge``). Either way a send writes from the
loop's thread without ever waiting on the socket (``timeout=0``), and a send that finds no
room awaits it, woken when the socket drains. Nothing here blocks the loop: dialing and
the first handshakes run on a thread of their own (``links.aio._offloop``).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterable
from typing import Any

from .._callbacks import Callback, DevNullCallback
from .._clt import Clt
from .._connection import Connection
from .._core._conid import Addr, ConId
from .._core._status import SendStatus
from .._errors import BrokenError, ClosedError
from .._sender import CltSender
from ._bridge import ROOM_CHECK, Bridge, LoopBridge, bridge_for
from ._inbox import EMPTY, Inbox
from ._looppoll import loop_poller
from ._offloop import off_loop

__all__ = ["AsyncClt", "connect", "wrap", "DEFAULT_MAX_QUEUE"]

#: Messages queued for a coroutine that does not read before links stops reading its socket.
DEFAULT_MAX_QUEUE = 1024

_WOULD_BLOCK = SendStatus.WOULD_BLOCK


class AsyncClt:
    """One connection, awaitable: ``send``, ``recv``, ``async for``, ``async with``, ``aclose``.

    Made by ``links.aio.connect``, ``links.aio.wrap`` or handed to a ``links.aio.serve``
    handler; bound to the event loop that was running then. ``sender`` is the threaded
    ``CltSender`` of the same connection, for threads that share it.
    """

    def __init__(self, sender: CltSender, bridge: Bridge) -> None:
        self._sender = sender
        self._bridge = bridge
        self._con: Connection = bridge.con
        # Sends after the first in one turn of the loop are queued, not written (see send).
        self._cork: Any = bridge.loop.call_soon if isinstance(bridge, LoopBridge) else None
        self._corked = False

    @property
    def con_id(self) -> ConId:
        """This connection's identity (role, name, addresses; ``str()`` for logs)."""
        return self._con.con_id

    @property
    def sender(self) -> CltSender:
        """The connection's ``CltSender``: threads may send on it (closing it closes this)."""
        return self._sender

    @property
    def queued(self) -> int:
        """Messages received and not yet taken by ``recv`` (bounded by ``max_queue`` plus one read)."""
        return len(self._bridge.inbox)

    def is_connected(self) -> bool:
        """Whether the connection is up now (as ``Clt.is_connected``); never raises."""
        return self._con.is_connected()

    def send_nowait(self, msg: Any) -> SendStatus:
        """Send ``msg`` without waiting: ``COMPLETED`` (links has it; the poll thread writes what
        the socket did not take) or ``WOULD_BLOCK`` (none of it was taken: no room).

        Raises:
            As ``Clt.send``: ``ClosedError``, ``BrokenError``, ``FrameTooLarge``, what the
            messenger raises.
        """
        return self._con.send_now(msg, None, None, 0)

    async def send(self, msg: Any) -> None:
        """Send ``msg``, awaiting room when the socket and ``max_outbound`` are full (the
        loop runs meanwhile; the poll thread writes). Cancelled while it waits, nothing of
        ``msg`` was sent.

        On a connection the loop drives (``connect``, ``serve``), the first send of a turn of
        the loop is written at once and the sends that follow it in the same turn (a coroutine
        sending without waiting in between) are queued behind it, in order with every other
        send, and written together when the loop turns (or at once, once ``max_outbound`` is
        queued): one system call for a burst, no wait added to a lone message. Either way
        links has the message when this returns, as after a ``COMPLETED`` send.

        Raises:
            As ``send_nowait``.
        """
        con = self._con
        if self._corked:
            if con.send_later(msg):
                return
        elif self._cork is not None:
            self._corked = True
            self._cork(self._uncork)
        if con.send_now(msg, None, None, 0) is _WOULD_BLOCK:
            await self._await_room(lambda: con.send_now(msg, None, None, 0))

    def _uncork(self) -> None:
        self._corked = False

    async def send_many(self, msgs: Iterable[Any]) -> None:
        """Send a batch in one write (all taken, or none and it awaits room), as ``send``."""
        batch = list(msgs)
        if self._sender.send_many(batch, 0) is _WOULD_BLOCK:
            await self._await_room(lambda: self._sender.send_many(batch, 0))

    async def _await_room(self, attempt: Any) -> None:
        bridge = self._bridge
        while True:
            room = bridge.want_room()  # before trying again: a drain in between is not missed
            try:
                if attempt() is not _WOULD_BLOCK:
                    return
                await asyncio.wait((room,), timeout=ROOM_CHECK)
            finally:
                bridge.drop_room(room)

    async def recv(self) -> Any:
        """The next message, in order, awaited without blocking the loop.

        Cancelled while it waits (``asyncio.timeout``, ``wait_for``), it takes nothing: the
        message stays for the next ``recv``.

        Raises:
            BrokenError: the peer closed or broke the connection, after every message it sent
                before that was received (``.reason``: ``peer_closed``, or ``frame.too_large``
                and ``frame.decode_failed`` for a hostile frame, ...).
            ClosedError: it was closed on this side.
        """
        bridge = self._bridge
        while True:
            msg = bridge.take()
            if msg is not EMPTY:
                return msg
            await bridge.wait()

    def __aiter__(self) -> AsyncIterator[Any]:
        return self

    async def __anext__(self) -> Any:
        """The next message; the iteration ends when the connection does."""
        bridge = self._bridge  # recv() spelled out: one coroutine per message, not two
        inbox = bridge.inbox
        if inbox.queue and not inbox.paused:  # Bridge.take's lock-free case, without the call
            return inbox.queue.popleft()  # only this loop takes: it cannot be empty now
        try:
            while True:
                msg = bridge.take()
                if msg is not EMPTY:
                    return msg
                await bridge.wait()
        except (BrokenError, ClosedError):
            raise StopAsyncIteration from None

    def close(self) -> None:
        """Close the connection (as ``Clt.close``: goodbye, then the socket); wakes every
        waiting ``recv`` and ``send`` (they raise ``ClosedError``). Idempotent; never waits
        on the peer."""
        self._con.close()

    async def aclose(self) -> None:
        """``close()``, as a coroutine (for ``contextlib.aclosing`` and symmetry)."""
        self.close()

    async def __aenter__(self) -> AsyncClt:
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"AsyncClt({self._con.con_id}, connected={self._con.is_connected()}, queued={self.queued})"


def wrap(clt: Clt, *, max_queue: int = DEFAULT_MAX_QUEUE) -> AsyncClt:
    """The awaitable face of a connection made with the threaded API (a ``links.Clt``, or a
    ``links.mux`` channel): its receiver moves to the poll thread, messages reach the running
    loop (after the connection's own callback), and ``clt`` is spent as after
    ``into_sender_with_spawned_recver``; threads keep sending through ``.sender``.

    Call it from a coroutine: the running loop is the one messages go to.

    Args:
        max_queue: messages received and not yet taken before links stops reading the
            connection (TCP then holds the peer); it reads again at half that.

    Raises:
        RuntimeError: no running event loop. ClosedError: ``clt`` was split or spawned already.
        ValueError: ``max_queue`` is not a whole number >= 1.
    """
    loop = asyncio.get_running_loop()
    con = clt._con
    bridge = bridge_for(loop, con, max_queue)
    clt._halves()  # raises ClosedError if it was split or spawned, before anything changes
    with con.changed:  # read during its handshake and kept for recv(): they come first
        for msg in con.pending:
            bridge.inbox.push(msg)
    con.callback = bridge if isinstance(con.callback, DevNullCallback) else con.callback + bridge
    sender = clt.into_sender_with_spawned_recver()
    bridge.attach()
    return AsyncClt(sender, bridge)


async def connect(
    addr: str | Addr,
    *,
    protocol: Any,
    callback: Callback | None = None,
    max_queue: int = DEFAULT_MAX_QUEUE,
    **options: Any,
) -> AsyncClt:
    """Connect (``links.Clt.connect`` with every one of its options, on a thread of its own:
    the loop runs meanwhile) and return the connection as an ``AsyncClt`` on the running loop.

    Args:
        addr, protocol, callback, **options: as ``links.Clt.connect`` (``timeout``,
            ``reconnect``, ``session``, ``tls``, ``max_outbound``, ...).
        max_queue: as ``wrap``.

    Raises:
        As ``links.Clt.connect`` (``ConnectTimeout``, ``TLSError``, ``ValueError``, ...).
        Cancelled while it dials, the connection it then makes is closed.
    """
    Inbox(max_queue)  # raises ValueError for an unusable max_queue, before dialing
    if options.get("poll_handler") is None:  # the loop reads and writes it (links.aio._looppoll)
        options["poll_handler"] = loop_poller()
    clt = await off_loop(lambda: Clt.connect(addr, protocol=protocol, callback=callback, **options), Clt.close)
    try:
        return wrap(clt, max_queue=max_queue)
    except BaseException:
        clt.close()
        raise
