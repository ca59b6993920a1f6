"""``Handshake``: a just-accepted socket while a layer's own handshake runs, before any
connection exists.

A layer that speaks first on a new socket (TLS, ``links._tls_accept``; a session's HELLO,
``links.session._accept``) gets it from the acceptor with its gate permit. On the poll thread
it is a registered handler that advances as bytes arrive, never waiting, bounded by a
deadline on the timer; on a user thread (``Svc.accept``) ``read(deadline)`` waits for it.

It ends once. Done: ``step()`` said so and handed the socket on (to the next layer's
handshake, ``next``, or to a new connection). Abandoned: the socket is closed, the permit
released and the reason logged, whatever the way out (the peer left, broke the handshake,
missed the deadline, or the poll thread shut down), so a peer that never finishes cannot
keep a slot.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ._clock import time_left
from ._core._conid import Addr, format_addr
from ._core._status import TaskStatus
from ._gate import Permit
from ._transport import Transport

if TYPE_CHECKING:
    from ._poll import PollHandler
    from ._svc import Svc

__all__ = ["Handshake"]


class Handshake:
    """The shared life of a layer's server-side handshake (see the module docstring).

    A subclass gives ``timeout`` (seconds), ``timeout_reason`` and ``done_reason`` (log
    words), ``step()`` (advance with what the socket has: ``finish()`` then hand the socket
    on once done, ``abandon(reason)`` on a failure), and ``log_abandoned(reason, fields)``.
    """

    poll_kind = "handshake"
    timeout_reason = "handshake_timeout"
    done_reason = "handshake_done"

    def __init__(self, svc: Svc, transport: Transport, permit: Permit, peer: Addr) -> None:
        self.svc = svc
        self.transport = transport  # raw socket calls live there alone
        self.permit = permit
        self.peer = peer
        self.con_id = f"{svc.name}<-{format_addr(peer)}"
        self.closed = False
        self.abandoned = False
        self.next: Handshake | None = None  # the next layer's, once this one handed on to it
        self._poll: PollHandler | None = None
        self._deadline: Any = None

    @property
    def timeout(self) -> float:
        raise NotImplementedError

    def step(self) -> None:
        raise NotImplementedError

    def log_abandoned(self, reason: str, fields: dict[str, Any]) -> None:
        raise NotImplementedError

    def fileno(self) -> int:
        return self.transport.fileno()

    def start(self, poll: PollHandler) -> None:
        """Poll thread: advance there as bytes arrive, bounded by ``timeout``."""
        self._poll = poll

        def expire() -> TaskStatus:
            if not self.closed:
                poll.call_soon(lambda: self.abandon(self.timeout_reason))
            return TaskStatus.TERMINATE

        # The deadline first: add() services the socket at once, and a handshake done there
        # must find the deadline to cancel.
        self._deadline = self.svc.timer_or_default().schedule(f"{self.done_reason} {self.con_id}", self.timeout, expire)
        poll.add(self)

    def read(self, deadline: float | None) -> bool:
        """User thread: advance until done (True; the next layer's handshake included) or
        abandoned (False), waiting on the socket until ``deadline``."""
        while not self.closed:
            if not self.on_readable():
                return False
            if self.closed:
                break
            left = time_left(deadline)
            if left == 0.0:
                self.abandon(self.timeout_reason)
                return False
            self.transport.wait_readable(left)
        return True if self.next is None else self.next.read(deadline)

    def on_readable(self) -> bool:
        """One step; False when it ended the handshake as abandoned."""
        if self.closed:
            return True
        self.step()
        return not self.abandoned

    def finish(self) -> None:
        """Done: stop the deadline and the poll handler (inline on the poll thread, so the fd
        is free for whoever the socket is handed to next)."""
        self.closed = True
        if self._deadline is not None:
            self._deadline.cancel()
        if self._poll is not None:
            self._poll.remove(self, self.done_reason)

    def hand_on(self, handshake: Handshake | None) -> None:
        """After ``finish``: the next layer's handshake (if any) takes the socket over, on the
        poll thread when this one ran there, else in ``read``."""
        self.next = handshake
        if handshake is not None and self._poll is not None:
            handshake.start(self._poll)

    def abandon(self, reason: str, **fields: Any) -> None:
        """Give up: log why, close the socket, release the permit (once)."""
        if self.closed:
            return
        self.log_abandoned(reason, fields)
        self.closed = self.abandoned = True
        if self._deadline is not None:
            self._deadline.cancel()
        self.permit.release()
        if self._poll is not None:
            self._poll.remove(self, reason, then=self.transport.close)
        else:
            self.transport.close()

    def on_poll_failure(self, error: BaseException | None) -> None:
        self.abandon("poll_shutdown" if error is None else "failed")
