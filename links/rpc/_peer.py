"""``Peer``: the calling end of one logical connection, and ``connect`` to make one.

A ``Peer`` owns the pending calls (a ``Calls``: table, waiters, deadlines) and sends through
the connection its protocol instance was handed in ``on_connect``. A reconnect makes a new
protocol instance per TCP connection; the peer, its id counter and its table carry on. With
a server of its own it answers calls too, so either side of one connection may call the other.

What a pending call becomes when its connection goes
    * closed by this side (``close()``, or the service closing): ``links.ClosedError``;
    * cut, with ``reconnect=`` and no session: ``CallIndeterminate`` (a ``BrokenError``): the
      request may or may not have run. Calls made while it redials wait for the next
      connection, within their timeout, as any links send does;
    * cut, with ``session=``: nothing. The session replays what the peer missed (requests one
      way, replies the other) and drops what it already had, so each call completes exactly
      once when the session resumes (or fails when it is lost for good);
    * ended by the peer or the network otherwise: ``links.BrokenError``.
    Then (except after ``CallIndeterminate``) every later call raises the same.

Deep pipelines
    With more than ``CORK_DEPTH`` calls pending, ``call_async`` queues its request behind what
    the connection owes (``Connection.send_later``) instead of writing it: the poll thread,
    asked once per backlog, writes them together (one ``sendmsg`` for many). Order with every
    other send holds (a send writes behind what is owed), and a lone call still goes out at once.

Threads: ``call`` waits on a lock of its own, so it must not run on the poll or timer thread
(the reply it would wait for is read there): it raises ``RuntimeError`` there;
``call_async`` and ``notify`` never wait there.

Who reads the reply of a ``call``
    Over one TCP connection (plain or TLS, no session, not a channel) read by the poll thread,
    a ``call`` borrows the reading while it waits (``links._lease``): it reads the socket
    itself, so the reply wakes one thread (the caller) rather than two (the poll thread, then
    the caller). Whatever else comes meanwhile is dispatched on the caller's thread, as the
    poll thread would have: other calls' replies, notifications, and the peer's calls to this
    side's ``server`` (their handlers run there, under the poll thread's rules: a send never
    waits, a blocking ``call`` is refused). It gives the reading back as soon as its reply is
    in (or its timeout, or the end of the connection). One caller at a time: others, and
    calls over sessions and channels, wait for the poll thread to read their replies.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable, Sequence
from concurrent.futures import Future
from functools import partial
from typing import TYPE_CHECKING, Any

import msgpack  # type: ignore[import-untyped]  # no stubs: msgpack is Any to mypy

from .._clock import deadline_after, time_left
from .._attachment import Attachment
from .._clt import Clt
from .._connection import Connection
from .._core._status import SendStatus
from .._errors import BrokenError, ClosedError, LinksError
from .._state import ENDING
from .._threads import on_runtime_thread
from .._timer import Timer
from ._calls import Calls
from ._errors import CallIndeterminate, CallTimeout, InFlightLimit
from ._protocol import RpcProtocol

if TYPE_CHECKING:
    from .._core._conid import ConId
    from .._core._protocol import Handle
    from ._server import Server

__all__ = ["Peer", "connect"]

_packb = msgpack.packb
_WOULD_BLOCK = SendStatus.WOULD_BLOCK
#: Calls pending at or beyond which ``call_async`` queues its request for the poll thread to
#: write with the others (``Connection.send_later``) rather than writing it itself: with that
#: many unanswered, replies keep the poll thread busy on this connection anyway, and one write
#: of many requests costs what one of them did (a ``send`` is ~5 µs here; the module docstring).
CORK_DEPTH = 32


def _not_connected() -> LinksError:
    return BrokenError("not connected: pass peer.protocol as the connection's protocol first", "not_connected")


def _connection_of(con: Any) -> Connection | None:
    """The logical connection behind a hook handle (an attachment, or a session's sender)."""
    for name in ("connection", "_con"):
        found = getattr(con, name, None)
        if isinstance(found, Connection):
            return found
    return None


class Peer:
    """Calls over one logical connection (and, with ``server``, answers the peer's calls).

    Make one with ``links.rpc.connect(...)``, or make it yourself and pass ``peer.protocol`` as
    the ``protocol=`` of a connection you open (``links.Clt.connect``, ``mux.open``), then
    spawn its receiver (``into_sender_with_spawned_recver()``): replies are read there.

    Args:
        server: methods this side answers (the peer may call them); None: none.
        max_in_flight: the most calls pending at once (beyond it a call waits within its
            timeout, or raises ``InFlightLimit`` at once when the timeout is 0).
        timer: runs the deadlines of ``call_async`` (default: the connection's timer).
        max_frame_size: the largest message accepted or sent, in bytes.
        max_depth: the deepest nesting accepted in a message.
    """

    def __init__(
        self,
        *,
        server: Server | None = None,
        max_in_flight: int = 10_000,
        timer: Timer | None = None,
        max_frame_size: int = 1 << 20,
        max_depth: int = 32,
    ) -> None:
        self.calls = Calls(max_in_flight, timer)
        self.server = server
        self._limits: dict[str, Any] = {"max_frame_size": max_frame_size, "max_depth": max_depth}
        self._send: Any = None
        self._send_many: Any = None
        self._send_later: Any = None
        self._con: Any = None
        self._protocol: RpcProtocol | None = None
        self._owner: Any = None  # what close() closes when connect() made the connection

    def protocol(self) -> RpcProtocol:
        """A fresh protocol instance for this peer: pass the method itself as ``protocol=``."""
        return RpcProtocol(self, self.server, **self._limits)

    # -- calling --------------------------------------------------------------------------

    def call(self, method: str, *params: Any, timeout: float | None = None) -> Any:
        """Call ``method(*params)`` on the peer and wait for its result.

        Returns:
            The result the peer sent.

        Raises:
            RemoteError: the peer answered with an error (its handler raised, no such method).
            CallTimeout: no reply within ``timeout`` seconds (None: wait as long as it takes).
            InFlightLimit: ``max_in_flight`` calls are pending and ``timeout`` is 0.
            ClosedError, BrokenError, CallIndeterminate: the connection ended (see the module).
            TypeError: an argument msgpack cannot encode.
            RuntimeError: called on the poll or timer thread (use ``call_async`` there).
        """
        deadline = deadline_after(timeout)
        if on_runtime_thread():
            raise RuntimeError("call() on the poll or timer thread would wait for a reply only that thread reads: use call_async()")
        calls = self.calls
        msgid, waiter = calls.open_waiter(None, timeout)
        # One budget for all of it: what waiting for room took is not given again to the send.
        if not self._request(msgid, waiter, method, params, timeout if deadline is None else time_left(deadline)):
            raise CallTimeout(f"{method}: not sent, the connection had no room in time")
        con = self._con
        if type(con) is Attachment and con.reading:  # read by the poll thread: read the reply here
            con.handler.read_while(waiter.lock.locked, deadline)
        return calls.wait(msgid, waiter, deadline)

    def call_async(self, method: str, *params: Any, timeout: float | None = None) -> Future[Any]:
        """Send a call to ``method(*params)`` and return at once.

        Returns:
            A ``concurrent.futures.Future`` of the result: it fails with ``RemoteError``,
            ``CallTimeout`` after ``timeout`` seconds, or the connection's end; ``cancel()`` it
            to stop waiting (its id is retired, a late reply dropped).

        Raises:
            InFlightLimit, CallTimeout (no room in time: not sent), ClosedError, BrokenError,
            TypeError: as ``call``, when the request cannot be sent.
        """
        deadline = deadline_after(timeout)  # refuses nan, negative, non-numbers
        msgid, future = self.calls.open_future(None, None if deadline is None else timeout)
        if not self._request(msgid, future, method, params, timeout if deadline is None else time_left(deadline), True):
            raise CallTimeout(f"{method}: not sent, the connection had no room in time")
        return future

    def try_call(self, method: str, params: Sequence[Any], timeout: float | None = None) -> Future[Any] | None:
        """``call_async`` that never waits, for an event loop: the call is sent now, or not at all.

        Returns:
            The future of the result, as ``call_async``; None when it cannot go now (the
            connection has no room, or is redialing; ``max_in_flight`` calls are pending):
            nothing was sent, try again later.

        Raises:
            ClosedError, BrokenError, CallIndeterminate: the connection ended. TypeError: an
            argument msgpack cannot encode.
        """
        deadline_after(timeout)  # refuses nan, negative, non-numbers
        try:
            msgid, future = self.calls.open_future(None, timeout, wait=False)
        except InFlightLimit:
            return None
        return future if self._request(msgid, future, method, list(params), 0) else None

    def _request(
        self, msgid: Hashable, pending: Any, method: str, params: Any, timeout: float | None, may_queue: bool = False
    ) -> bool:
        """Send request ``msgid``, waiting up to ``timeout`` for room: False when there was none in
        time. Unsent (False, or raising), its ``pending`` waiter or future is retired. With
        ``may_queue`` and more than ``CORK_DEPTH`` calls pending, the request is queued for the
        poll thread's next gathered write instead (replies are due anyway)."""
        calls = self.calls
        try:
            request = _packb([0, msgid, method, params])
            later = self._send_later
            if may_queue and later is not None and len(calls.table) > CORK_DEPTH and later(request):
                return True
            send = self._send or _fail_send
            status = send(request, timeout)
        except BaseException:
            calls.retire(msgid, pending)
            raise
        if status is _WOULD_BLOCK:
            calls.retire(msgid, pending)
            return False
        return True

    def call_many(self, calls: Iterable[tuple[str, Sequence[Any]]], *, timeout: float | None = None) -> list[Future[Any]]:
        """Send many calls in one write: ``call_async`` for each ``(method, params)``, with the
        requests written together (one system call instead of one per call).

        Returns:
            A future per call, in order.

        Raises:
            As ``call_async``; then none of the calls was sent. With fewer than
            ``len(calls)`` free places under ``max_in_flight`` it waits for them as one call does.
            ValueError: more calls than ``max_in_flight``.
        """
        limit = None if deadline_after(timeout) is None else timeout
        table = self.calls
        calls = list(calls)
        if len(calls) > table.table.max_in_flight:
            raise ValueError(f"{len(calls)} calls at once, more than max_in_flight={table.table.max_in_flight}")
        opened: list[tuple[Hashable, Future[Any]]] = []
        try:
            requests = []
            for method, params in calls:
                msgid, future = table.open_future(None, limit)
                opened.append((msgid, future))
                requests.append(_packb([0, msgid, method, params]))
            send_many = self._send_many or _fail_send
            status = send_many(requests, timeout)
        except BaseException:
            for msgid, future in opened:
                table.retire(msgid, future)
            raise
        if status is _WOULD_BLOCK:
            for msgid, future in opened:
                table.retire(msgid, future)
            raise CallTimeout(f"{len(opened)} calls not sent: the connection had no room in time")
        return [future for _, future in opened]

    def notify(self, method: str, *params: Any, timeout: float | None = None) -> SendStatus:
        """Send a notification of ``method(*params)``: the peer runs it and never answers.

        Returns:
            ``SendStatus.COMPLETED``, or ``WOULD_BLOCK`` when the connection had no room within
            ``timeout`` (as ``links.CltSender.send``).

        Raises:
            ClosedError, BrokenError: the connection ended; TypeError: an argument msgpack
            cannot encode.
        """
        if self.calls.ended is not None:
            raise self.calls.ended()
        send = self._send or _fail_send
        status: SendStatus = send(_packb([2, method, params]), timeout)
        return status

    @property
    def in_flight(self) -> int:
        """How many calls are pending (sent, or being sent, and not answered)."""
        return len(self.calls.table)

    @property
    def con_id(self) -> ConId | None:
        """The identity of the connection (None before it is up)."""
        con = self._con
        return None if con is None else con.con_id

    def close(self) -> None:
        """Close the connection (every pending call fails with ``ClosedError``). Idempotent."""
        target = self._owner if self._owner is not None else self._con
        if target is not None:
            target.close()
        else:
            self.calls.fail_all(lambda: ClosedError("closed"), end=lambda: ClosedError("closed"))

    def __enter__(self) -> Peer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Peer({self.con_id}, in_flight={self.in_flight})"

    # -- told by the protocol instance ----------------------------------------------------

    def attached(self, protocol: RpcProtocol, con: Handle) -> None:
        """A connection is up (``on_connect``): send through it from now on.

        Raises:
            RuntimeError: the peer serves another connection now (``peer.protocol`` given to
                a service, or to two connections): use ``Server.protocol`` there.
        """
        if self._protocol is not None and not self._protocol.ended:
            raise RuntimeError("a Peer serves one connection at a time: give a service server.protocol, not peer.protocol")
        connection = _connection_of(con)
        if connection is not None and connection.session is None and connection.reconnect is not None:
            # Through the logical connection, not this TCP connection alone: a call made while
            # it redials then waits for the next one, as any send does with reconnect=.
            self._send = connection.send
            self._send_many = lambda msgs, timeout: connection.write(None, list(msgs), timeout)
            self._send_later = connection.send_later
        else:
            self._send = con.send
            self._send_many = con.send_many
            self._send_later = None if connection is None or connection.session is not None else partial(connection.send_later, att=con)
        self._con = con
        self._protocol = protocol
        if self.calls.timer is None:
            self.calls.timer = con.timer
        if self.server is not None:
            self.server.joined(self)

    def detached(self, protocol: RpcProtocol) -> None:
        """The connection of ``protocol`` ended (``on_disconnect``): fail what was pending."""
        if protocol is not self._protocol:
            return
        protocol.ended = True
        con_id = self.con_id
        connection = _connection_of(self._con)
        if protocol.closing:

            def ended() -> LinksError:
                return ClosedError(f"{con_id} is closed")

            self.calls.fail_all(ended, end=ended)
        elif connection is not None and connection.reconnect is not None and connection.session is None and connection.state not in ENDING:

            def indeterminate() -> LinksError:
                return CallIndeterminate(f"{con_id}: the connection was cut with the call pending; it may or may not have run")

            self.calls.fail_all(indeterminate)
        else:

            def broken() -> LinksError:
                return BrokenError(f"{con_id}: the connection ended with the call pending", "connection_lost")

            self.calls.fail_all(broken, end=broken)
        if self.server is not None:
            self.server.left(self)


def _fail_send(data: Any, timeout: float | None) -> SendStatus:
    raise _not_connected()


def connect(
    addr: str,
    *,
    server: Server | None = None,
    max_in_flight: int = 10_000,
    max_frame_size: int = 1 << 20,
    max_depth: int = 32,
    **clt_kwargs: Any,
) -> Peer:
    """Connect to a msgpack-rpc server at ``"host:port"`` and return the ``Peer`` to call it.

    ``clt_kwargs`` are ``links.Clt.connect``'s (``timeout``, ``tls``, ``reconnect``,
    ``session``, ``name``, ``timer``, ...); the receiver is spawned (replies are read on the
    poll thread). ``server`` answers calls the other side makes on this connection.

    Raises:
        What ``links.Clt.connect`` raises (``ConnectTimeout``, ``BrokenError``, ``TLSError``, ...).
    """
    peer = Peer(
        server=server, max_in_flight=max_in_flight, timer=clt_kwargs.get("timer"),
        max_frame_size=max_frame_size, max_depth=max_depth,
    )  # fmt: skip
    clt = Clt.connect(addr, protocol=peer.protocol, **clt_kwargs)
    peer._owner = clt.into_sender_with_spawned_recver()
    return peer
