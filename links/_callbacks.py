"""Callbacks: what the application sees of traffic, per connection.

``on_recv(con_id, msg)`` runs after ``Protocol.on_recv`` for every message received;
``on_sent(con_id, msg)`` after every message written. On a spawned receiver ``on_recv`` runs
on the poll thread: keep it short and never block there (hand work to a queue instead).

Built-ins, combined with ``+`` (``store + links.LoggerCallback()`` calls both, in order):

* ``LoggerCallback``: a structlog line per message (``callback.recv`` / ``callback.sent``).
* ``CounterCallback``: counts both directions; ``wait_recv(n, timeout)`` waits for a count.
* ``StoreCallback``: keeps every message in both directions; ``find_recv(pred, timeout)``.
* ``DevNullCallback``: ignores everything (the default).
* ``DispatchCallback``: routes received messages to functions by type or predicate.

Waiting uses a ``threading.Condition`` with a deadline: never a sleep loop.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ._clock import seconds
from ._core._conid import ConId
from ._log import get_logger

__all__ = [
    "Callback",
    "ChainCallback",
    "LoggerCallback",
    "CounterCallback",
    "StoreCallback",
    "Record",
    "DevNullCallback",
    "DispatchCallback",
]


class Callback:
    """Base class: both hooks do nothing. ``a + b`` chains callbacks."""

    def on_recv(self, con_id: ConId, msg: Any) -> None:
        """``msg`` arrived on connection ``con_id`` (after ``Protocol.on_recv``, before ``send_reply``).

        On a spawned receiver this runs on the poll thread: return quickly and never block. An
        exception raised here reaches the ``recv`` caller; on a spawned receiver it ends that
        connection (``BrokenError``, reason ``recver_failed``), never the poll thread. The base
        class does nothing; returns None.
        """

    def on_sent(self, con_id: ConId, msg: Any) -> None:
        """``msg`` was taken for sending on connection ``con_id`` (after ``Protocol.on_sent``).

        Runs on the sending thread (the poll or timer thread for replies and heartbeats); an
        exception raised here reaches that ``send``'s caller. The base class does nothing;
        returns None.
        """
        pass

    def __add__(self, other: Callback) -> ChainCallback:
        """A ``ChainCallback`` that calls this callback, then ``other``."""
        return ChainCallback(self, other)


class ChainCallback(Callback):
    """Calls each callback in order."""

    def __init__(self, *callbacks: Callback) -> None:
        flat: list[Callback] = []
        for cb in callbacks:
            flat.extend(cb.callbacks if isinstance(cb, ChainCallback) else (cb,))
        self.callbacks = tuple(flat)

    def on_recv(self, con_id: ConId, msg: Any) -> None:
        """Call ``on_recv`` of each chained callback, in order; the first that raises stops the rest."""
        for cb in self.callbacks:
            cb.on_recv(con_id, msg)

    def on_sent(self, con_id: ConId, msg: Any) -> None:
        """Call ``on_sent`` of each chained callback, in order; the first that raises stops the rest."""
        for cb in self.callbacks:
            cb.on_sent(con_id, msg)

    def __repr__(self) -> str:
        return " + ".join(repr(cb) for cb in self.callbacks)


class DevNullCallback(Callback):
    """Ignores every message in both directions: the callback of a connection given none."""

    def __repr__(self) -> str:
        return "DevNullCallback()"


class LoggerCallback(Callback):
    """Logs each message as ``callback.recv`` / ``callback.sent`` with ``con_id`` and ``msg``.

    Args:
        level: the structlog method to use (``"info"``, ``"debug"``, ...).
    """

    def __init__(self, level: str = "info") -> None:
        self.level = level
        self._log = getattr(get_logger("callback"), level)

    def on_recv(self, con_id: ConId, msg: Any) -> None:
        """Log ``callback.recv`` with ``con_id`` and ``msg`` at the chosen level. Never raises."""
        self._log("callback.recv", con_id=str(con_id), msg=msg)

    def on_sent(self, con_id: ConId, msg: Any) -> None:
        """Log ``callback.sent`` with ``con_id`` and ``msg`` at the chosen level. Never raises."""
        self._log("callback.sent", con_id=str(con_id), msg=msg)

    def __repr__(self) -> str:
        return f"LoggerCallback(level={self.level!r})"


def _wait_for(cond: threading.Condition, predicate: Callable[[], Any], timeout: float | None) -> Any:
    """``cond.wait_for`` with a monotonic deadline; returns the predicate's last value."""
    timeout = seconds(timeout)
    with cond:
        return cond.wait_for(predicate, timeout)


