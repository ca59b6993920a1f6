"""``CltSender``: the sending half of a connection.

Send path, per message: ``Protocol.on_send`` (may stamp or replace it) → serialize → frame →
one write, all or nothing (see ``links._transport``) → ``Protocol.on_sent`` and
``Callback.on_sent``; or ``on_would_block``; or ``on_error`` and the error is raised.

Thread-safety: a ``CltSender`` may be called from several threads. The protocol itself sends
from other threads than the user's (``send_reply`` on the poll thread, heartbeats on the
timer thread), so every write holds the connection's write lock and frames never interleave.
Stamping runs under the same lock, so sequence numbers stamped in ``on_send`` reach the wire
in order. To give many threads *handles* that close together, wrap it in ``links.Ref``.

Between attachments (``reconnect=``), a send waits for the next one within its timeout
(``WOULD_BLOCK`` when it runs out); with a session it is numbered into the replay buffer and
written on resume, and only a full replay buffer makes it wait.

With a session, ``timeout`` bounds the wait for replay-buffer room (and for the write lock),
not the socket write that follows: once a message is numbered it must reach the wire before
the next number does, so the write waits for socket room (up to the transport's
``stall_timeout`` once started). A peer that stays connected but stops reading therefore
makes a session send wait even with ``timeout=0``. An outbound buffer per connection would
lift this; it is not built yet. Once the connection is closed
for good every send raises its error (``ClosedError``, or the ``BrokenError`` that ended it).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from ._connection import Connection
from ._core._status import SendStatus
from ._errors import BrokenError
from ._timer import Timer, TimerHandle

__all__ = ["CltSender"]


class CltSender:
    """Sends messages over one connection; safe to call from several threads."""

    def __init__(self, connection: Connection) -> None:
        self._con = connection

    @property
    def con_id(self) -> Any:
        return self._con.con_id

    @property
    def timer(self) -> Timer:
        """The timer that drives this connection's heartbeats; protocols schedule deadlines on it."""
        return self._con.timer

    def is_connected(self) -> bool:
        return self._con.is_connected()

    def schedule(self, name: str, interval: float, task: Callable[[], Any], *, delay: float | None = None) -> TimerHandle:
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
        """Send one message.

        Args:
            timeout: how long to wait for socket room (or, between attachments, for the next
                one) before giving up with ``WOULD_BLOCK``: 0 is one nonblocking attempt,
                None waits as long as it takes.

        Raises:
            ClosedError: the connection was closed locally.
            BrokenError: the peer is gone (and no reconnect is configured, or it gave up).
        """
        return self._con.send(msg, timeout)

    def send_held(self, lock: Any, msg: Any, timeout: float | None = None) -> SendStatus:
        """``send`` for a ``Ref`` holding ``lock``, which any wait for room lets go of."""
        return self._con.send(msg, timeout, None, lock)

    def send_many(self, msgs: Iterable[Any], timeout: float | None = None) -> SendStatus:
        """Send a batch with one write; all or nothing like ``send``. Hooks run per message."""
        return self._con.write(None, list(msgs), timeout)
