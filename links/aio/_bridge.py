"""``Bridge``: one connection's crossing between links' poll thread and an asyncio event loop;
``LoopBridge``, the same where the loop reads the connection itself (at the end).

Receiving: the bridge is the connection's ``Callback``; on the poll thread its ``on_recv``
appends each message to an ``Inbox`` (``links.aio._inbox``, the state; its orders under
``lock``), and the loop takes them. A coroutine that finds the inbox empty waits on a future;
the poll thread wakes the loop with ``call_soon_threadsafe`` only then, once the read's
messages are all queued (``Attachment.after_read``), and once until the loop ran it
(``wake_pending``): one wake-up per read, whatever the read held.
The future carries nothing: messages are only ever taken off the queue by a running ``recv``,
so a ``recv`` cancelled while it waits (``asyncio.timeout``, ``wait_for``, a task cancelled)
cannot lose one.

Back-pressure: the inbox says when to pause and resume reading; the bridge pauses the handler
of the connection's current attachment on the poll thread (``PollHandler.pause_reading``), so
the socket fills and TCP holds the peer (a channel's stream grants no more window), and
resumes it when the loop has drained the queue to its low mark. Pause and resume are ordered
under ``lock``: a pause runs inline on the poll thread, a resume is posted to it.

Sending room: a send that got ``WOULD_BLOCK`` waits for the attachment's ``on_drained`` (the
poll thread wrote everything owed), chained after any hook already there (the multiplexer's),
and looks again every ``ROOM_CHECK`` seconds in any case (the attachment may change under a
``reconnect=``, or the backlog be written by another thread's send).

The end: the bridge listens for the connection's close (``Connection.add_listener``) and wakes
every waiter. Wake-ups go through the loop's ``LoopWaker`` (``links.aio._waker``): coalesced
across the loop's connections, and dropped, never raised on the poll thread, once the loop
is closed.
"""

from __future__ import annotations

import asyncio
import threading
from contextlib import suppress
from typing import TYPE_CHECKING, Any

from .._callbacks import Callback
from .._core._conid import ConId
from ._inbox import EMPTY, PAUSE, RESUME, WAKE, Inbox
from ._looppoll import LoopPoller
from ._waker import waker_for

if TYPE_CHECKING:
    from .._attachment import Attachment
    from .._connection import Connection

__all__ = ["Bridge", "LoopBridge", "bridge_for", "ROOM_CHECK"]

#: Seconds a send waiting for room sleeps at most before it tries again.
ROOM_CHECK = 0.1


