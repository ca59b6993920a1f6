"""``Pool`` and ``SvcSender``: the live connections of a service, and sending over them.

The pool is written by the accepting thread (the poll thread once the acceptor is spawned)
and by whichever thread ends a connection (a close listener removes it), and read by senders
on user threads, so every access holds one condition's lock. Round-robin keeps a cursor that
survives joins and leaves.

``SvcSender`` is the sending side of a service: round-robin ``send``, ``send_to(con_id)`` and
``broadcast``. A send that finds the pool empty waits for a connection to join, up to its
timeout, then answers ``WOULD_BLOCK``: a service that starts before its clients is normal.
A connection that breaks during a round-robin send is dropped and the next one is tried.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from ._clock import deadline_after, time_left
from ._core._conid import ConId
from ._core._status import SendStatus
from ._errors import BrokenError, ClosedError
from ._recver import CltRecver
from ._ref import released_while_waiting
from ._threads import on_runtime_thread
from ._sender import CltSender

__all__ = ["Pool", "SvcSender"]


class Pool:
    """Connections of one service, in join order, with a round-robin cursor."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._entries: dict[ConId, CltSender] = {}
        # The receivers of pooled connections not spawned yet (read by Svc.recv); a spawned
        # one has none, and keeps no pair either (thousands of channels pool at once).
        self._recvers: dict[ConId, CltRecver] = {}
        self._cursor = 0
        self._closed = False

    def add(self, recver: CltRecver | None, sender: CltSender) -> None:
        with self._cond:
            con_id = sender.con_id
            self._entries[con_id] = sender
            if recver is not None:
                self._recvers[con_id] = recver
            else:
                self._recvers.pop(con_id, None)
            self._cond.notify_all()

    def remove(self, con_id: ConId) -> None:
        with self._cond:
            self._entries.pop(con_id, None)
            self._recvers.pop(con_id, None)
            self._cond.notify_all()

    def get(self, con_id: ConId) -> CltSender | None:
        with self._cond:
            return self._entries.get(con_id)

    def recvers(self) -> list[CltRecver]:
        """The receivers not spawned yet, in round-robin order (the cursor then moves on by one)."""
        with self._cond:
            return self._rotated(list(self._recvers.values()))

    def take_recvers(self) -> list[CltRecver]:
        """The receivers not spawned yet, forgotten here: the caller spawns them."""
        with self._cond:
            recvers, self._recvers = list(self._recvers.values()), {}
            return recvers

    def con_ids(self) -> list[ConId]:
        with self._cond:
            return list(self._entries)

    def senders(self) -> list[CltSender]:
        with self._cond:
            return list(self._entries.values())

    def rotation(self) -> list[CltSender]:
        """Every sender, starting at the round-robin cursor (which then moves on by one)."""
        with self._cond:
            return self._rotated(list(self._entries.values()))

    def _rotated(self, items: list[Any]) -> list[Any]:
        """Lock held: ``items`` from the cursor on, moving the cursor on by one."""
        if not items:
            return items
        start = self._cursor % len(items)
        self._cursor = start + 1
        return items[start:] + items[:start]

    def wait_nonempty(self, deadline: float | None) -> bool:
        with self._cond:
            while not self._entries and not self._closed:
                left = time_left(deadline)
                if left == 0.0:
                    return False
                self._cond.wait(left)
            return bool(self._entries)

    def close(self) -> list[CltSender]:
        """Mark closed (waiters return) and hand back every sender for closing."""
        with self._cond:
            self._closed = True
            senders = list(self._entries.values())
            self._recvers = {}
            self._cond.notify_all()
        return senders

    @property
    def closed(self) -> bool:
        return self._closed

    def __len__(self) -> int:
        return len(self._entries)


