"""``LazyCondition``: a ``threading.Condition`` whose waiting machinery is made by its first waiter.

Why: every connection (a TCP connection, and every channel of ``links.mux``) has one condition
(``Connection.changed``) that most connections never wait on: it guards state changes, and a
thread waits on it only between attachments (a redial, a session's resume) or while a
handshake runs. A ``threading.Condition`` costs about 1.3 KB as soon as it exists (its
waiters' deque and five bound methods), more than the rest of an idle channel together
should. This one is a reentrant lock until somebody waits: the ``Condition`` over that same
lock is made then, under the lock, so a notify that comes before any wait has nobody to
wake and costs nothing.

It is the lock itself (a subclass of the C reentrant lock: one object, and ``with`` costs
what it costs on a plain ``RLock``), with the ``Condition`` calls links uses: ``wait``,
``wait_for``, ``notify`` and ``notify_all``, with the same meanings (each needs the lock held,
as ``Condition``'s do).
"""

from __future__ import annotations

import threading
from _thread import RLock
from collections.abc import Callable
from typing import TypeVar

__all__ = ["LazyCondition"]

T = TypeVar("T")


class LazyCondition(RLock):
    """A reentrant lock (the C one, so ``with`` costs what it costs on a lock) with
    ``Condition``'s waiting, made on first use; see the module docstring."""

    __slots__ = ("_cond",)

    def __init__(self) -> None:
        self._cond: threading.Condition | None = None

    def __repr__(self) -> str:
        return f"LazyCondition({super().__repr__()}, waited_on={self._cond is not None})"

    def _condition(self) -> threading.Condition:
        """Lock held: the ``Condition`` over this lock, made now if nobody waited before."""
        cond = self._cond
        if cond is None:
            cond = self._cond = threading.Condition(self)  # type: ignore[arg-type]
        return cond

    def wait(self, timeout: float | None = None) -> bool:
        """As ``Condition.wait`` (the lock must be held)."""
        return self._condition().wait(timeout)

    def wait_for(self, predicate: Callable[[], T], timeout: float | None = None) -> T:
        """As ``Condition.wait_for`` (the lock must be held)."""
        return self._condition().wait_for(predicate, timeout)

    def notify(self, n: int = 1) -> None:
        """As ``Condition.notify``: nobody to wake if nobody ever waited."""
        if self._cond is not None:
            self._cond.notify(n)

    def notify_all(self) -> None:
        """As ``Condition.notify_all``: nobody to wake if nobody ever waited."""
        if self._cond is not None:
            self._cond.notify_all()