class Bridge(Callback):
    """The inbox of one connection and the loop-side futures that wait on it."""

    def __init__(self, loop: asyncio.AbstractEventLoop, con: Connection, max_queue: int) -> None:
        self.loop = loop
        self.con = con
        self.inbox = Inbox(max_queue)
        self._waker = waker_for(loop)
        self.lock = threading.Lock()
        self._waiters: list[asyncio.Future[None]] = []  # loop only
        self._room: list[asyncio.Future[None]] = []  # loop only
        self._want_room = False  # under lock: a send waits for room
        self._paused: list[Any] = []  # under lock: handlers paused, to resume
        self._hooked: Attachment | None = None  # the attachment whose on_drained tells us
        self._wake_due = False  # poll thread: a wake-up to post once the current read is dispatched

    def attach(self) -> None:
        """Start: listen for the connection's end (at once if it ended already)."""
        self.con.add_listener(self._closed)

    # -- the poll thread ------------------------------------------------------------------

    def on_recv(self, con_id: ConId, msg: Any) -> None:
        """Poll thread: queue ``msg``; wake the loop (once per read) or pause reading. The
        append needs no lock (a deque's is atomic); the orders do (``Inbox.needs_orders``)."""
        inbox = self.inbox
        queue = inbox.queue
        queue.append(msg)
        if not inbox.waiting and len(queue) < inbox.high:  # Inbox.needs_orders, spelled out: per message
            return
        with self.lock:
            orders = inbox.pushed()
            if orders & PAUSE or (inbox.paused and len(inbox) >= inbox.high):
                self._pause()  # also a new attachment's reader, after a reconnect
        if orders & WAKE:
            self._wake_after_read()

    def _wake_after_read(self) -> None:
        """Poll thread: post the wake-up once the reader has dispatched this whole read
        (``Attachment.after_read``): posting it at once would let the loop take the GIL at
        the pipe write and drain the queue message by message as the read is dispatched."""
        att = self.con.attachment
        if att is None:
            self._post(self._woken)
            return
        if att.after_read is not self._after_read:
            att.after_read = self._after_read
        self._wake_due = True

    def _after_read(self) -> None:
        if self._wake_due:
            self._wake_due = False
            self._post(self._woken)

    def _pause(self) -> None:
        """Lock held: stop reading the current attachment (inline on the poll thread)."""
        att = self.con.attachment
        if att is None or att.poll is None or not att.reading:
            return
        pair = (att.poll, att.handler)
        if any(handler is pair[1] for _, handler in self._paused):
            return
        with suppress(RuntimeError):  # the poll handler shut down: nothing reads it anyway
            att.poll.pause_reading(att.handler)
            self._paused.append(pair)

    def _resume(self) -> None:
        """Lock held: read again what ``_pause`` stopped (posted to the poll thread)."""
        paused, self._paused = self._paused, []
        for poll, handler in paused:
            with suppress(RuntimeError):
                poll.pause_reading(handler, False)

    def _closed(self, con: Connection) -> None:
        """Any thread: the connection ended for good; wake every waiter."""
        with self.lock:
            orders = self.inbox.close(con.error())
            room, self._want_room = self._want_room, False
        if orders & WAKE or self._wake_due:  # a wake-up due after a read that ended it: now
            self._wake_due = False
            self._post(self._woken)
        if room:
            self._post(self._room_ready)

    def _drained(self) -> None:
        """Poll thread: the attachment owes nothing any more; a waiting send may go on."""
        with self.lock:
            room, self._want_room = self._want_room, False
        if room:
            self._post(self._room_ready)

    def _post(self, fn: Any) -> None:
        self._waker.wake(fn)  # coalesced with other connections' (a closed loop drops it)

    # -- the loop -------------------------------------------------------------------------

    def take(self) -> Any:
        """The next queued message, or ``EMPTY`` (then ``waiting`` is set: wait on ``wait()``).

        Raises:
            LinksError: the queue is empty and the connection ended (fresh each call).
        """
        inbox = self.inbox
        if not inbox.paused:  # the common case, without the lock (see Inbox.take)
            try:
                return inbox.queue.popleft()
            except IndexError:
                pass
        with self.lock:
            msg, orders = inbox.take()
            if msg is EMPTY:
                if inbox.ended:
                    raise self.con.error()
                msg = inbox.wait()
            elif orders & RESUME:
                self._resume()
        return msg

    async def wait(self) -> None:
        """Wait for a wake-up (a message, or the end) after ``take`` returned ``EMPTY``."""
        fut = self.loop.create_future()
        self._waiters.append(fut)
        try:
            await fut
        finally:
            if not fut.done():  # cancelled: nothing was taken for it
                with suppress(ValueError):
                    self._waiters.remove(fut)

    def _woken(self) -> None:
        with self.lock:
            self.inbox.woken()
        waiters, self._waiters = self._waiters, []
        for fut in waiters:
            if not fut.done():
                fut.set_result(None)

    def want_room(self) -> asyncio.Future[None]:
        """A future done when the connection may have room again (or ended). Asked for
        *before* the send is tried again, so a drain in between is not missed."""
        att = self.con.attachment
        if att is not None and att is not self._hooked:
            self._hooked = att
            before = att.on_drained

            def drained() -> None:
                if before is not None:
                    before()
                self._drained()

            att.on_drained = drained
        fut = self.loop.create_future()
        self._room.append(fut)
        with self.lock:
            self._want_room = not self.inbox.ended
            if self.inbox.ended:
                fut.set_result(None)
        return fut

    def _room_ready(self) -> None:
        room, self._room = self._room, []
        for fut in room:
            if not fut.done():
                fut.set_result(None)

    def drop_room(self, fut: asyncio.Future[None]) -> None:
        """A waiting send is done with ``fut`` (room came, the time ran out, or it was cancelled)."""
        with suppress(ValueError):
            self._room.remove(fut)


class LoopBridge(Bridge):
    """The bridge of a connection the loop itself reads (``links.aio._looppoll``): its callback
    runs on the loop's thread, so a read that finds a coroutine waiting sets the waiting
    futures there and then (the coroutines resume once the read's messages are all queued, the
    read being one callback of the loop), and a drained socket wakes a send waiting for room
    the same way. Only what comes from another thread (a close, or a read after the loop ended
    and the connection went on elsewhere) still goes through the ``LoopWaker``."""

    def __init__(self, loop: asyncio.AbstractEventLoop, con: Connection, max_queue: int) -> None:
        super().__init__(loop, con, max_queue)
        self._ident = threading.get_ident()  # made on the loop's thread (wrap, or a server's join)

    def _wake_after_read(self) -> None:
        self._post(self._woken)

    def _post(self, fn: Any) -> None:
        if threading.get_ident() == self._ident and not self.loop.is_closed():
            fn()  # on the loop: the futures are set now, their coroutines run after this callback
        else:
            self._waker.wake(fn)


def bridge_for(loop: asyncio.AbstractEventLoop, con: Connection, max_queue: int) -> Bridge:
    """A ``LoopBridge`` for a connection that ``loop`` reads itself, else a ``Bridge``."""
    poll = con._poll()
    if isinstance(poll, LoopPoller) and poll.loop is loop:
        return LoopBridge(loop, con, max_queue)
    return Bridge(loop, con, max_queue)
