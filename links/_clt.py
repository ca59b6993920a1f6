"""``Clt``: one connection, owning a ``CltRecver`` and a ``CltSender``.

Use it whole on one thread (``send`` / ``recv``), or take it apart:

* ``split()`` → ``(CltRecver, CltSender)`` for a reading and a writing thread;
* ``split_ref()`` → the same halves wrapped in shareable ``Ref`` handles;
* ``into_sender_with_spawned_recver()`` → the receiver moves to the poll thread (messages
  now reach the callback there) and you keep the sender; ``..._ref()`` returns it as a ``Ref``.

After any of these the ``Clt`` itself is spent: its own methods raise ``ClosedError``, and the
halves carry on. Closing any half, or any clone of a ref, ends the connection for all of
them and runs ``on_disconnect`` exactly once.

Connecting (``Clt.connect``) dials with retries until ``timeout``, runs ``Protocol.on_connect``
(which may send a login) and, for a protocol whose ``is_connected()`` starts False, receives
until it turns True, all within the same ``timeout``. Messages that arrive during that
handshake are dispatched as usual and kept for ``recv``. An exception raised by a protocol
hook during the handshake (a login rejection, say) closes the connection and propagates.

When the protocol sets ``heartbeat_interval``, the connection schedules ``send_heartbeat`` on
its timer, through its (thread-safe) sender; the task ends when the connection does.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from ._callbacks import Callback, DevNullCallback
from ._connection import Connection
from ._core._conid import Addr, ConId, Role, parse_addr
from ._core._link import Link
from ._core._protocol import Protocol
from ._core._status import SendStatus, TaskStatus
from ._errors import ClosedError, ConnectTimeout, LinksError
from ._gate import Permit
from ._poll import PollHandler
from ._recver import CltRecver
from ._ref import Ref
from ._runtime import default_poll_handler, default_timer
from ._sender import CltSender
from ._timer import Timer
from ._transport import Transport, dial, socket_addrs

__all__ = ["Clt", "ProtocolFactory"]

ProtocolFactory = Callable[[], Protocol]


class Clt:
    """A connection: send, receive, split, or spawn its receiver into the poll thread."""

    def __init__(self, connection: Connection, recver: CltRecver, sender: CltSender, poll_handler: PollHandler | None) -> None:
        self._con = connection
        self._recver: CltRecver | None = recver
        self._sender: CltSender | None = sender
        self._poll = poll_handler

    # -- construction ---------------------------------------------------------------------

    @classmethod
    def connect(
        cls,
        addr: str | Addr,
        *,
        protocol: ProtocolFactory,
        callback: Callback | None = None,
        timeout: float = 1.0,
        retry_after: float = 0.05,
        name: str = "clt",
        poll_handler: PollHandler | None = None,
        timer: Timer | None = None,
    ) -> Clt:
        """Connect to ``"host:port"`` and complete the protocol's handshake.

        Args:
            protocol: a ``Protocol`` subclass or zero-argument factory; called once.
            callback: sees every message in both directions (default: none).
            timeout: seconds for dialing (with retries) and the handshake together.
            retry_after: pause between refused dial attempts.
            name: shown in ``con_id`` and logs.
            poll_handler, timer: runtime threads to use (default: the shared ones).

        Raises:
            ConnectTimeout: no connection, or no completed handshake, within ``timeout``.
        """
        deadline = time.monotonic() + timeout
        sock = dial(parse_addr(addr), timeout=timeout, retry_after=retry_after)
        clt = cls.from_socket(
            sock, Role.INITIATOR, protocol=protocol, callback=callback, name=name,
            poll_handler=poll_handler, timer=timer,
        )  # fmt: skip
        recver = clt._recver
        assert recver is not None
        try:
            done = recver.drive_handshake(deadline)
        except BaseException:
            clt._con.close("handshake_failed")
            raise
        if not done:
            clt._con.close("handshake_timeout")
            raise ConnectTimeout(f"{clt.con_id}: handshake did not complete within {timeout}s")
        return clt

    @classmethod
    def from_socket(
        cls,
        sock: socket.socket,
        role: Role,
        *,
        protocol: ProtocolFactory,
        callback: Callback | None = None,
        name: str = "clt",
        poll_handler: PollHandler | None = None,
        timer: Timer | None = None,
        permit: Permit | None = None,
    ) -> Clt:
        """Wrap a connected socket (``Svc`` uses this for accepted ones); runs ``on_connect``."""
        local, peer = socket_addrs(sock)
        con_id = ConId(role, name, local, peer)
        instance = protocol()
        timer = default_timer() if timer is None else timer
        connection = Connection(con_id, Transport(sock), instance, timer, permit)
        link = Link(instance)
        callback = DevNullCallback() if callback is None else callback
        sender = CltSender(connection, link, callback)
        connection.sender = sender
        recver = CltRecver(connection, link, callback, reply_con=sender)
        connection.log.info("clt.connected", role=role.value)
        try:
            instance.on_connect(sender)
        except BaseException:
            connection.close("on_connect_failed")
            raise
        interval = instance.heartbeat_interval
        if interval:
            connection.add_task(timer.schedule(f"heartbeat {con_id}", interval, _heartbeat(connection, sender)))
        return cls(connection, recver, sender, poll_handler)

    # -- whole-connection use ---------------------------------------------------------------

    @property
    def con_id(self) -> ConId:
        return self._con.con_id

    def send(self, msg: Any, timeout: float | None = None) -> SendStatus:
        """See ``CltSender.send``."""
        return self._halves()[1].send(msg, timeout)

    def send_many(self, msgs: Iterable[Any], timeout: float | None = None) -> SendStatus:
        """See ``CltSender.send_many``."""
        return self._halves()[1].send_many(msgs, timeout)

    def recv(self, timeout: float | None = None) -> Any:
        """See ``CltRecver.recv``."""
        return self._halves()[0].recv(timeout)

    def __iter__(self) -> Iterator[Any]:
        return iter(self._halves()[0])

    def is_connected(self) -> bool:
        return self._con.is_connected()

    def close(self) -> None:
        """End the connection (both halves, every ref). Idempotent."""
        self._con.close()

    def __enter__(self) -> Clt:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Clt({self._con.con_id}, connected={self._con.is_connected()})"

    # -- taking it apart --------------------------------------------------------------------

    def split(self) -> tuple[CltRecver, CltSender]:
        """The two halves, for a reading thread and a writing thread."""
        halves = self._halves()
        self._recver = self._sender = None
        return halves

    def split_ref(self) -> tuple[Ref[CltRecver], Ref[CltSender]]:
        """The two halves as shareable ``Ref`` handles."""
        recver, sender = self.split()
        return Ref(recver), Ref(sender)

    def into_sender_with_spawned_recver(self) -> CltSender:
        """Move the receiver into the poll thread; keep (and return) the sender."""
        recver, sender = self.split()
        poll = default_poll_handler() if self._poll is None else self._poll
        if self._con.spawned(poll, recver):
            poll.add(recver)
        return sender

    def into_sender_with_spawned_recver_ref(self) -> Ref[CltSender]:
        """Like ``into_sender_with_spawned_recver``, as a shareable ``Ref``."""
        return Ref(self.into_sender_with_spawned_recver())

    def _halves(self) -> tuple[CltRecver, CltSender]:
        if self._recver is None or self._sender is None:
            raise ClosedError(f"{self._con.con_id}: this Clt was split; use its halves")
        return self._recver, self._sender


def _heartbeat(connection: Connection, sender: CltSender) -> Callable[[], TaskStatus]:
    protocol = connection.protocol

    def beat() -> TaskStatus:
        if connection.closed:
            return TaskStatus.TERMINATE
        try:
            protocol.send_heartbeat(sender)
        except LinksError as e:
            connection.log.warning("heartbeat.failed", error=str(e))
        return TaskStatus.TERMINATE if connection.closed else TaskStatus.COMPLETED

    return beat