class CounterCallback(Callback):
    """Counts messages in each direction; threads can wait for a count.

    Counting is on the hot path (every message), so it wakes waiters only when there are
    some: a ``notify_all`` per message with nobody waiting cost a third of the receive path.
    """

    def __init__(self) -> None:
        # Counting takes the C lock directly (``with`` on a Condition runs Python code); the
        # condition shares that lock, so notifying under it is still correct.
        self._lock = threading.Lock()
        self._cond = threading.Condition(self._lock)
        self._waiters = 0
        self.recv_count = 0
        self.sent_count = 0

    def on_recv(self, con_id: ConId, msg: Any) -> None:
        """Count one received message (``recv_count``) and wake ``wait_recv`` callers. Never raises."""
        with self._lock:
            self.recv_count += 1
            if self._waiters:
                self._cond.notify_all()

    def on_sent(self, con_id: ConId, msg: Any) -> None:
        """Count one sent message (``sent_count``) and wake ``wait_sent`` callers. Never raises."""
        with self._lock:
            self.sent_count += 1
            if self._waiters:
                self._cond.notify_all()

    def wait_recv(self, count: int, timeout: float | None = None) -> bool:
        """Wait until ``count`` messages were received in all, at most ``timeout`` seconds (None: no limit).

        Returns:
            True once ``recv_count >= count``; False if the timeout passed first.

        Raises:
            ValueError, TypeError: ``timeout`` is not a usable number of seconds.
        """
        return self._wait(lambda: self.recv_count >= count, timeout)

    def wait_sent(self, count: int, timeout: float | None = None) -> bool:
        """Wait until ``count`` messages were sent in all, at most ``timeout`` seconds (None: no limit).

        Returns:
            True once ``sent_count >= count``; False if the timeout passed first.

        Raises:
            ValueError, TypeError: ``timeout`` is not a usable number of seconds.
        """
        return self._wait(lambda: self.sent_count >= count, timeout)

    def _wait(self, predicate: Callable[[], bool], timeout: float | None) -> bool:
        timeout = seconds(timeout)
        with self._cond:
            self._waiters += 1
            try:
                return bool(self._cond.wait_for(predicate, timeout))
            finally:
                self._waiters -= 1

    def __repr__(self) -> str:
        return f"CounterCallback(recv={self.recv_count}, sent={self.sent_count})"


@dataclass(frozen=True, slots=True)
class Record:
    """One stored message: direction (``"recv"`` / ``"sent"``), connection, message, time."""

    direction: str
    con_id: ConId
    msg: Any
    at: float


