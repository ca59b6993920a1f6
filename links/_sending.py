"""``Sending``: the outbound path of a ``Connection`` (a part of it, kept in a module of its own).

Every send takes the connection's write lock, finds its target attachment and hands the
frame to that attachment's ``Outbound`` (``links._outbound``): taken (written, or owed and
finished by the poll thread) or refused whole. The lock is held only for steps that never
wait; a sender that may wait (a user thread with a timeout) waits for socket room, or for
the next attachment, outside it, and a sender on the poll or timer thread never waits
(``links._threads``). Stamping (``Protocol.on_send``) runs under the lock and only once a
frame is sure to be taken, so numbers stamped there reach the wire in order and never skip.

Timeouts: ``None`` waits as long as it takes for room (bounded in practice by the
connection's ``stall_timeout``, after which the peer is dropped as a slow consumer); ``0``
never waits; ``T`` waits at most about ``T`` for room to start, then ``WOULD_BLOCK``. With a
session, messages are numbered into the replay buffer and always taken while it has room.
"""

from __future__ import annotations

import time
import threading
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from ._clock import deadline_after, time_left
from ._core._link import Link
from ._core._status import SendStatus
from ._errors import BrokenError, ClosedError, LinksError
from ._ref import released_while_waiting
from ._state import ConnState
from ._threads import on_runtime_thread

if TYPE_CHECKING:
    from ._attachment import Attachment
    from ._condition import LazyCondition
    from ._callbacks import Callback
    from ._core._conid import ConId
    from ._core._backoff import Backoff
    from ._core._protocol import Protocol

__all__ = ["Sending", "LOCK_WAIT"]

_COMPLETED = SendStatus.COMPLETED
_WOULD_BLOCK = SendStatus.WOULD_BLOCK
_CLOSED = ConnState.CLOSED
_CLOSING = ConnState.CLOSING

#: Seconds a send waits for a busy write lock at least (whatever its timeout), and a goodbye
#: sent from ``on_close``, or a send on a runtime thread, at most, before it answers WOULD_BLOCK.
LOCK_WAIT = 0.1


