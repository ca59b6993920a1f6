"""``CltRecver``: the receiving half of a connection.

It reads into the ``Link``'s reusable buffer, cuts frames, deserializes them and dispatches
each message: ``Protocol.on_recv`` → ``Callback.on_recv`` → ``Protocol.send_reply``. It runs in
one of two places:

* on a user thread, through ``recv(timeout)`` (and iteration), which waits on this one socket;
* on the poll thread, after ``Clt.into_sender_with_spawned_recver()`` registered it there:
  ``on_readable()`` does one ``recv_into`` per readiness event and dispatches the frames it
  completed (a bounded batch: see ``links._poll``), and messages reach only the callback.

No lock guards the read path; a receiver has one reader. Two threads calling ``recv`` at once
get ``BusyError`` (the second caller) instead of silently splitting the stream between them.

Hostile input closes this connection only: ``FrameTooLarge`` logs ``frame.too_large``,
``DecodeError`` logs ``frame.decode_failed``, then the connection closes (``on_disconnect``
runs, the gate slot is released) and the error is raised to a user-thread caller.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Iterator
from typing import Any

from ._callbacks import Callback
from ._connection import Connection
from ._core._link import Link
from ._core._protocol import overrides
from ._core._status import NEED_DATA
from ._errors import BrokenError, BusyError, ClosedError, DecodeError, FrameTooLarge, LinksError

__all__ = ["CltRecver"]


class CltRecver:
    """Receives and dispatches messages for one connection."""

    poll_kind = "recver"

    def __init__(self, connection: Connection, link: Link, callback: Callback, reply_con: Any) -> None:
        self._con = connection
        self._link = link
        self._callback = callback
        self._reply_con = reply_con  # the CltSender that send_reply answers through
        self._pending: deque[Any] = deque()  # dispatched during a handshake, not yet returned
        self._busy = False
        protocol = connection.protocol
        self._on_recv = protocol.on_recv if overrides(protocol, "on_recv") else None
        self._send_reply = protocol.send_reply if overrides(protocol, "send_reply") else None

    @property
    def con_id(self) -> Any:
        return self._con.con_id

    def fileno(self) -> int:
        return self._con.transport.fileno()

    @property
    def closed(self) -> bool:
        return self._con.closed

    def is_connected(self) -> bool:
        return self._con.is_connected()

    def close(self) -> None:
        """Close the whole connection (both halves). Idempotent."""
        self._con.close()

    def __enter__(self) -> CltRecver:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"CltRecver({self._con.con_id}, connected={self._con.is_connected()})"

    # -- user thread ----------------------------------------------------------------------

    def recv(self, timeout: float | None = None) -> Any:
        """The next message, waiting up to ``timeout`` seconds (None: forever, 0: no wait).

        Returns:
            The message, or None when the timeout expired first.

        Raises:
            BrokenError: the peer closed or reset the connection (or it ended earlier).
            FrameTooLarge, DecodeError: this message was hostile; the connection is now closed.
            ClosedError: the connection was closed locally.
            BusyError: another thread is inside ``recv`` on this receiver.
        """
        if self._busy:
            raise BusyError(f"{self._con.con_id}: concurrent recv on one CltRecver; share it through links.Ref")
        self._busy = True
        try:
            if self._pending:
                return self._pending.popleft()
            return self._recv(timeout)
        finally:
            self._busy = False

    def _recv(self, timeout: float | None) -> Any:
        con, link, transport = self._con, self._link, self._con.transport
        deadline: float | None = None
        while True:
            # Checked before parsing: after a protocol error the buffer still holds the hostile
            # frame, which must not be parsed (and logged) again; later calls get the stored error.
            if con.closed:
                raise con.error()
            msg = self._next(raise_errors=True)
            if msg is not NEED_DATA:
                self._dispatch(msg)
                return msg
            try:
                n = transport.recv_into(link.buffer.writable())
            except LinksError as e:
                self._ended(e)
                raise con.error() from e
            if n:
                link.buffer.commit(n)
                continue
            if timeout is not None:
                now = time.monotonic()
                if deadline is None:
                    deadline = now + timeout
                if now >= deadline:
                    return None
                transport.wait_readable(deadline - now)
            else:
                transport.wait_readable(None)

    def __iter__(self) -> Iterator[Any]:
        """Messages until the connection ends (then iteration stops quietly)."""
        while True:
            try:
                yield self.recv()
            except (BrokenError, ClosedError):
                return

    def drive_handshake(self, deadline: float) -> bool:
        """Receive (dispatching, and keeping messages for later ``recv``) until the protocol
        reports connected. False when the monotonic ``deadline`` passed first."""
        protocol = self._con.protocol
        while not protocol.is_connected():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            msg = self._recv(remaining)
            if msg is not None:
                self._pending.append(msg)
        return True

    # -- poll thread ----------------------------------------------------------------------

    def on_readable(self) -> bool:
        """One read and the frames it completed (plus any left from before it was spawned).

        Always True: the connection's own close removes this receiver from the poll handler
        (inline, when it happens here on the poll thread).
        """
        con = self._con
        if con.closed:
            return True
        buffer = self._link.buffer
        try:
            n = con.transport.recv_into(buffer.writable())
        except LinksError as e:
            self._ended(e)
            return True
        buffer.commit(n)
        next_message, dispatch = self._next, self._dispatch
        while not con.closed:
            msg = next_message(raise_errors=False)
            if msg is NEED_DATA:
                break
            dispatch(msg)
        return True

    def on_poll_failure(self, error: BaseException | None) -> None:
        """The poll thread removed us (a callback raised, or shutdown): end the connection."""
        if error is None:
            self._con.close("poll_shutdown")
        else:
            self._con.close("recver_failed", BrokenError(f"receiver failed: {error!r}", "recver_failed"))

    # -- shared ---------------------------------------------------------------------------

    def _next(self, raise_errors: bool) -> Any:
        try:
            return self._link.next_message()
        except FrameTooLarge as e:
            self._con.log.warning("frame.too_large", size=e.size, max_frame_size=e.max_frame_size)
            self._con.close("frame.too_large", BrokenError(str(e), "frame.too_large"))
            if raise_errors:
                raise
        except DecodeError as e:
            self._con.log.warning("frame.decode_failed", error=str(e))
            self._con.close("frame.decode_failed", BrokenError(str(e), "frame.decode_failed"))
            if raise_errors:
                raise
        return NEED_DATA

    def _dispatch(self, msg: Any) -> None:
        if self._on_recv is not None:
            self._on_recv(msg)
        self._callback.on_recv(self._con.con_id, msg)
        if self._send_reply is not None:
            self._send_reply(msg, self._reply_con)

    def _ended(self, error: LinksError) -> None:
        if isinstance(error, ClosedError):
            self._con.close("closed")
        else:
            self._con.close(getattr(error, "reason", "broken"), error)
