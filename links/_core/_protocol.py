"""``Protocol``: the per-connection hooks a user overrides, composed with a framer and a messenger.

One base class with no-op hooks (like Twisted's ``Protocol``); nothing is inherited from the
framer or the messenger, they are plain attributes. Every connection gets a fresh instance
from the factory passed as ``protocol=`` (the class itself, or any zero-argument callable), so
per-connection state lives in ``self`` and never leaks between connections.

Hook order:

* receive: ``on_recv(msg)`` → ``Callback.on_recv(con_id, msg)`` → ``send_reply(msg, con)``
* send: ``on_send(msg)`` (may stamp; return a replacement or mutate) → serialize → write →
  ``on_sent(msg)`` + ``Callback.on_sent(con_id, msg)``; or ``on_would_block(msg)``;
  or ``on_error(msg, error)`` and the error is raised.
* lifecycle: ``on_connect(con)`` once the socket is up; ``on_close(con)`` when *this* side
  closes it, while the socket still works (send a logout or end-of-session here);
  ``on_disconnect(con_id)`` exactly once, however it ended.

Hooks always run, whichever wrapper holds the connection (``Clt``, split halves, spawned
receivers, ``Ref`` handles). The ``con`` given to ``on_connect``, ``send_reply``,
``send_heartbeat`` and ``on_close`` is a ``Handle``, the connection this protocol instance serves:
thread-safe for sending (``send``, ``send_many``), with ``con_id``, ``is_connected()``,
``close(reason=None)`` (a reason means "the peer is at fault": no goodbye, and
``reconnect=`` may redial) and ``schedule(name, interval, task, delay=...)`` for deadlines that
are cancelled when the connection ends (``timer`` is there too, for anything else).

Threads: on a spawned receiver ``on_recv`` and ``send_reply`` run on the poll thread, which
they must never block; ``send_heartbeat`` runs on the timer thread. A server-side handshake
therefore *advances* in ``on_recv`` and times out through a timer task scheduled in
``on_connect``; it never waits.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any, Generic
from typing import Protocol as Interface
from typing import runtime_checkable

from ._framer import Framer, LengthPrefixFramer
from ._messenger import Messenger, RawMessenger
from ._typevars import RecvT, SendT

if TYPE_CHECKING:
    from ._conid import ConId
    from .._timer import Timer, TimerHandle
    from ._status import RetryAfter, SendStatus, TaskStatus

__all__ = ["Protocol", "Handle", "overrides"]

@runtime_checkable
class Handle(Interface):
    """The ``con`` given to ``on_connect``, ``on_close``, ``send_reply`` and ``send_heartbeat``:
    the connection this protocol instance serves, the same interface in every mode.

    Without a session it is the one TCP connection the instance was made for (a reconnect
    makes a new instance and a new handle); with a session it is the logical connection's
    sender, which outlives cuts. Sends through it are thread-safe and, on the poll and timer
    threads, never wait (``timeout`` is then 0 whatever it says).
    """

    @property
    def con_id(self) -> ConId:
        """The identity of the connection this protocol instance serves (role, name, addresses)."""

    @property
    def timer(self) -> Timer:
        """The timer that drives this connection's heartbeats; ``schedule`` is usually what a protocol wants."""

    @property
    def peer_certificate(self) -> dict[str, Any] | None:
        """The peer's verified TLS certificate (its ``subject``, ``subjectAltName``, ...), so a
        protocol can authorize by identity; None without TLS or when the peer showed none."""

    def send(self, msg: Any, timeout: float | None = None) -> SendStatus:
        """Send ``msg`` on this connection (thread-safe); on the poll and timer threads it never waits.

        Returns:
            ``SendStatus.COMPLETED`` or ``SendStatus.WOULD_BLOCK``, as ``CltSender.send``.

        Raises:
            ClosedError, BrokenError: the connection ended; and what ``CltSender.send`` raises.
        """

    def send_many(self, msgs: Iterable[Any], timeout: float | None = None) -> SendStatus:
        """Send a batch in one write, all or nothing (thread-safe).

        Returns:
            ``SendStatus.COMPLETED`` or ``SendStatus.WOULD_BLOCK``, as ``CltSender.send_many``.

        Raises:
            ClosedError, BrokenError: the connection ended; and what ``CltSender.send_many`` raises.
        """

    def close(self, reason: str | None = None) -> None:
        """End the connection. Idempotent; never raises.

        ``reason=None`` is an orderly close (``on_close`` says goodbye, later calls raise
        ``ClosedError``); a reason blames the peer: no goodbye, later calls raise
        ``BrokenError(reason)``, and ``reconnect=`` may redial.
        """

    def is_connected(self) -> bool:
        """Whether the connection is up: the socket is open and ``Protocol.is_connected()`` says so."""

    def schedule(
        self, name: str, interval: float, task: Callable[[], TaskStatus | RetryAfter], *, delay: float | None = None
    ) -> TimerHandle:
        """Run ``task`` on the connection's timer after ``delay`` (default ``interval``), then as it
        returns (``TaskStatus.COMPLETED``: again in ``interval``; ``TERMINATE``: stop;
        ``RetryAfter(s)``); cancelled when the connection ends.

        Returns:
            The ``TimerHandle``, to ``cancel()`` it earlier (a login deadline, once logged in).

        Raises:
            RuntimeError: the timer was shut down.
        """