class Sending:
    """The outbound half of ``Connection`` (which defines the state used here)."""

    __slots__ = ("_spare_link",)  # Connection's slots hold the rest

    # Defined by Connection.
    con_id: ConId
    callback: Callback
    state: ConnState
    session: Any
    reconnect: Backoff | None
    attachment: Attachment | None
    write_lock: threading.Lock
    changed: LazyCondition
    _fast_path: bool  # no session, not closing: ``send`` may take its spelled-out common case
    _error: LinksError | None
    _protocol: Protocol | None
    _handshaking: Attachment | None
    _spare_link: Link | None  # a slot of this class (the rest are Connection's)

    def error(self) -> LinksError: ...

    def lost(self, att: Attachment, reason: str, error: LinksError | None) -> None: ...

    def send(self, msg: Any, timeout: float | None, att: Attachment | None = None, held: Any = None) -> SendStatus:
        """``write(att, [msg], timeout)``: one message, from the user's sender (``att`` None)
        or from a protocol hook (a reply on the poll thread); ``send_now`` when it may wait."""
        if timeout is None:
            return self.send_now(msg, att, held)
        return self.write(att, [msg], timeout, held)

    def send_now(self, msg: Any, att: Attachment | None = None, held: Any = None, timeout: float | None = None) -> SendStatus:
        """``send(msg, None)``, its common case spelled out (a plain connection with its
        attachment up and nothing owed, no ``on_send``): per-message ``send()`` is one syscall
        plus this Python, and the Python is what links can cut. Measured: the Python per call
        went from 5.8-7.0x a plain ``pack`` + ``send`` to 4.4-4.7x
        (``benchmarks/micro/send_path.py``), and W1 ``send()`` from 0.82-0.83x plain blocking
        sockets to 0.88-0.91x in the same runs (RESULTS.md, "Send path"). Any other case goes
        the general way (``write``); so does a failed write that waits for the next attachment.
        ``timeout=0`` (links.aio's ``send_nowait``): the same, where nothing waits.
        """
        if self._fast_path:
            lock = self.write_lock
            owing: Attachment | None = None
            done: Attachment | None = None
            # Not "with": acquire and release cost half as much. The poll and timer threads never
            # wait for it (a hook may run under it): busy, they go the general, bounded way.
            if not _lock_now(lock, timeout):
                return self.write(att, [msg], timeout, held)
            try:
                target = self.attachment if att is None else att
                if target is not None and not target.closed and not target.link.stamps and not target.outbound.backlog:
                    link = target.link
                    try:
                        frame = link.framer.encode(link.messenger.serialize(msg))
                        sent = target.transport.send_some(frame)
                    except Exception as e:
                        self._fast_send_failed(att, target, msg, e)  # raises, or falls through to wait
                    else:
                        if sent != len(frame):  # taken: the rest is owed, the poll thread finishes it
                            owing = self._owe_rest(target, frame, sent)
                        done = target
            finally:
                lock.release()
                if owing is not None:
                    owing.watch_writable()
            if done is not None:
                if done.notify_sent:  # hooks run outside the lock: the poll thread never waits on them
                    done.sent(msg)
                return _COMPLETED
        return self.write(att, [msg], timeout, held)

    def send_later(self, msg: Any, att: Attachment | None = None) -> bool:
        """Queue ``msg`` behind what ``att`` (None: the current attachment) owes, without a
        write of its own: the poll thread writes it with whatever else is owed, on its next
        pass (a writable watch, asked for once per backlog) or sooner. For a sender that knows
        more messages follow at once (links.rpc with many calls in flight): one write for many.
        Order with every other send holds, as for any owed bytes (a send finds the backlog and
        writes behind it). False when it cannot (a session, a stamping or ``on_sent`` protocol,
        no attachment, a busy lock, a full backlog): nothing was taken, send it the usual way.

        Raises:
            What encoding ``msg`` raises (the caller's bug, as for ``send``).
        """
        if not self._fast_path or not self.write_lock.acquire(False):
            return False
        watch = None
        try:
            target = self.attachment if att is None else att
            if target is None or target.closed or target.link.stamps or target.notify_sent:
                return False
            link = target.link
            if not target.outbound.defer(link.framer.encode(link.messenger.serialize(msg))):
                return False
            watch = target if target.outbound.needs_watch() else None
        finally:
            self.write_lock.release()
            if watch is not None:
                watch.watch_writable()
        return True

    def _fast_send_failed(self, att: Attachment | None, target: Attachment, msg: Any, e: Exception) -> None:
        """``send_now``'s encode or write raised ``e``: raise what the caller should see, or
        return when the user's sender waits for the next attachment instead (``_retry_after``).
        Only the transport raises ``BrokenError``/``ClosedError``; anything else is from encoding
        the message, the caller's bug (``on_error``, then raised as it is)."""
        if not isinstance(e, (BrokenError, ClosedError)):
            target.protocol.on_error(msg, e)
            raise e
        error = self._write_failed(target, (msg,), e)
        if att is not None or not self._retry_after([msg], target):
            if error is e:
                raise e
            raise error from e

    @staticmethod
    def _owe_rest(target: Attachment, frame: bytes, sent: int) -> Attachment | None:
        """The socket took ``sent`` bytes of ``frame``: owe the rest; ``target`` if the poll
        thread must be asked to finish it (after the write lock is released)."""
        target.outbound.sent_part(frame, sent)
        return target if target.outbound.needs_watch() else None

    def write(self, att: Attachment | None, msgs: list[Any], timeout: float | None, held: Any = None) -> SendStatus:
        """Stamp, encode and write ``msgs`` as one write, all or nothing.

        ``att`` None means "the current attachment, whichever it is" (the user's sender): it
        waits for one while disconnected, or, with a session, queues into the replay buffer.
        Waits happen only outside the write lock, never on a runtime thread
        (``links._threads``), and never longer than ``timeout``.
        """
        deadline = deadline_after(timeout)
        may_wait = timeout != 0 and not on_runtime_thread()
        while True:
            target = None
            taken: Any = None  # the messages taken, told of once the lock is released
            refused = False
            if not self._lock_for(deadline, may_wait):
                return self._would_block(None, msgs)
            try:
                if self.state is _CLOSED:
                    raise self.error()
                target = self._target(att)
                if self.session is not None:
                    if self.session.can_send():
                        taken = self._write_session(target, msgs)
                elif target is not None:
                    taken = self._write_plain(target, msgs, retry=att is None)
                    refused = taken is None and not target.closed  # no room (else: cut, wait for the next)
            finally:
                self._unlock(target)
            if taken is not None:
                self._tell_sent(target, taken)
                return _COMPLETED
            left = time_left(deadline)
            if not may_wait or left == 0.0 or self._poll().in_poll_thread():
                # On the thread that services this connection (an event loop's, links.aio):
                # what it would wait for, room or the next attachment, only it could bring.
                return self._would_block(target, msgs)
            self._wait(target if refused else None, left, held)

    def _wait(self, full: Attachment | None, left: float | None, held: Any) -> None:
        """Wait, outside every lock (ours, and a ``Ref``'s), for what a send lacked: room on
        ``full``'s socket, or else the next attachment or room in the replay buffer."""
        with released_while_waiting(held):
            if full is not None:
                full.outbound.wait_room(left)  # until the socket drains
                return
            with self.changed:
                # Checked again under the condition's lock: the change we would wait for may
                # have happened since the write lock was released, and its notify is not repeated.
                if self.state is not _CLOSED and not self._ready_for(self.session):
                    self.changed.wait(left)

    def _lock_for(self, deadline: float | None, may_wait: bool) -> bool:
        """Take the write lock for a send. It is held only for steps that never wait (see
        ``links._outbound``), but a hook or callback run under it may be slow, so the wait is
        bounded: by the send's timeout, but at least ``LOCK_WAIT`` (a holder merely between two
        time slices must not turn a reply into WOULD_BLOCK), and ``LOCK_WAIT`` at most for the
        goodbye of a closing connection or a send on a runtime thread."""
        closing = self.state is _CLOSING
        if deadline is None and may_wait and not closing:
            return self.write_lock.acquire()
        if closing or not may_wait:
            return self.write_lock.acquire(timeout=LOCK_WAIT)
        return self.write_lock.acquire(timeout=max(LOCK_WAIT, deadline - time.monotonic()))

    def _unlock(self, att: Attachment | None) -> None:
        """Release the write lock; if ``att`` owes bytes, the poll thread is asked to finish them."""
        watch = att is not None and not att.closed and att.outbound.needs_watch()
        self.write_lock.release()
        if watch:
            att.watch_writable()  # type: ignore[union-attr]

    def _target(self, att: Attachment | None) -> Attachment | None:
        """The attachment a write goes to (write lock held): ``att``, or the current one."""
        target = self.attachment if att is None else att
        if target is None and self.state is ConnState.HANDSHAKING:
            target = self._handshaking  # a session client's login, before publish
        if target is not None and target.closed:
            if att is not None:
                raise BrokenError(f"{att.con_id} ended", "broken")
            return None
        return target

    def _would_block(self, target: Attachment | None, msgs: list[Any]) -> SendStatus:
        protocol = target.protocol if target is not None else self._protocol
        if protocol is None and self.attachment is not None:
            protocol = self.attachment.protocol
        if protocol is not None:
            for msg in msgs:
                protocol.on_would_block(msg)
        return _WOULD_BLOCK

    def _retry_after(self, msgs: list[Any], failed: Attachment) -> bool:
        """Whether the user's sender, whose socket write of ``msgs`` on ``failed`` just raised,
        waits for the next attachment and writes them again, rather than raising.

        Only with ``reconnect=``, when the connection was cut (its own write failed, or the
        reader ended it meanwhile): that is "between attachments", like any other send. Only
        for one message: a frame whose write failed never reached the peer whole, so writing
        it again cannot duplicate it; of a failed batch, some may have. Only a failed socket
        write: an error from encoding, or from a hook after the write, is raised as it is.
        """
        return self.reconnect is not None and len(msgs) == 1 and failed.closed

    def _ready_for(self, session: Any) -> bool:
        """Whether a waiting sender can proceed now (an attachment is up, or there is room)."""
        if session is not None:
            return session.can_send()
        att = self.attachment
        return att is not None and not att.closed

    def _write_plain(self, att: Attachment, msgs: list[Any], retry: bool = False) -> Any:
        """Stamp, encode and hand ``msgs`` to ``att``'s outbound path: the messages as stamped;
        None when it has no room (nothing was stamped), or, instead of raising, when the write
        failed and ``retry`` (the user's sender) asks to wait it out (``_retry_after``)."""
        link, outbound = att.link, att.outbound
        stamped: Any = msgs
        try:
            if not outbound.has_room():
                return None
            if len(msgs) == 1:
                msg = msgs[0]
                if link.stamps:
                    msg = link.stamp(msg)
                stamped = (msg,)
                try:
                    frames = link.encode(msg)
                except Exception as e:  # a message we cannot encode is the caller's bug, not the link's
                    att.protocol.on_error(msg, e)
                    raise
            else:
                stamped, frames = link.encode_many(msgs)
            outbound.take(frames)
        except LinksError as original:
            e = self._write_failed(att, stamped, original)
            if retry and self._retry_after(msgs, att):
                return None
            if e is original:
                raise
            raise e from original
        return stamped

    def _write_failed(self, att: Attachment, msgs: Iterable[Any], original: LinksError) -> LinksError:
        """A plain write on ``att`` raised ``original``: tell the protocol, end the attachment
        if the peer is at fault, and return the error the caller should see."""
        e = original
        if isinstance(e, ClosedError) and att.closed and not (self.state is _CLOSED and self._error is None):
            # The socket was shut under us by another thread that found the connection
            # broken (idle timeout, a hostile frame, a slow consumer): not a local close.
            e = self.error() if self.state is _CLOSED else BrokenError(f"{att.con_id} ended", "broken")
        for msg in msgs:
            att.protocol.on_error(msg, e)
        if isinstance(e, BrokenError):
            self.lost(att, e.reason, e)
        return e

    def _write_session(self, att: Attachment | None, msgs: list[Any]) -> Any:
        """Session: numbered frames go to the replay buffer first, so once accepted here a
        message is delivered exactly once, whatever happens to the socket afterwards. They
        are owed to the socket at once (never refused: the replay buffer bounds them)."""
        if att is not None:
            link = att.link
        else:  # detached: encode with a spare engine; the frames go to the replay buffer only
            if self._spare_link is None:
                assert self._protocol is not None
                self._spare_link = Link(self._protocol, session=self.session, read_size=16)
            link = self._spare_link
        stamped, frames = link.encode_many(msgs)
        if att is not None:
            self.owe(att, frames)  # a failure is not the caller's: the frames wait for replay
        return stamped

    def _tell_sent(self, att: Attachment | None, msgs: Iterable[Any]) -> None:
        """``on_sent`` and the callback's, for messages taken (run outside the write lock)."""
        if att is None:  # a detached session: into the replay buffer, no protocol instance here
            for msg in msgs:
                self.callback.on_sent(self.con_id, msg)
        elif att.notify_sent or self.session is not None:
            for msg in msgs:
                att.sent(msg)

    def owe(self, att: Attachment, data: bytes) -> bool:
        """Write lock held: hand committed bytes (session frames, acks, a replay) to ``att``;
        False if its socket failed (``att`` is then ended)."""
        try:
            att.outbound.owe(data)
        except LinksError as e:
            self.lost(att, getattr(e, "reason", "broken"), e if isinstance(e, BrokenError) else None)
            return False
        return True

    def flush_session(self, att: Attachment) -> None:
        """Write what the session owes (acks) without ever waiting: this runs on the poll
        thread. A busy sender means a data frame is going out, and the owed ack stays owed."""
        if not self.write_lock.acquire(blocking=False):
            return
        try:
            out = self.session.take_output() if self.session is not None else b""
            if out and not att.closed:
                self.owe(att, out)
        finally:
            self._unlock(att)


def _lock_now(lock: threading.Lock, timeout: float | None) -> bool:
    """Take the write lock for ``send_now``: free, or by waiting if the sender may (not with
    ``timeout`` 0, nor on the poll and timer threads: those go the general, bounded way)."""
    return lock.acquire(False) or (timeout != 0 and _may_wait_for(lock))


def _may_wait_for(lock: threading.Lock) -> bool:
    """Take a busy write lock, waiting, unless on the poll or timer thread (False: it may not;
    a hook runs under it, and those threads never wait on one connection)."""
    return not on_runtime_thread() and lock.acquire()
