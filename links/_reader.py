"""``AttachmentReader``: what the poll thread services for one ``Attachment``.

Reading (once the receiver is spawned): one ``recv_into`` per readiness event and every whole
frame it completed, dispatched a batch at a time where the messenger allows; level-triggered
polling reports the rest next pass. A thread waiting for a reply on the connection may borrow
the reading meanwhile (``read_while``, ``links._lease``): it then reads and dispatches the same
way on its own thread, and the poll thread leaves the socket alone until it is given back.
Writing (whenever the outbound path owes bytes): what the socket now takes, never waiting,
and never waiting for a write lock either. A closed
attachment that still owes bytes lingers here, write-only, until they are written.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from ._clock import time_left
from ._core._status import NEED_DATA, TaskStatus
from ._errors import BrokenError, ClosedError, LinksError, ProtocolError
from ._lease import PARK_LOOK, ReadLease
from ._log import get_logger
from ._threads import runtime_thread

if TYPE_CHECKING:
    from ._attachment import Attachment

__all__ = ["AttachmentReader"]

_log = get_logger("poll")


class AttachmentReader:
    """What the poll thread services for a spawned attachment: one read, then the frames it
    completed (a bounded batch; level-triggered polling reports the rest next pass)."""

    __slots__ = ("attachment", "con_id", "lease")

    poll_kind = "recver"

    def __init__(self, attachment: Attachment) -> None:
        self.attachment = attachment
        self.con_id = attachment.con_id
        # Lets a waiting caller read in the poll thread's stead; a channel (no fd) has none:
        # no selector can be told to leave it alone, and thousands of idle ones would pay for it.
        self.lease = None if attachment.transport.virtual else ReadLease()

    @property
    def closed(self) -> bool:
        att = self.attachment
        return att.closed and not att.lingering

    def fileno(self) -> int:
        return self.attachment.transport.fileno()

    @property
    def virtual(self) -> bool:
        """Whether the transport has no fd (a multiplexed stream): see ``links._poll``."""
        return self.attachment.transport.virtual

    def on_readable(self) -> bool:
        lease = self.lease
        if lease is None:
            self._read(False, None)
            return True
        reading = lease.reading
        if not reading.acquire(False):
            return True  # a waiting caller borrowed the reading (links._lease): it reads this
        try:
            self._read(False, None)
        finally:
            reading.release()
        return True

    def read_while(self, pending: Callable[[], bool], deadline: float | None, park: Callable[[], bool] | None = None) -> bool:
        """On a thread waiting for a reply: borrow the reading from the poll thread and read and
        dispatch here, as the poll thread would, while ``pending()`` holds, until ``deadline``
        or the end of the connection; then give the reading back (``links._lease``), parked if
        ``park()`` says so then (a caller likely back soon, and nobody else in need of the poll
        thread's reading). Returns at once, False, if the reading cannot be borrowed now: the
        caller then waits as it would have.

        What it dispatches runs as on the poll thread: hooks and callbacks here, with sends
        that never wait, and a blocking call from them refused (``links._threads``)."""
        lease = self.lease
        if lease is None or not lease.borrow(time_left(deadline)):
            return False
        att = self.attachment
        try:
            with runtime_thread():
                while pending() and not att.closed:
                    left = time_left(deadline)
                    if left == 0.0:
                        break
                    self._read(True, left)
        except Exception as e:  # as the poll thread's _fail: logged, and only this connection ends
            _log.error("poll.handler_failed", kind=self.poll_kind, error=repr(e), con_id=str(self.con_id), borrowed=True)
            try:
                self.on_poll_failure(e)
            except Exception as e2:
                _log.error("poll.handler_failed", kind=self.poll_kind, error=repr(e2), during="close")
        finally:
            # Parked only while the timer runs: its look is what gives the reading back.
            if lease.give_back(park is not None and not att.closed and park() and not att.connection.timer.is_shutdown):
                self._look_later(lease)
        return True

    def _look_later(self, lease: ReadLease) -> None:
        """Have the timer look at a parked lease every ``PARK_LOOK`` seconds (``ReadLease.look``)."""
        att = self.attachment

        def look() -> TaskStatus:
            return TaskStatus.COMPLETED if not att.closed and lease.look() else TaskStatus.TERMINATE

        try:
            att.connection.timer.schedule("parked reading", PARK_LOOK, look, on_stop=lease.not_looked_at)
        except RuntimeError:  # the timer is shut down: nothing would look
            lease.not_looked_at()

    def _read(self, wait: bool, timeout: float | None) -> None:
        """One read (with ``wait``, sleeping until bytes come or ``timeout``: a borrower only)
        and every whole message it completed, dispatched."""
        att = self.attachment
        try:
            while not att.closed:  # closed: its removal is already queued
                try:
                    att.read_once(wait, timeout)
                except LinksError as e:
                    # Frames already buffered came before the end (a user-thread recv may have
                    # read them just before the receiver was spawned): they are still delivered.
                    if self._deliver(att):
                        att.connection.lost(att, getattr(e, "reason", "closed"), e if isinstance(e, BrokenError) else None)
                    return
                if self._deliver(att) and att.connection.session is not None:
                    att.connection.flush_session(att)
                if not att.transport.holds_input:
                    break
                # A layer (TLS) holds bytes already read off the socket, which will not signal
                # them again: read on now rather than wait for readiness that may never come.
                # A loop, not a call: one socket read can hold thousands of small records.
                wait = False
        except (BrokenError, ClosedError):
            if not att.closed:
                raise
            # A hook's send (a reply) found the connection gone: the send ended it, as broken,
            # and logged why. The peer's doing, not a bug of the handler's. (A try costs
            # nothing here until something raises: no extra call on the read path.)
        finally:
            if att.after_read is not None:  # whatever ended the read: what it delivered is told
                att.after_read()

    @staticmethod
    def _deliver(att: Attachment) -> bool:
        """Dispatch every whole message in the buffer; False if the attachment ended meanwhile."""
        link = att.link
        # A whole read per call when the messenger allows it, else one message at a time (the
        # next may decode differently once this one is dispatched); see Link.next_messages.
        if link.batches:
            while not att.closed:
                try:
                    msgs = link.next_messages()
                except ProtocolError as e:
                    att.reject(e)
                    return False
                if not msgs:
                    break
                att.dispatch_all(msgs)
                if link.drained():
                    break  # the usual end of a read: no partial frame left to ask about
        else:
            next_message, dispatch = link.next_message, att.dispatch
            while not att.closed:
                try:
                    msg = next_message()
                except ProtocolError as e:
                    att.reject(e)
                    return False
                if msg is NEED_DATA:
                    break
                dispatch(msg)
        return not att.closed

    def on_writable(self) -> bool:
        """The socket has room: write what is owed (never waiting); True while more remains."""
        att = self.attachment
        if att.lingering:
            if not att.outbound.lock.acquire(blocking=False):  # a hook runs under it: look again soon
                return not att.watch_again()
            try:
                if att.outbound.on_writable():
                    return True
            except LinksError:
                pass  # the peer is gone: nothing more to deliver
            finally:
                att.outbound.lock.release()
            att.unlinger("drained")
            return False
        if att.closed:
            return False
        out = att.outbound
        # The lock's holders never wait on a socket, but a protocol's on_send or messenger
        # runs under it: the poll thread does not wait for it. Busy, it looks again shortly.
        if not out.lock.acquire(blocking=False):
            return not att.watch_again()  # no timer: kept watched, looked at again next pass
        try:
            more = out.on_writable()
        except LinksError as e:
            error = e
        else:
            error = None
        finally:
            out.lock.release()
        if error is None:
            if not more and att.on_drained is not None:
                att.on_drained()  # a layer with output of its own hands on more (links.mux)
                # What the socket did not take of it is owed, and its watch was asked for from
                # here, where it is still on: dropping it now would leave those bytes unwritten.
                more = out.watching
            return more
        att.connection.lost(att, getattr(error, "reason", "closed"), error if isinstance(error, BrokenError) else None)
        return False

    def on_poll_failure(self, error: BaseException | None) -> None:
        att = self.attachment
        if att.lingering:  # closed already: what it still owes is dropped
            att.unlinger("poll_shutdown" if error is None else "failed")
        elif error is None:
            att.connection.close("poll_shutdown")
        else:
            att.connection.lost(att, "recver_failed", BrokenError(f"receiver failed: {error!r}", "recver_failed"))
