"""``CltSender``: the sending half of a connection.

Send path, per message: ``Protocol.on_send`` (may stamp or replace it) → serialize → frame →
handed to the connection's outbound path, taken whole or refused whole (``links._sending``,
``links._outbound``) → ``Protocol.on_sent`` and ``Callback.on_sent``; or ``on_would_block``;
or ``on_error`` and the error is raised.

Thread-safety: a ``CltSender`` may be called from several threads. The protocol itself sends
from other threads than the user's (``send_reply`` on the poll thread, heartbeats on the
timer thread), so every write holds the connection's write lock and frames never interleave.
Stamping runs under the same lock, so sequence numbers stamped in ``on_send`` reach the wire
in order. To give many threads *handles* that close together, wrap it in ``links.Ref``.

Timeouts: ``0`` never waits; ``T`` waits at most about ``T`` for room (or, between
attachments with ``reconnect=``, for the next one); ``None`` waits as long as it takes, which a
peer that stops reading bounds by ``stall_timeout``. Sends on the poll and timer threads never
wait. With a session a message is numbered into the replay buffer and always taken while it
has room; only a full replay buffer makes it wait. Once the connection is closed for good
every send raises its error (``ClosedError``, or the ``BrokenError`` that ended it).
"""
from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from ._connection import Connection
from ._core._conid import ConId
from ._core._status import SendStatus
from ._errors import BrokenError
from ._timer import TaskResult, Timer, TimerHandle

__all__ = ["CltSender"]


class CltSender:
    """Sends messages over one connection; safe to call from several threads."""

    __slots__ = ("_con", "__weakref__")

    def __init__(self, connection: Connection) -> None:
        self._con = connection

    @property
    def con_id(self) -> ConId:
        """This connection's identity: role, name, local and peer address (``str()`` for logs)."""
        return self._con.con_id

    @property
    def timer(self) -> Timer:
        """The timer that drives this connection's heartbeats; protocols schedule deadlines on it."""
        return self._con.timer

    @property
    def peer_certificate(self) -> dict[str, Any] | None:
        """The peer's verified TLS certificate (``ssl.SSLSocket.getpeercert()``'s dict:
        ``subject``, ``subjectAltName``, ...) on the current connection; None without TLS,
        when the peer showed none, or between connections."""
        att = self._con.attachment
        return att.peer_certificate if att is not None else None

    def is_connected(self) -> bool:
        """Whether the connection is up now: the socket is open and ``Protocol.is_connected()``
        says so. Never raises; False once closed, and between attachments while ``reconnect=`` redials.
        """
        return self._con.is_connected()

    def schedule(
        self, name: str, interval: float, task: Callable[[], TaskResult], *, delay: float | None = None
    ) -> TimerHandle:
        """Schedule ``task`` on the connection's timer; it is cancelled when the connection is
        closed for good (see ``Timer.schedule`` for what ``task`` returns)."""
        return self._con.schedule(name, interval, task, delay=delay)

    def close(self, reason: str | None = None) -> None:
        """Close the whole connection (both halves, every ref). Idempotent.

        Args:
            reason: None for an orderly local close: ``Protocol.on_close`` runs first and later
                calls raise ``ClosedError``. A protocol that ends the connection because of the
                peer (it went silent, logged out, broke the rules) passes a short reason
                instead: no goodbye is sent, and it ends as if the peer had broken it (later
                calls raise ``BrokenError(reason)``; with ``reconnect=`` a redial follows).
        """
        if reason is None:
            self._con.close()
            return
        att = self._con.attachment
        if att is not None:
            att.drop(reason)
        else:
            self._con.close(reason, BrokenError(f"{self._con.con_id}: {reason}", reason))

    def __enter__(self) -> CltSender:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"CltSender({self._con.con_id}, connected={self._con.is_connected()})"

    def send(self, msg: Any, timeout: float | None = None) -> SendStatus:
        """Send one message: ``Protocol.on_send`` → serialize → frame → write, whole or not at all.

        Args:
            msg: a message the protocol's messenger serializes.
            timeout: how long to wait for socket room (or, between attachments, for the next
                one) before giving up with ``WOULD_BLOCK``: 0 is one nonblocking attempt,
                None waits as long as it takes (a peer that stops reading is cut after
                ``stall_timeout``). On the poll and timer threads it is always 0.

        Returns:
            ``SendStatus.COMPLETED`` when links has the message (what the socket did not take at
            once the poll thread writes), or ``SendStatus.WOULD_BLOCK`` when none of it was taken.

        Raises:
            ClosedError: the connection was closed locally.
            BrokenError: the peer is gone (and no reconnect is configured, or it gave up).
            FrameTooLarge: the frame exceeds the framer's ``max_frame_size``; nothing was sent.
            ValueError, TypeError: ``timeout`` is not a usable number of seconds.
            Whatever the messenger or a protocol hook raises, after ``Protocol.on_error``.
        """
        if timeout is None:  # the common case, one call less
            return self._con.send_now(msg)
        return self._con.write(None, [msg], timeout)

    def send_held(self, lock: Any, msg: Any, timeout: float | None = None) -> SendStatus:
        """``send`` for a ``Ref`` holding ``lock``, which any wait for room lets go of."""
        return self._con.send(msg, timeout, None, lock)

    def send_many(self, msgs: Iterable[Any], timeout: float | None = None) -> SendStatus:
        """Send a batch of messages in one write: all of them are taken, or none. Hooks run per message.

        Returns:
            ``SendStatus.COMPLETED`` (all taken) or ``SendStatus.WOULD_BLOCK`` (none taken).

        Raises:
            The same errors as ``send``. With ``reconnect=``, a batch of two or more whose write
            found the connection cut raises ``BrokenError`` (part of it may have arrived).
        """
        return self._con.write(None, list(msgs), timeout)