class Protocol(Generic[SendT, RecvT]):
    """Base class: override the hooks you need; the rest cost nothing (they are skipped)."""

    #: Finds frame boundaries and wraps payloads. Stateless, so one instance may be shared.
    framer: Framer = LengthPrefixFramer(header_size=4)
    #: Turns payloads into messages and back.
    messenger: Messenger = RawMessenger()
    #: Seconds between ``send_heartbeat`` calls, or None for no heartbeats.
    heartbeat_interval: float | None = None
    #: Seconds without a byte from the peer before the connection is dropped as dead (None:
    #: never), checked by the engine (``links._liveness``) like ``Clt.connect(idle_timeout=)``;
    #: ``idle_event`` is then the log event and the ``BrokenError`` reason.
    idle_timeout: float | None = None
    idle_event: str = "clt.idle_timeout"

    def on_connect(self, con: Handle) -> None:
        """The connection is up. Start a handshake here (send a login); never wait for it."""

    def on_close(self, con: Handle) -> None:
        """This side is closing the connection (not the peer, not an error): say goodbye.

        The socket still works. Send with a short timeout (``timeout=0``): a peer that no
        longer reads must not hold the close up. Errors raised here are logged and ignored.
        """

    def on_disconnect(self, con_id: ConId) -> None:
        """The connection ended (called exactly once, whoever closed it)."""

    def on_send(self, msg: SendT) -> SendT | None:
        """About to serialize ``msg``. Return a replacement (or None to keep ``msg``)."""
        return None

    def on_sent(self, msg: SendT) -> None:
        """``msg`` was taken: written, or owed and written by the poll thread. It runs after
        the connection's write lock is released, on the sending thread, so with several
        threads sending it may come in another order than the wire's (``on_send`` is the hook
        that runs in wire order)."""

    def on_would_block(self, msg: SendT) -> None:
        """``msg`` was not written: the socket was full and the timeout allowed no wait."""

    def on_error(self, msg: SendT, error: BaseException) -> None:
        """Writing ``msg`` failed with ``error`` (which is then raised to the caller)."""

    def on_recv(self, msg: RecvT) -> None:
        """``msg`` arrived: runs before the callback sees it, then ``send_reply`` runs.

        It runs on the receiving thread (the poll thread when spawned: never block there). An
        exception raised here propagates from ``Clt.connect`` during the handshake (a login
        rejection, say: the connection is closed) and from ``recv`` to its caller; on a spawned
        receiver it ends the connection (``BrokenError``, reason ``recver_failed``).
        """

    def is_connected(self) -> bool:
        """Protocol-level liveness (logged in, heartbeats fresh); True by default.

        ``Clt.connect`` receives until it turns True (a login handshake), and
        ``Clt.is_connected()`` is this and the socket's state together. Must not raise.
        """
        return True

    def send_reply(self, msg: RecvT, con: Handle) -> None:
        """Answer ``msg`` through ``con`` (after the callback ran). Runs on the receiving thread."""

    def send_heartbeat(self, con: Handle) -> None:
        """Send a heartbeat through ``con``; called every ``heartbeat_interval`` seconds."""


def overrides(obj: Any, hook: str, base: type = Protocol) -> bool:
    """Whether ``obj`` replaces ``base``'s no-op ``hook`` (so the engine can skip calls)."""
    return getattr(type(obj), hook) is not getattr(base, hook)


def batch_form(obj: Any, batch: str, *singles: str) -> Any:
    """``obj``'s bound ``batch`` method, or None when it has none or cannot be trusted.

    A batch method (``payloads``, ``deserialize_many``) does the work of ``singles`` for many
    items at once. A subclass that overrides one of the singles but inherits the batch method
    would have its override skipped, so then the engine uses the singles instead.
    """
    cls = type(obj)
    owner = next((c for c in cls.__mro__ if batch in vars(c)), None)
    if owner is None or any(getattr(cls, one, None) is not getattr(owner, one, None) for one in singles):
        return None
    return getattr(obj, batch)
