"""``links.mux.connect`` and ``Mux``: one TCP connection per address, shared by whoever asks.

``connect(addr, **options)`` returns a ``Mux`` handle. While a connection to the same address
with the same options is open, the handle shares it (``links.mux._carrier.Carrier``) instead
of dialing again, so a process that opens a thousand channels to one server makes one TCP
connection. The connection is reference counted: every handle holds it until its
``close()``, every channel opened through a handle holds it until the channel is closed; when
the last lets go it is closed, at once or, with ``idle_timeout=``, after that many seconds with
nobody holding it (someone asking again meanwhile takes it back); closed once its channels
have finished (``Carrier.finish``: what they were told was COMPLETED is delivered and read
first, within the connection's ``stall_timeout``). A connection that is lost for good (no
``reconnect=``) leaves the pool at once, and one whose peer said GO_AWAY (no new channel) is
shared no more: the next ``connect`` dials a new one.

Options are compared as given: the same ``tls=`` context object, the same ``reconnect=``
object, and so on; a different context, even an equal one, is another connection.
"""

from __future__ import annotations

import threading
from typing import Any

from .._callbacks import Callback
from .._clt import Clt, ProtocolFactory
from .._core._conid import Addr, ConId, parse_addr
from .._errors import ClosedError
from .._outbound import DEFAULT_MAX_OUTBOUND, DEFAULT_STALL_TIMEOUT
from .._runtime import default_timer
from ._carrier import Carrier

__all__ = ["Mux", "connect"]

_lock = threading.Lock()
_shared: dict[tuple[Any, ...], _Shared] = {}


class _Shared:
    """One pooled connection and the count of those holding it (``_lock`` guards both)."""

    def __init__(self, key: tuple[Any, ...], carrier: Carrier, idle_timeout: float | None) -> None:
        self.key = key
        self.carrier = carrier
        self.idle_timeout = idle_timeout
        self.holders = 0
        self.idle_task: Any = None
        # Bound once: every channel's close listener (one per channel would cost 0.2 KB each).
        self.channel_closed = self._channel_closed

    def _channel_closed(self, _con: Any) -> None:
        self.let_go()

    def hold(self) -> None:
        self.holders += 1
        task, self.idle_task = self.idle_task, None
        if task is not None:
            task.cancel()

    def let_go(self) -> None:
        """One holder less; the last one closes it (now, or once idle for ``idle_timeout``)."""
        with _lock:
            self.holders -= 1
            if self.holders > 0:
                return
            if self.idle_timeout is None:
                self._drop()
            else:
                timer = self.carrier.timer or default_timer()
                self.idle_task = timer.schedule(f"mux idle {self.carrier.name}", self.idle_timeout, self._idle, delay=self.idle_timeout)
                return
        self.carrier.finish()

    def _idle(self) -> Any:
        from .._core._status import TaskStatus

        with _lock:
            if self.holders > 0 or self.idle_task is None:
                return TaskStatus.TERMINATE
            self.idle_task = None
            self._drop()
        self.carrier.finish()
        return TaskStatus.TERMINATE

    def _drop(self) -> None:
        """``_lock`` held: out of the pool (the next ``connect`` dials anew)."""
        if _shared.get(self.key) is self:
            del _shared[self.key]


def connect(addr: str | Addr, *, idle_timeout: float | None = None, **options: Any) -> Mux:
    """A handle on the connection to ``addr`` with these ``options``: the open one if there is
    one, else a new one (``Carrier.connect``'s options: ``timeout``, ``tls=``, ``reconnect=``,
    ``name``, ``window``, ...). See the module docstring for sharing and ``idle_timeout``.

    Raises:
        As ``links.Clt.connect`` when a new connection is dialed.
    """
    if idle_timeout is not None and not idle_timeout > 0:
        raise ValueError(f"idle_timeout must be None or a positive number of seconds, not {idle_timeout!r}")
    target = parse_addr(addr)
    key = (target, tuple(sorted((name, _same(value)) for name, value in options.items() if name != "timeout")))
    with _lock:
        shared = _shared.get(key)
        if shared is not None and shared.carrier.shareable:
            shared.hold()
            return Mux(shared)
    carrier = Carrier.connect(target, **options)  # outside the lock: dialing waits
    with _lock:
        existing = _shared.get(key)
        if existing is not None and existing.carrier.shareable:  # another thread dialed too: use one
            existing.hold()
            winner = existing
        else:
            winner = _shared[key] = _Shared(key, carrier, idle_timeout)
            winner.hold()
    if winner.carrier is not carrier:
        carrier.close()
    else:
        # Outside the lock: a connection lost already (the peer may end it as soon as it is
        # dialed) calls _forget, which takes the lock, at once.
        carrier.on_closed(lambda: _forget(winner))
    return Mux(winner)


def _same(value: Any) -> Any:
    """How an option is compared: by value if it can be hashed and is a plain value, else by identity."""
    if value is None or isinstance(value, (bool, int, float, str, bytes, tuple)):
        return value
    return ("id", id(value))


def _forget(shared: _Shared) -> None:
    with _lock:
        shared._drop()


class Mux:
    """A handle on a pooled connection carrying channels: ``open`` channels on it, ``close``
    the handle (the connection closes when nobody holds it any more)."""

    def __init__(self, shared: _Shared) -> None:
        self._shared = shared
        self._closed = False
        self._close_lock = threading.Lock()

    @property
    def carrier(self) -> Carrier:
        """The shared connection this handle holds (every handle on it sees the same one)."""
        return self._shared.carrier

    @property
    def con_id(self) -> ConId:
        """The TCP connection's identity (shared by every handle on it)."""
        return self._shared.carrier.con_id

    def is_connected(self) -> bool:
        """Whether this handle is open and its TCP connection is up now. Never raises."""
        return not self._closed and self._shared.carrier.is_connected()

    def open(
        self,
        *,
        protocol: ProtocolFactory,
        callback: Callback | None = None,
        name: str | None = None,
        timeout: float = 1.0,
        idle_timeout: float | None = None,
        stall_timeout: float = DEFAULT_STALL_TIMEOUT,
        max_outbound: int = DEFAULT_MAX_OUTBOUND,
    ) -> Clt:
        """A new channel, as a ``Clt`` (see ``Carrier.open``); it holds the connection until
        it is closed.

        Raises:
            ClosedError: this handle is closed. And as ``Carrier.open``.
        """
        shared = self._shared
        with _lock:
            if self._closed:
                raise ClosedError(f"{shared.carrier.name}: this Mux handle is closed")
            shared.hold()
        try:
            clt = shared.carrier.open(
                protocol=protocol, callback=callback, name=name, timeout=timeout, idle_timeout=idle_timeout,
                stall_timeout=stall_timeout, max_outbound=max_outbound,
            )  # fmt: skip
        except BaseException:
            shared.let_go()
            raise
        clt._con.add_listener(shared.channel_closed)
        return clt

    def close(self) -> None:
        """Let go of the connection (idempotent); the last holder's close closes it."""
        with self._close_lock:
            if self._closed:
                return
            self._closed = True
        self._shared.let_go()

    def __enter__(self) -> Mux:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Mux({self._shared.carrier.name}, holders={self._shared.holders}, connected={self.is_connected()})"
