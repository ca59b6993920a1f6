"""``RpcProtocol``: msgpack-rpc as a links ``Protocol``, one instance per connection.

It composes a ``MsgpackFramer`` and a messenger with the hooks, so it runs on every kind of
links connection unchanged (a ``Clt``, split halves and refs, ``reconnect=``, a resumable
session, TLS, a channel of ``links.mux``, each connection of a ``Svc``). The calling side,
its table and its waiters live in a ``Peer`` (``links.rpc._peer``) that outlives the protocol
instances a reconnect makes; the serving side is a ``Server``'s methods.

Receiving (the receiving thread: the poll thread when spawned; it never waits here)
    A response completes its call through the peer's table: checked inline, one lock, no
    thread handoff. A request runs its handler (on this thread, or submitted to the server's
    executor; an ``async def`` handler's coroutine goes to the server's event loop); a
    notification too, with no answer. Everything else is logged and dropped, the
    connection staying up: ``rpc.bad_envelope`` (not msgpack-rpc), ``rpc.bad_message`` (not
    decodable within the limits), ``rpc.unknown_reply`` (an id never pending), and at debug
    ``rpc.late_reply`` (a call retired already: timed out, cancelled or failed).

Bounded work per connection
    Calls handed to the server's executor or loop count as running until they are done; past the
    server's ``max_running`` a request is answered ``"Busy: ..."`` at once (a notification is
    dropped, logged ``rpc.busy`` at debug), so one client cannot queue unbounded work, nor
    memory, in the executor. (A handler that returns a future started that work itself: it
    bounds its own.)

Answering
    Replies made while a read's batch of messages is dispatched are gathered and written
    together once the batch is done (one ``send_many``: one write for a whole pipelined read,
    not one per call). A reply made later (a handler's future, the executor) is sent on its
    own, from the thread that finished it; from an event loop's thread it never waits for
    room (as on the poll thread), so an async handler's reply cannot stall the loop. A reply that cannot be encoded becomes an error
    reply saying so. On the poll thread a reply never waits: one the socket has no room for
    (a client that does not read its replies) is dropped and logged (``rpc.replies_dropped``).
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from concurrent.futures import Future
from functools import partial
from inspect import iscoroutinefunction
from types import CoroutineType
from typing import TYPE_CHECKING, Any

import msgpack  # type: ignore[import-untyped]  # no stubs: msgpack is Any to mypy

from .._core._protocol import Handle, Protocol
from .._core._status import SendStatus
from .._errors import LinksError
from .._log import get_logger
from ._errors import BadEnvelope, RemoteError
from ._msgpack import MsgpackFramer, MsgpackMessenger
from ._wire import Notification, Request, Undecodable, decode, error_text, error_value

if TYPE_CHECKING:
    from .._core._conid import ConId
    from ._peer import Peer
    from ._server import Server

__all__ = ["RpcProtocol", "Busy"]

_packb = msgpack.packb
_log = get_logger("rpc")
#: Bad messages logged at warning per connection; the rest at debug (a peer must not flood logs).
_LOUD = 10


class Busy(RuntimeError):
    """A connection has ``max_running`` calls running already (the error reply's type name)."""


class _Messenger(MsgpackMessenger):
    """A ``MsgpackMessenger`` that tells its protocol how many messages a read brought, so the
    replies made while they are dispatched go out together."""

    def __init__(self, protocol: RpcProtocol, **limits: Any) -> None:
        super().__init__(**limits)
        self._protocol = protocol

    def deserialize(self, payload: Any) -> Any:
        self._protocol.batch_left = 1
        return super().deserialize(payload)

    def deserialize_many(self, payloads: list[Any]) -> list[Any]:
        msgs = super().deserialize_many(payloads)
        self._protocol.batch_left = len(msgs)
        return msgs


class RpcProtocol(Protocol[Any, Any]):
    """msgpack-rpc over one connection (see the module docstring); made by ``Peer.protocol``
    and ``Server.protocol``, which are the factories to pass as ``protocol=``."""

    def __init__(
        self, peer: Peer, server: Server | None, *, max_frame_size: int = 1 << 20, **limits: Any
    ) -> None:
        self.framer = MsgpackFramer(max_frame_size=max_frame_size)
        self.messenger = _Messenger(self, **limits)
        self.peer = peer
        self.server = server
        self.con: Handle | None = None
        self.closing = False  # on_close ran: this side ended it
        self.ended = False  # on_disconnect ran
        self.batch_left = 0
        self._replies: list[bytes] = []
        self._complete = peer.calls.complete
        self._packer = msgpack.Packer()  # replies made on the receiving thread only
        self._bad = 0
        # Calls handed to the executor, not done yet: bounded by the server's max_running, so a
        # client cannot queue unbounded work on it.
        self._running: set[object] = set()

    # -- lifecycle ------------------------------------------------------------------------

    def on_connect(self, con: Handle) -> None:
        """Serve this connection: the peer sends through ``con`` from now on."""
        self.con = con
        self.peer.attached(self, con)

    def on_close(self, con: Handle) -> None:
        """This side is closing: pending calls will fail with ``ClosedError``."""
        self.closing = True

    def on_disconnect(self, con_id: ConId) -> None:
        """Fail every pending call at once (how: see ``Peer.detached``)."""
        self.peer.detached(self)

    # -- receiving ------------------------------------------------------------------------

    def on_recv(self, msg: Any) -> None:
        """Complete a call (response), run a handler (request, notification), or log why not."""
        try:
            if type(msg) is list and len(msg) == 4 and msg[0] == 1 and type(msg[1]) is int:
                error = msg[2]
                if not self._complete(msg[1], None if error is None else RemoteError.from_wire(error), msg[3]):
                    self._stray_reply(msg[1])
            elif type(msg) is list and len(msg) == 4 and msg[0] == 0 and type(msg[2]) is str and type(msg[3]) is list:
                self._request(msg[1], msg[2], msg[3])
            else:
                self._other(msg)
        finally:
            self.batch_left -= 1
            if self.batch_left <= 0 and self._replies:
                self._flush()

    def _other(self, msg: Any) -> None:
        if type(msg) is Undecodable:
            self._complain("rpc.bad_message", msg.reason)
            return
        try:
            envelope = decode(msg)
        except BadEnvelope as e:
            self._complain("rpc.bad_envelope", str(e))
            if type(msg) in (list, tuple) and len(msg) == 4 and msg[0] == 0 and type(msg[1]) is int:
                self.reply(msg[1], error_text("BadRequest", str(e)), None)  # its id is usable: answer it
            return
        if isinstance(envelope, Request):
            self._request(*envelope)
        elif isinstance(envelope, Notification):
            self._notification(envelope.method, envelope.params)
        else:  # a response with a bool kind or a tuple: completed the general way
            error = envelope.error
            if not self._complete(envelope.msgid, None if error is None else RemoteError.from_wire(error), envelope.result):
                self._stray_reply(envelope.msgid)

    def _stray_reply(self, msgid: int) -> None:
        if self.peer.calls.table.was_retired(msgid):
            _log.debug("rpc.late_reply", con_id=str(self._con_id()), msgid=msgid)
        else:
            self._complain("rpc.unknown_reply", f"no call with msgid {msgid} was made", msgid=msgid)

    def _complain(self, event: str, error: str, **fields: Any) -> None:
        self._bad += 1
        log = _log.warning if self._bad <= _LOUD else _log.debug
        log(event, con_id=str(self._con_id()), error=error, count=self._bad, **fields)

    def _con_id(self) -> Any:
        return self.con.con_id if self.con is not None else None

    # -- serving --------------------------------------------------------------------------

    def _handler(self, method: str) -> Callable[..., Any] | None:
        server = self.server
        return None if server is None else server.methods.get(method)

    def _request(self, msgid: Any, method: str, params: list[Any]) -> None:
        if type(msgid) is not int or not 0 <= msgid <= 0xFFFFFFFF:
            self._complain("rpc.bad_envelope", f"msgid must be a u32, not {msgid!r:.60}")
            return
        fn = self._handler(method)
        if fn is None:
            self.reply(msgid, error_text("NoSuchMethod", f"no method {method!r}"), None)
            return
        server = self.server
        assert server is not None  # fn came from it
        if server.executor is not None and not iscoroutinefunction(fn):
            self._submit(msgid, server, fn, params)
            return
        try:
            result = fn(*params)
        except Exception as e:
            self.reply(msgid, error_value(e), None)
            return
        if isinstance(result, Future):
            result.add_done_callback(partial(self._reply_done, msgid, None))
        elif type(result) is CoroutineType:
            token = object()
            try:
                future = self._start(server, result, token)
            except RuntimeError as e:  # no loop, a closed loop, or too many running
                self.reply(msgid, error_value(e), None)
                return
            # Done on the loop's thread: the reply must not wait there for room (timeout=0).
            future.add_done_callback(partial(self._reply_done, msgid, token, timeout=0))
        else:
            self.reply(msgid, None, result)

    def _submit(self, msgid: int, server: Server, fn: Callable[..., Any], params: list[Any]) -> None:
        """Run a call on the server's executor (unless this connection has ``max_running`` there)."""
        if len(self._running) >= server.max_running:
            self.reply(msgid, error_text("Busy", f"{server.max_running} calls of this connection on the executor"), None)
            return
        token = object()
        self._running.add(token)
        try:
            server.executor.submit(fn, *params).add_done_callback(partial(self._reply_done, msgid, token))  # type: ignore[union-attr]
        except RuntimeError as e:  # the executor was shut down
            self._running.discard(token)
            self.reply(msgid, error_value(e), None)

    def _start(self, server: Server, coro: Coroutine[Any, Any, Any], token: object) -> Future[Any]:
        """Hand an async handler's coroutine to the server's loop; it counts as running.

        Raises:
            RuntimeError: no loop or a closed one (``Coroutines.submit``); ``Busy``: this
                connection has ``max_running`` calls running already (``coro`` is closed).
        """
        if len(self._running) >= server.max_running:
            coro.close()
            raise Busy(f"{server.max_running} calls of this connection running")
        self._running.add(token)
        try:
            return server.coroutines.submit(coro, server.loop)
        except BaseException:
            self._running.discard(token)
            raise

    def _notification(self, method: str, params: list[Any]) -> None:
        fn = self._handler(method)
        if fn is None:
            self._complain("rpc.unknown_method", f"notification of unknown method {method!r:.60}")
            return
        server = self.server
        assert server is not None  # fn came from it
        token = object()
        try:
            if server.executor is not None and not iscoroutinefunction(fn):
                if len(self._running) >= server.max_running:
                    _log.debug("rpc.busy", con_id=str(self._con_id()), method=method)
                    return
                self._running.add(token)
                server.executor.submit(fn, *params).add_done_callback(partial(self._notified, method, token))
            else:
                result = fn(*params)
                if type(result) is CoroutineType:
                    self._start(server, result, token).add_done_callback(partial(self._notified, method, token))
        except Busy:
            _log.debug("rpc.busy", con_id=str(self._con_id()), method=method)
        except Exception as e:
            self._notified(method, token, None, e)

    def _notified(self, method: str, token: object, future: Future[Any] | None, error: BaseException | None = None) -> None:
        """A notification's handler finished: a failure is logged, as nobody else can hear of it."""
        self._running.discard(token)
        if future is not None and not future.cancelled():
            error = future.exception()
        if error is not None:
            _log.warning("rpc.notification_failed", con_id=str(self._con_id()), method=method, error=repr(error))

    def _reply_done(self, msgid: int, token: object | None, future: Future[Any], timeout: float | None = None) -> None:
        """A handler's future finished (any thread): send its outcome now, on its own, waiting
        at most ``timeout`` for room."""
        self._running.discard(token)  # set.discard: one C call, safe from any thread
        if future.cancelled():
            error: Any = error_text("CancelledError", "the call was cancelled on the server")
            self._send_alone(self._pack(msgid, error, None), timeout)
            return
        exc = future.exception()
        data = self._pack(msgid, error_value(exc), None) if exc is not None else self._pack(msgid, None, future.result())
        self._send_alone(data, timeout)

    def reply(self, msgid: int, error: Any, result: Any) -> None:
        """Answer request ``msgid`` (on the receiving thread): with the batch being dispatched,
        or at once outside one."""
        try:
            data = self._packer.pack([1, msgid, error, result])
        except Exception:
            self._packer = msgpack.Packer()  # a failed pack may leave bytes behind in it
            data = self._pack(msgid, error, result)
        if len(data) > self.framer.max_frame_size:
            data = self._too_large(msgid, len(data))
        if self.batch_left > 0:
            self._replies.append(data)
        else:
            self._send_alone(data)

    def _pack(self, msgid: int, error: Any, result: Any) -> bytes:
        try:
            data: bytes = _packb([1, msgid, error, result])
        except Exception as e:  # a result msgpack cannot encode: the caller learns why
            data = _packb([1, msgid, error_text("EncodeError", f"the result cannot be sent: {type(e).__name__}: {e}"), None])
        if len(data) > self.framer.max_frame_size:
            data = self._too_large(msgid, len(data))
        return data

    def _too_large(self, msgid: int, size: int) -> bytes:
        """The error reply for a result over ``max_frame_size`` (sent as it is, it would fail
        the write of every reply beside it)."""
        text = error_text("EncodeError", f"the reply is {size} bytes, over max_frame_size={self.framer.max_frame_size}")
        data: bytes = _packb([1, msgid, text, None])
        return data

    def _send_alone(self, data: bytes, timeout: float | None = None) -> None:
        con = self.con
        if con is None:
            return
        try:
            status = con.send(data, timeout)
        except LinksError as e:
            _log.debug("rpc.reply_lost", con_id=str(con.con_id), error=str(e))
            return
        if status is SendStatus.WOULD_BLOCK:
            _log.warning("rpc.replies_dropped", con_id=str(con.con_id), count=1)

    def _flush(self) -> None:
        replies, self._replies = self._replies, []
        con = self.con
        if con is None:
            return
        try:
            status = con.send_many(replies) if len(replies) > 1 else con.send(replies[0])
        except LinksError as e:
            _log.debug("rpc.reply_lost", con_id=str(con.con_id), error=str(e), count=len(replies))
            return
        if status is SendStatus.WOULD_BLOCK:
            _log.warning("rpc.replies_dropped", con_id=str(con.con_id), count=len(replies))

    def __repr__(self) -> str:
        return f"RpcProtocol({self._con_id()})"
