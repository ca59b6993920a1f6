"""``CltRecver``: the receiving half of a connection, read on a user thread.

``recv(timeout)`` reads the connection's current attachment on the calling thread: one
``recv_into`` into the attachment's reusable buffer, then frames are cut, deserialized and
dispatched (``Protocol.on_recv`` → ``Callback.on_recv`` → ``Protocol.send_reply``) one message
per call. While the connection is between attachments (redialing, or waiting for a session
to resume) ``recv`` waits for the next one, within its timeout.

Once spawned (``Clt.into_sender_with_spawned_recver``) the poll thread reads instead, and
messages reach only the callback; this object is then no longer used for reading.

No lock guards the read path; a receiver has one reader. Two threads calling ``recv`` at once
get ``BusyError`` (the second caller) instead of silently splitting the stream between them.

Hostile input ends the attachment it came on: ``FrameTooLarge`` (logged ``frame.too_large``) or
``DecodeError`` (``frame.decode_failed``) is raised to the caller once; later calls raise the
connection's ``BrokenError`` (or, with ``reconnect=``, read the next attachment).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

from ._clock import deadline_after, time_left
from ._connection import Connection
from ._core._conid import ConId
from ._errors import BrokenError, BusyError, ClosedError, LinksError, ProtocolError

__all__ = ["CltRecver"]


class CltRecver:
    """Receives and dispatches messages for one connection."""

    __slots__ = ("_con", "_busy", "__weakref__")

    def __init__(self, connection: Connection) -> None:
        self._con = connection
        self._busy = threading.Lock()  # held by the one thread inside recv (a try-lock, never waited on)

    @property
    def con_id(self) -> ConId:
        """This connection's identity: role, name, local and peer address (``str()`` for logs)."""
        return self._con.con_id

    def fileno(self) -> int:
        """The current socket's fd (for waiting on several receivers at once), or -1."""
        att = self._con.attachment
        return -1 if att is None else att.transport.fileno()

    def is_connected(self) -> bool:
        """Whether the connection is up now: the socket is open and ``Protocol.is_connected()``
        says so. Never raises; False once closed, and between attachments while ``reconnect=`` redials.
        """
        return self._con.is_connected()

    def close(self) -> None:
        """Close the whole connection (both halves, every ref). Idempotent."""
        self._con.close()

    def _retire(self) -> None:
        """Stop for good, because another reader (the poll thread) takes over: later ``recv``
        calls raise ``BusyError``.

        Raises:
            BusyError: a thread is inside ``recv`` now.
        """
        if not self._busy.acquire(blocking=False):
            raise BusyError(f"{self._con.con_id}: a thread is inside recv; it must return before the receiver moves")

    def __enter__(self) -> CltRecver:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"CltRecver({self._con.con_id}, connected={self._con.is_connected()})"

    def recv(self, timeout: float | None = None) -> Any:
        """The next message, waiting up to ``timeout`` seconds (None: forever, 0: no wait).

        Returns:
            The message, or None when the timeout expired first.

        Raises:
            BrokenError: the peer closed or reset the connection (or it ended earlier).
            FrameTooLarge, DecodeError: this message was hostile; its attachment is now closed.
            ClosedError: the connection was closed locally.
            BusyError: another thread is inside ``recv`` on this receiver.
        """
        if not self._busy.acquire(blocking=False):
            raise BusyError(f"{self._con.con_id}: concurrent recv on one CltRecver; share it through links.Ref")
        try:
            pending = self._con.pending
            if pending:
                return pending.popleft()
            return self._recv(deadline_after(timeout))
        finally:
            self._busy.release()

    def _recv(self, deadline: float | None) -> Any:
        con = self._con
        while True:
            att = con.wait_attached(deadline)
            if att is None:
                return None
            if con.pending:  # kept from a reconnect's handshake: they came before anything on att
                return con.pending.popleft()
            try:
                msg = att.receive(deadline)  # the one receive loop of a waiting thread
            except ProtocolError:
                raise  # a hostile frame: its attachment is ended already
            except LinksError as e:  # the socket ended
                con.lost(att, getattr(e, "reason", "closed"), e if isinstance(e, BrokenError) else None)
                continue
            if msg is not None:
                if con.session is not None:
                    con.flush_session(att)
                return msg
            if time_left(deadline) == 0.0:
                return None
            # else another thread ended or replaced the attachment: wait for the next one

    def __iter__(self) -> Iterator[Any]:
        """Messages until the connection ends (then iteration stops quietly)."""
        while True:
            try:
                yield self.recv()
            except (BrokenError, ClosedError):
                return