class SvcSender:
    """Sends over a service's live pool. Close it to close the whole service."""

    def __init__(self, pool: Pool, close: Callable[[], None], name: str) -> None:
        self._pool = pool
        self._close = close
        self.name = name

    @property
    def con_id(self) -> str:
        """The service's name (a ``SvcSender`` speaks for many connections, so it has no ``ConId``)."""
        return self.name

    def con_ids(self) -> list[ConId]:
        """The ``ConId`` of every connection in the pool now, in join order (a new list)."""
        return self._pool.con_ids()

    def __len__(self) -> int:
        return len(self._pool)

    def is_connected(self) -> bool:
        """True while at least one pooled connection is up."""
        return any(s.is_connected() for s in self._pool.senders())

    def send(self, msg: Any, timeout: float | None = None) -> SendStatus:
        """Send to the next connection in round-robin order (a connected one first, with sessions).

        Args:
            timeout: as ``Clt.send``; it also bounds the wait for a first connection to join.

        Returns:
            ``SendStatus.COMPLETED``; ``SendStatus.WOULD_BLOCK`` if no connection joined within
            ``timeout``, or the chosen one had no room in time. A connection found broken is
            skipped for the next one.

        Raises:
            ClosedError: the service was closed.
            ValueError, TypeError: ``timeout`` is not a usable number of seconds.
            Whatever the messenger or a hook raises for this message (as ``Clt.send``).
        """
        return self._round_robin(lambda s, t: s.send(msg, t), timeout)

    def send_many(self, msgs: Iterable[Any], timeout: float | None = None) -> SendStatus:
        """Send a batch, in one write, to the next connection in round-robin order.

        Returns:
            ``SendStatus.COMPLETED`` (all taken) or ``SendStatus.WOULD_BLOCK`` (none taken), as ``send``.

        Raises:
            ClosedError: the service was closed.
            ValueError, TypeError: ``timeout`` is not a usable number of seconds.
        """
        batch = list(msgs)
        return self._round_robin(lambda s, t: s.send_many(batch, t), timeout)

    def send_to(self, con_id: ConId, msg: Any, timeout: float | None = None) -> SendStatus:
        """Send to the connection ``con_id`` (from a callback's ``on_recv`` or ``con_ids()``).

        Returns:
            ``SendStatus.COMPLETED`` or ``SendStatus.WOULD_BLOCK``, as ``Clt.send``.

        Raises:
            BrokenError: ``con_id`` is not in the pool (it ended, or never joined), reason
                ``unknown_connection``; or it broke during this send.
            ClosedError: the service was closed.
            ValueError, TypeError: ``timeout`` is not a usable number of seconds.
        """
        sender = self._pool.get(con_id)
        if sender is None:
            if self._pool.closed:
                raise ClosedError(f"{self.name} is closed")
            raise BrokenError(f"{con_id} is not connected to {self.name}", "unknown_connection")
        return sender.send(msg, timeout)

    def broadcast(self, msg: Any, timeout: float | None = None) -> int:
        """Send ``msg`` to every connection in the pool.

        One slow connection never delays the others: every connection is offered the message
        without waiting first, and only those that had no room are waited on, each for what
        remains of the one ``timeout``.

        Returns:
            How many connections took it (0 for an empty pool); broken ones are skipped.

        Raises:
            ValueError, TypeError: ``timeout`` is not a usable number of seconds.
        """
        deadline = deadline_after(timeout)
        taken = 0
        refused = []
        for sender in self._pool.senders():
            status = _try(sender, msg, 0)
            if status is SendStatus.COMPLETED:
                taken += 1
            elif status is SendStatus.WOULD_BLOCK and timeout != 0:
                refused.append(sender)
        for sender in refused:
            if _try(sender, msg, time_left(deadline)) is SendStatus.COMPLETED:
                taken += 1
        return taken

    def close(self) -> None:
        """Close the whole service: stop accepting and close every pooled connection. Idempotent."""
        self._close()

    def __repr__(self) -> str:
        return f"SvcSender({self.name!r}, connections={len(self._pool)})"

    def _round_robin(self, send: Callable[[CltSender, float | None], SendStatus], timeout: float | None) -> SendStatus:
        deadline = deadline_after(timeout)
        while True:
            if self._pool.closed:
                raise ClosedError(f"{self.name} is closed")
            for sender in _live_first(self._pool.rotation()):
                try:
                    return send(sender, time_left(deadline))
                except (BrokenError, ClosedError):
                    continue  # dropped from the pool by its close; try the next one
            if on_runtime_thread():  # only the poll thread adds to the pool: never wait for it there
                return SendStatus.WOULD_BLOCK
            with released_while_waiting():
                joined = self._pool.wait_nonempty(deadline)
            if not joined:
                if self._pool.closed:
                    raise ClosedError(f"{self.name} is closed")
                return SendStatus.WOULD_BLOCK


def _try(sender: CltSender, msg: Any, timeout: float | None) -> SendStatus | None:
    """``sender.send``; None when that connection is gone (its close removed it already)."""
    try:
        return sender.send(msg, timeout)
    except (BrokenError, ClosedError):
        return None


def _live_first(rotation: list[CltSender]) -> Iterator[CltSender]:
    """The rotation's senders, the connected ones first: a session waiting detached for its
    client (its sends only go to a replay buffer) is picked only when no live one is left."""
    later = []
    for sender in rotation:
        if sender.is_connected():
            yield sender
        else:
            later.append(sender)
    yield from later
