"""``CltSender``: the sending half of a connection.

Send path, per message: ``Protocol.on_send`` (may stamp or replace it) → serialize → frame →
one write, all or nothing (see ``links._transport``) → ``Protocol.on_sent`` and
``Callback.on_sent``; or ``on_would_block``; or ``on_error`` and the error is raised.

Thread-safety: a ``CltSender`` may be called from several threads. The protocol itself sends
through it from other threads than the user's (``send_reply`` on the poll thread, heartbeats on
the timer thread), so every write holds an internal lock and frames never interleave. The
stamping runs under the same lock, so sequence numbers stamped in ``on_send`` reach the wire
in order. To give many threads *handles* that close together, wrap it in ``links.Ref``.

A failed write (peer gone) closes the connection; later sends raise the same ``BrokenError``.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from typing import Any

from ._callbacks import Callback
from ._connection import Connection
from ._core._link import Link
from ._core._protocol import overrides
from ._core._status import SendStatus
from ._errors import BrokenError, LinksError
from ._timer import Timer

__all__ = ["CltSender"]

_COMPLETED = SendStatus.COMPLETED


class CltSender:
    """Sends messages over one connection; safe to call from several threads."""

    def __init__(self, connection: Connection, link: Link, callback: Callback) -> None:
        self._con = connection
        self._link = link
        self._callback = callback
        self._lock = threading.Lock()
        protocol = connection.protocol
        self._protocol = protocol
        self._on_sent = protocol.on_sent if overrides(protocol, "on_sent") else None

    @property
    def con_id(self) -> Any:
        return self._con.con_id

    @property
    def timer(self) -> Timer:
        """The timer that drives this connection's heartbeats; protocols schedule deadlines on it."""
        return self._con.timer

    def is_connected(self) -> bool:
        return self._con.is_connected()

    def close(self) -> None:
        """Close the whole connection (both halves). Idempotent."""
        self._con.close()

    def __enter__(self) -> CltSender:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"CltSender({self._con.con_id}, connected={self._con.is_connected()})"

    def send(self, msg: Any, timeout: float | None = None) -> SendStatus:
        """Send one message.

        Args:
            timeout: how long to wait for socket room before giving up with ``WOULD_BLOCK``:
                0 is one nonblocking attempt, None waits until it is written.

        Raises:
            ClosedError: the connection was closed locally.
            BrokenError: the peer is gone (the connection is closed now).
        """
        con = self._con
        with self._lock:
            if con.closed:
                raise con.error()
            msg = self._link.stamp(msg)
            try:
                frame = self._link.encode(msg)
            except Exception as e:  # a message we cannot encode is our bug, not the link's
                self._protocol.on_error(msg, e)
                raise
            try:
                status = con.transport.write(frame, timeout)
            except LinksError as e:
                self._failed([msg], e)
                raise
        self._finish(msg, status)
        return status

    def send_many(self, msgs: Iterable[Any], timeout: float | None = None) -> SendStatus:
        """Send a batch with one write; all-or-nothing like ``send``.

        Hooks run per message. Returns ``COMPLETED`` or ``WOULD_BLOCK`` for the whole batch.
        """
        con = self._con
        with self._lock:
            if con.closed:
                raise con.error()
            stamped, frames = self._link.encode_many(msgs)
            try:
                status = con.transport.write(frames, timeout)
            except LinksError as e:
                self._failed(stamped, e)
                raise
        for msg in stamped:
            self._finish(msg, status)
        return status

    def _finish(self, msg: Any, status: SendStatus) -> None:
        if status is _COMPLETED:
            if self._on_sent is not None:
                self._on_sent(msg)
            self._callback.on_sent(self._con.con_id, msg)
        else:
            self._protocol.on_would_block(msg)

    def _failed(self, msgs: list[Any], error: LinksError) -> None:
        for msg in msgs:
            self._protocol.on_error(msg, error)
        if isinstance(error, BrokenError):
            self._con.close(error.reason, error)
