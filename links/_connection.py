"""``Connection``: what the two halves of one connection share, and how it ends.

A ``CltRecver`` and a ``CltSender`` may live on different threads (the receiver on the poll
thread, the sender with the user, heartbeats on the timer thread), yet the connection must
end once, for everybody. This object holds the shared parts (transport, protocol, con_id,
gate permit, timer handles, a bound logger) and the one ``close()``.

Close order (each step once, whoever calls first, from any thread):

0. a local close (no error) first runs ``Protocol.on_close(con)``
   while the socket still works, so a protocol can send its logout or end-of-session;
1. mark closed: every later send raises ``ClosedError`` / ``BrokenError`` at once;
2. cancel timer tasks (heartbeats, handshake deadlines);
3. ``shutdown()`` the socket: the peer sees FIN now, and any thread waiting on the fd wakes;
4. ``Protocol.on_disconnect(con_id)``;
5. release the gate permit; tell listeners (the service pool drops the connection);
6. log ``clt.disconnected`` with the reason;
7. release the fd: on the poll thread after unregistering, when the receiver is spawned
   (see ``links._poll``: closing first could let the fd number be reused under the
   selector), otherwise right here.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ._core._conid import ConId
from ._core._protocol import Protocol
from ._errors import BrokenError, ClosedError, LinksError
from ._gate import Permit
from ._log import get_logger
from ._timer import Timer, TimerHandle
from ._transport import Transport

if TYPE_CHECKING:
    from ._poll import PollHandler

__all__ = ["Connection"]


class Connection:
    __slots__ = (
        "con_id", "transport", "protocol", "timer", "log", "permit", "_lock", "_closed",
        "_error", "_listeners", "_tasks", "_poll", "_poll_handler_obj", "_closing", "sender",
    )  # fmt: skip

    def __init__(self, con_id: ConId, transport: Transport, protocol: Protocol, timer: Timer, permit: Permit | None = None) -> None:
        self.con_id = con_id
        self.transport = transport
        self.protocol = protocol
        self.timer = timer
        self.permit = permit
        self.log = get_logger("clt", con_id=str(con_id))
        self._lock = threading.Lock()
        self._closed = False
        self._closing = False
        self.sender: Any = None  # the CltSender, given to on_close
        self._error: LinksError | None = None
        self._listeners: list[Callable[[Connection], None]] = []
        self._tasks: list[TimerHandle] = []
        self._poll: PollHandler | None = None  # set while a receiver is spawned
        self._poll_handler_obj: Any = None

    @property
    def closed(self) -> bool:
        return self._closed

    def is_connected(self) -> bool:
        return not self._closed and self.protocol.is_connected()

    def error(self) -> LinksError:
        """The error to raise for an operation on the ended connection."""
        return self._error or ClosedError(f"{self.con_id} is closed")

    def add_listener(self, fn: Callable[[Connection], None]) -> None:
        """Call ``fn(self)`` once the connection has ended (at once if it already has)."""
        with self._lock:
            if not self._closed:
                self._listeners.append(fn)
                return
        fn(self)

    def add_task(self, handle: TimerHandle) -> None:
        with self._lock:
            if not self._closed:
                self._tasks.append(handle)
                return
        handle.cancel()

    def spawned(self, poll: PollHandler, handler: Any) -> bool:
        """Record that ``handler`` (the receiver) goes to ``poll``; False if already closed."""
        with self._lock:
            if self._closed or self._closing:
                return False
            self._poll, self._poll_handler_obj = poll, handler
            return True


    def close(self, reason: str = "closed", error: LinksError | None = None) -> bool:
        """End the connection (idempotent). True for the call that actually closed it.

        Args:
            reason: a short word for the log (``"closed"``, ``"peer_closed"``, ``"frame.too_large"``).
            error: the error later operations should raise; default ``ClosedError``.
        """
        with self._lock:
            if self._closed or self._closing:
                return False
            self._closing = True
        if error is None and self.sender is not None:
            try:
                self.protocol.on_close(self.sender)
            except Exception as e:
                self.log.warning("clt.on_close_failed", error=repr(e))
        with self._lock:
            self._closed = True
            self._error = error if isinstance(error, BrokenError) or error is None else BrokenError(str(error), reason)
            listeners, self._listeners = self._listeners, []
            tasks, self._tasks = self._tasks, []
        for task in tasks:
            task.cancel()
        self.transport.shutdown()
        try:
            self.protocol.on_disconnect(self.con_id)
        except Exception as e:
            self.log.error("clt.on_disconnect_failed", error=repr(e))
        if self.permit is not None:
            self.permit.release()
        for fn in listeners:
            fn(self)
        self.log.info("clt.disconnected", reason=reason, **({"error": str(error)} if error else {}))
        if self._poll is not None:
            self._poll.remove(self._poll_handler_obj, reason, then=self.transport.close)
        else:
            self.transport.close()
        return True
