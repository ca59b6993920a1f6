"""``Correlator``: call/response over a protocol of your own, whose messages carry their ids.

For a protocol that numbers its requests already (an order token, a JSON ``"id"``), the
msgpack envelope is in the way. A ``Correlator`` takes three functions instead: how to send a
message, which id an outgoing request carries, and which id an incoming message answers
(None: it answers nothing, it is not a reply). Then ``call(msg, timeout)`` sends ``msg`` and
waits for the message that answers it, ``call_async`` gives a future, with the same
semantics as ``links.rpc.Peer``: ids retired on timeout and cancel (a late reply is dropped,
logged at debug), ``max_in_flight``, every pending call failed at once by ``fail_all``.

Wiring: feed it what arrives (``feed(msg)`` from your ``on_recv`` or callback, or chain its
``callback`` in), and fail it when the connection ends (``fail_all`` from
``on_disconnect``). Replies are matched by id in whatever order they come; a message that is
no reply (``reply_id`` returned None) or answers no pending call is left to the rest of your
code (``feed`` returns False).
"""

from __future__ import annotations

from collections.abc import Callable, Hashable
from concurrent.futures import Future
from typing import Any, Generic, TypeVar

from .._callbacks import Callback
from .._clock import deadline_after
from .._core._conid import ConId
from .._core._status import SendStatus
from .._log import get_logger
from .._threads import on_runtime_thread
from .._timer import Timer
from ._calls import Calls
from ._errors import CallTimeout

__all__ = ["Correlator"]

ReqT = TypeVar("ReqT")
RepT = TypeVar("RepT")

_log = get_logger("rpc")


class Correlator(Generic[ReqT, RepT]):
    """Calls over your own messages (see the module docstring).

    Args:
        send: sends one message: ``send(msg, timeout)``; a ``links`` sender's ``send`` (a
            ``CltSender``, a ``Ref``, a hook's ``con.send``). A ``SendStatus.WOULD_BLOCK``
            it returns makes the call a ``CallTimeout`` (not sent).
        request_id: the id an outgoing request carries (hashable, unique among pending calls).
        reply_id: the id an incoming message answers, or None when it is not a reply.
        max_in_flight: the most calls pending at once.
        timer: runs the deadlines of ``call_async`` (default: links' default timer).
    """

    def __init__(
        self,
        send: Callable[[ReqT, float | None], Any],
        *,
        request_id: Callable[[ReqT], Hashable],
        reply_id: Callable[[RepT], Hashable | None],
        max_in_flight: int = 10_000,
        timer: Timer | None = None,
    ) -> None:
        self._send = send
        self._request_id = request_id
        self._reply_id = reply_id
        self.calls = Calls(max_in_flight, timer)

    def call(self, msg: ReqT, timeout: float | None = None) -> RepT:
        """Send ``msg`` and wait for the message that answers it.

        Returns:
            The reply (the message whose ``reply_id`` is ``msg``'s ``request_id``).

        Raises:
            CallTimeout: no reply within ``timeout`` seconds (None: as long as it takes).
            InFlightLimit: ``max_in_flight`` calls are pending and ``timeout`` is 0.
            DuplicateId: a call with this id is pending already.
            RuntimeError: called on the poll or timer thread (use ``call_async`` there).
            What ``fail_all`` was given, and what ``send`` raises.
        """
        deadline = deadline_after(timeout)
        if on_runtime_thread():
            raise RuntimeError("call() on the poll or timer thread would wait for a reply only that thread reads: use call_async()")
        calls = self.calls
        call_id, waiter = calls.open_waiter(self._request_id(msg), timeout)
        self._send_or_retire(msg, timeout, call_id, waiter)
        reply: RepT = calls.wait(call_id, waiter, deadline)
        return reply

    def call_async(self, msg: ReqT, timeout: float | None = None) -> Future[RepT]:
        """Send ``msg`` and return a future of its reply (``CallTimeout`` after ``timeout``;
        ``cancel()`` retires it).

        Raises:
            As ``call``, when ``msg`` cannot be sent.
        """
        limit = None if deadline_after(timeout) is None else timeout
        call_id, future = self.calls.open_future(self._request_id(msg), limit)
        self._send_or_retire(msg, timeout, call_id, future)
        return future

    def _send_or_retire(self, msg: ReqT, timeout: float | None, call_id: Hashable, token: Any) -> None:
        try:
            status = self._send(msg, timeout)
        except BaseException:
            self.calls.retire(call_id, token)
            raise
        if status is SendStatus.WOULD_BLOCK:
            self.calls.retire(call_id, token)
            raise CallTimeout(f"call {call_id!r}: not sent, the connection had no room in time")

    def feed(self, msg: RepT) -> bool:
        """Offer a received message: True if it answered a pending call (which it completed).

        A reply to a call retired already (timed out, cancelled) is dropped, logged at debug
        (``rpc.late_reply``), and False is returned, as for a message that is not a reply.
        """
        call_id = self._reply_id(msg)
        if call_id is None:
            return False
        if self.calls.complete(call_id, None, msg):
            return True
        if self.calls.table.was_retired(call_id):
            _log.debug("rpc.late_reply", msgid=repr(call_id))
        return False

    def fail_all(self, error: Callable[[], BaseException] | BaseException, *, end: bool = False) -> int:
        """Fail every pending call (the connection ended): with ``error()`` (a fresh exception
        each), or with a copy of ``error``. With ``end``, later calls fail the same way at once.

        Returns:
            How many calls were pending.
        """
        make = error if callable(error) else _copier(error)
        return self.calls.fail_all(make, end=make if end else None)  # type: ignore[arg-type]

    @property
    def in_flight(self) -> int:
        """How many calls are pending."""
        return len(self.calls.table)

    @property
    def callback(self) -> Callback:
        """A ``links.Callback`` whose ``on_recv`` feeds this correlator (chain it: ``mine + c.callback``)."""
        return _FeedCallback(self)


def _copier(error: BaseException) -> Callable[[], BaseException]:
    def make() -> BaseException:
        again = type(error).__new__(type(error))
        again.args = error.args
        again.__dict__.update(error.__dict__)
        return again

    return make


class _FeedCallback(Callback):
    """Feeds every received message to a ``Correlator``."""

    def __init__(self, correlator: Correlator[Any, Any]) -> None:
        self._feed = correlator.feed

    def on_recv(self, con_id: ConId, msg: Any) -> None:
        self._feed(msg)