class StoreCallback(Callback):
    """Keeps every message in both directions, in order, and lets threads wait for one."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self.records: list[Record] = []

    def on_recv(self, con_id: ConId, msg: Any) -> None:
        """Keep a received message (a ``Record`` in ``records``) and wake waiting finders. Never raises."""
        self._add("recv", con_id, msg)

    def on_sent(self, con_id: ConId, msg: Any) -> None:
        """Keep a sent message (a ``Record`` in ``records``) and wake waiting finders. Never raises."""
        self._add("sent", con_id, msg)

    def _add(self, direction: str, con_id: ConId, msg: Any) -> None:
        with self._cond:
            self.records.append(Record(direction, con_id, msg, time.monotonic()))
            self._cond.notify_all()

    def recv_msgs(self) -> list[Any]:
        """Every message received so far, oldest first (a new list; the store keeps them)."""
        with self._cond:
            return [r.msg for r in self.records if r.direction == "recv"]

    def sent_msgs(self) -> list[Any]:
        """Every message sent so far, oldest first (a new list; the store keeps them)."""
        with self._cond:
            return [r.msg for r in self.records if r.direction == "sent"]

    def find_recv(self, predicate: Callable[[Any], bool] | None = None, timeout: float | None = None) -> Any:
        """The first received message that matches ``predicate`` (any message, if None), waiting
        up to ``timeout`` seconds (None: no limit) for one to arrive.

        Returns:
            The message, or None if none matched in time.

        Raises:
            ValueError, TypeError: ``timeout`` is not a usable number of seconds.
        """
        return self._find("recv", predicate, timeout)

    def find_sent(self, predicate: Callable[[Any], bool] | None = None, timeout: float | None = None) -> Any:
        """The first sent message that matches ``predicate`` (any message, if None), waiting
        up to ``timeout`` seconds (None: no limit) for one to be sent.

        Returns:
            The message, or None if none matched in time.

        Raises:
            ValueError, TypeError: ``timeout`` is not a usable number of seconds.
        """
        return self._find("sent", predicate, timeout)

    def wait_recv_count(self, count: int, timeout: float | None = None) -> bool:
        """Wait until ``count`` messages were received in all, at most ``timeout`` seconds.

        Returns:
            True once that many are stored; False if the timeout passed first.

        Raises:
            ValueError, TypeError: ``timeout`` is not a usable number of seconds.
        """
        return bool(_wait_for(self._cond, lambda: sum(r.direction == "recv" for r in self.records) >= count, timeout))

    def _find(self, direction: str, predicate: Callable[[Any], bool] | None, timeout: float | None) -> Any:
        match = predicate or (lambda _msg: True)
        seen = 0

        def scan() -> Record | None:
            nonlocal seen
            for r in self.records[seen:]:
                if r.direction == direction and match(r.msg):
                    return r
            seen = len(self.records)
            return None

        found = _wait_for(self._cond, scan, timeout)
        return found.msg if found is not None else None

    def clear(self) -> None:
        """Forget every stored message (``records`` becomes empty). Returns None."""
        with self._cond:
            self.records.clear()

    def __len__(self) -> int:
        return len(self.records)

    def __repr__(self) -> str:
        return f"StoreCallback({len(self.records)} records)"


class DispatchCallback(Callback):
    """Routes each received message to the handlers whose filter matches it.

    A filter is a type (``isinstance``) or a predicate on the message::

        router = links.DispatchCallback()

        @router.on(Ping)
        def ping(con_id, msg): ...

        @router.on(lambda m: isinstance(m, dict) and m.get("type") == "order")
        def order(con_id, msg): ...

    Every matching handler runs, in registration order; ``otherwise`` runs when none match.
    """

    def __init__(self, otherwise: Callable[[ConId, Any], None] | None = None) -> None:
        self._routes: list[tuple[Callable[[Any], bool], Callable[[ConId, Any], None]]] = []
        self.otherwise = otherwise

    def on(self, filter: type | Callable[[Any], bool]) -> Callable[[Callable[[ConId, Any], None]], Callable[[ConId, Any], None]]:
        """Register the decorated function as a handler of the received messages ``filter`` matches.

        Args:
            filter: a type (the message is an instance of it) or a predicate on the message.

        Returns:
            A decorator that registers ``handler(con_id, msg)`` and returns it unchanged.
        """
        match = (lambda msg: isinstance(msg, filter)) if isinstance(filter, type) else filter

        def register(handler: Callable[[ConId, Any], None]) -> Callable[[ConId, Any], None]:
            self._routes.append((match, handler))
            return handler

        return register

    def on_recv(self, con_id: ConId, msg: Any) -> None:
        """Call every handler whose filter matches ``msg``, in registration order, or
        ``otherwise`` when none does. A handler's exception propagates (ending that connection, on a
        spawned receiver).
        """
        handled = False
        for match, handler in self._routes:
            if match(msg):
                handler(con_id, msg)
                handled = True
        if not handled and self.otherwise is not None:
            self.otherwise(con_id, msg)

    def __repr__(self) -> str:
        return f"DispatchCallback({len(self._routes)} routes)"
