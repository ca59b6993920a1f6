"""``Ref[T]``: one shareable, lock-guarded handle to a connection half (or anything else).

Why one generic class
    Sharing changes thread-safety, never behaviour. Instead of a "Ref" twin of every class,
    ``Ref`` wraps any target and guards each verb with one lock shared by all clones. Clones
    share the target too, so closing any clone closes the connection for every holder.

The lock: spin, then park
    ``SpinParkLock.acquire`` first tries ``spins`` non-blocking acquires and only then blocks.
    The idea comes from the reference design, where a short spin beats a futex sleep when the
    holder is about to finish. In CPython the picture is different: a spinning thread holds
    the GIL the lock holder may need. What makes a short spin still worthwhile is that the
    holder usually sits in ``send()``, a syscall that releases the GIL: a few retries cost
    well under a microsecond and can catch the release without a park/unpark round trip.
    The bound keeps the worst case tiny. ``spins=0`` gives a plain blocking lock.

    Measured (``benchmarks/micro/ref_lock.py``, ``benchmarks/RESULTS.md``): around a real
    ``send`` on a shared socket, 1 to 8 threads, ``SpinParkLock(16)`` ran at 0.78–0.86 of a
    plain ``threading.Lock`` and ``SpinParkLock(0)`` at 0.89–0.93. The spin never paid for
    itself, and most of the remaining gap was the lock's ``acquire`` being Python code. So
    the default is ``spins=0``, and with ``spins=0`` a ``Ref`` holds a plain
    ``threading.Lock`` (one C call per acquire); the spin stays available (``spins=N``) for
    workloads that measure a gain.

What is and is not locked
    ``send``, ``send_many``, ``send_to``, ``broadcast`` and ``recv`` take the lock, so callers
    are serialized and a frame is never interleaved with another thread's. A send that waits
    for socket room (or for a connection) lets go of the lock while it waits and takes it
    back to try again (``released_while_waiting``), so another clone's ``send(timeout=0)``
    never waits behind a sender stuck on a peer that stopped reading. ``close`` does not take
    the lock, so it can always wake a waiting thread. ``con_id`` and ``is_connected`` read
    state that is safe to read without it. ``locked()`` holds the lock across several calls
    on the raw target, waits included.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, Generic, TypeVar

if TYPE_CHECKING:
    from ._core._conid import ConId
    from ._core._status import SendStatus

__all__ = ["Ref", "SpinParkLock", "DEFAULT_SPINS", "released_while_waiting"]

# The Ref lock the calling thread took for the send it is inside (None: none).
_held = threading.local()


@contextmanager
def released_while_waiting(lock: Any = None) -> Iterator[None]:
    """Around a sender's wait: release the ``Ref`` lock held for this send (``lock``, given
    by a target that takes it, or else the one the calling thread's ``Ref`` noted), and take
    it back after. Never the lock of ``Ref.locked()``."""
    if lock is None:
        lock = getattr(_held, "lock", None)
    if lock is None:
        yield
        return
    lock.release()
    try:
        yield
    finally:
        lock.acquire()

T = TypeVar("T")

#: Non-blocking attempts before parking: 0, because spinning measured slower in CPython
#: (benchmarks/RESULTS.md, "Ref lock"); see the module docstring.
DEFAULT_SPINS = 0


class SpinParkLock:
    """A mutex that spins ``spins`` times on a non-blocking acquire, then blocks."""

    __slots__ = ("_lock", "spins")

    def __init__(self, spins: int = DEFAULT_SPINS) -> None:
        self._lock = threading.Lock()
        self.spins = spins

    def acquire(self) -> None:
        """Take the lock: up to ``spins`` non-blocking tries, then a blocking wait. Returns None."""
        try_acquire = self._lock.acquire
        for _ in range(self.spins):
            if try_acquire(False):
                return
        try_acquire()  # park: the OS puts us to sleep until the holder releases

    def release(self) -> None:
        """Give the lock back. Raises ``RuntimeError`` if it is not held."""
        self._lock.release()

    def locked(self) -> bool:
        """Whether some thread holds the lock now (a snapshot: it may change at once)."""
        return self._lock.locked()

    def __enter__(self) -> SpinParkLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self._lock.release()


class Ref(Generic[T]):
    """A shareable handle: clones share one target and one lock.

    Args:
        target: the object to guard (a ``CltSender``, ``CltRecver``, ``SvcSender``, ...).
        spins: non-blocking acquire attempts before blocking (see the module docstring).
    """

    __slots__ = ("_target", "_lock", "_send_held")

    def __init__(self, target: T, *, spins: int = DEFAULT_SPINS, _lock: Any = None) -> None:
        self._target = target
        if _lock is None:
            # No spin wanted: the C lock itself, so ``with self._lock`` costs no Python frames.
            _lock = SpinParkLock(spins) if spins else threading.Lock()
        self._lock = _lock
        # A target that takes the held lock as an argument (``CltSender``) is told of it
        # directly: no thread-local note on its per-message path.
        self._send_held = getattr(target, "send_held", None)

    def clone(self) -> Ref[T]:
        """Another handle to the same target, guarded by the same lock."""
        return Ref(self._target, _lock=self._lock)

    @property
    def target(self) -> T:
        """The guarded object itself (use ``locked()`` to call it under the lock)."""
        return self._target

    @contextmanager
    def locked(self) -> Iterator[T]:
        """Hold the lock across several calls: ``with ref.locked() as sender: ...``."""
        with self._lock:
            yield self._target

    # -- the verbs, each under the lock ----------------------------------------------------

    def send(self, msg: Any, timeout: float | None = None) -> SendStatus:
        """``target.send(msg, timeout)`` under the shared lock (``CltSender``, ``SvcSender``, ``Svc``).

        A wait for room lets go of the lock, so a ``send(timeout=0)`` from another clone never
        waits behind it.

        Returns:
            ``SendStatus.COMPLETED`` or ``SendStatus.WOULD_BLOCK``, as the target's ``send``.

        Raises:
            What the target's ``send`` raises (``ClosedError``, ``BrokenError``, ...).
        """
        lock = self._lock
        with lock:
            send_held = self._send_held
            if send_held is not None:
                return send_held(lock, msg, timeout)
        return self._sending("send", msg, timeout)

    def send_many(self, msgs: Iterable[Any], timeout: float | None = None) -> SendStatus:
        """``target.send_many(msgs, timeout)`` under the shared lock: one write, all or nothing.

        Returns:
            ``SendStatus.COMPLETED`` or ``SendStatus.WOULD_BLOCK``, as the target's ``send_many``.

        Raises:
            What the target's ``send_many`` raises.
        """
        return self._sending("send_many", msgs, timeout)

    def send_to(self, con_id: ConId, msg: Any, timeout: float | None = None) -> SendStatus:
        """``target.send_to(con_id, msg, timeout)`` under the shared lock (a ``SvcSender`` or ``Svc``).

        Returns:
            ``SendStatus.COMPLETED`` or ``SendStatus.WOULD_BLOCK``, as the target's ``send_to``.

        Raises:
            What the target's ``send_to`` raises (``BrokenError`` for a ``con_id`` not in the
            pool, ...); ``AttributeError`` if the target has no ``send_to``.
        """
        return self._sending("send_to", con_id, msg, timeout)

    def broadcast(self, msg: Any, timeout: float | None = None) -> int:
        """``target.broadcast(msg, timeout)`` under the shared lock (a ``SvcSender`` or ``Svc``).

        Returns:
            How many connections took the message, as the target's ``broadcast``.

        Raises:
            What the target's ``broadcast`` raises; ``AttributeError`` if it has none.
        """
        return self._sending("broadcast", msg, timeout)

    def _sending(self, verb: str, *args: Any) -> Any:
        lock = self._lock
        with lock:
            outer = getattr(_held, "lock", None)  # a Ref's send from inside another's hook
            _held.lock = lock  # a wait for room lets go of it (released_while_waiting)
            try:
                return getattr(self._target, verb)(*args)
            finally:
                _held.lock = outer

    def recv(self, timeout: float | None = None) -> Any:
        """``target.recv(timeout)`` under the shared lock, so that clones read one at a time.

        Returns:
            The next message, or None when the timeout expired.

        Raises:
            What the target's ``recv`` raises; ``AttributeError`` if it has none (a sender).
        """
        with self._lock:
            return self._target.recv(timeout)  # type: ignore[attr-defined]

    # -- unlocked: safe without it, or must not wait for it ---------------------------------

    @property
    def con_id(self) -> Any:
        """The target's ``con_id`` (read without the lock): a ``ConId``, or a service's name for a
        ``SvcSender``. ``AttributeError`` if the target has none."""
        return self._target.con_id  # type: ignore[attr-defined]

    def is_connected(self) -> bool:
        """The target's ``is_connected()``, asked without the lock (it never waits)."""
        return self._target.is_connected()  # type: ignore[attr-defined]

    def close(self) -> None:
        """Close the shared target for every clone (idempotent; never waits for the lock)."""
        self._target.close()  # type: ignore[attr-defined]

    def __enter__(self) -> Ref[T]:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Ref({self._target!r})"
