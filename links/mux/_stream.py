"""``StreamTransport``: one yamux stream, seen by the connection engine as its socket.

A channel is a connection like any other (``links._connection``: its own framer, messenger,
protocol, callbacks, outbound path, liveness), whose transport is a stream of the physical
connection instead of a socket. This class gives the stream the ``Transport`` calls the
engine makes, with the same meanings:

* ``recv_into`` takes bytes the demultiplexer (``links.mux._driver``) put in ``inbound``; 0
  when there are none yet; the stream's end (the peer's FIN or RST, the physical connection
  lost) raises ``BrokenError`` once every byte before it was read, as a socket's EOF does.
  Each read gives the peer back its window (``MuxEngine.consumed``).
* ``send_some`` gives bytes to the engine, as many as the peer's window for this stream lets
  it take, and has the physical connection write them; the rest is owed by the channel's own
  outbound path, which the demultiplexer wakes when the window opens again.
* Waiting happens on a condition of the driver's lock, or, for one waiting thread at a time,
  in the physical socket itself: a thread waiting in ``recv_into_waiting`` (a channel's
  ``recv``, not spawned) borrows the reading of the TCP connection from the poll thread
  (``links._lease``) and runs the demultiplexer itself, so its reply wakes one thread (it)
  rather than two (the poll thread, then it). Every frame it reads is routed as the poll
  thread would route it (other channels' bytes to their waiters and spawned readers, window
  updates and PINGs answered); its own stream's bytes land in the buffer its ``recv`` reads
  into while they fit (``MuxDriver.landing``: one copy, not two). It gives the reading back
  as soon as its own stream has input or its end, parked when its channel is the only one
  and owes nothing (``MuxDriver.may_park``): the poll thread does not watch the socket until
  it is back, or until something needs the poll thread's reading (``MuxDriver.unpark``).
  Another thread waiting meanwhile waits on its condition. A thread that
  closes the channel of a borrowing thread wakes it with a PING (its answer is input on the
  socket it sleeps in); a borrow lasts ``BORROW_SLICE`` at most, then the reader looks again.

It has no file descriptor: the poll thread services a spawned channel as a ``virtual``
handler, told of readiness by the demultiplexer (``PollHandler.ready``).
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any

from .._clock import deadline_after, time_left
from .._core._conid import Addr
from .._errors import BrokenError, ClosedError, LinksError, raised_again
from .._threads import on_runtime_thread
from .._transport import DEFAULT_STALL_TIMEOUT, Transport

if TYPE_CHECKING:
    from collections import deque

    from .._attachment import Attachment
    from ._driver import MuxDriver

__all__ = ["StreamTransport", "BORROW_SLICE"]

#: Seconds a thread reads the physical connection for its channel before it gives the reading
#: back and looks again: a bound for a peer that never answers the PING that wakes it.
BORROW_SLICE = 1.0


class StreamTransport(Transport):
    """One stream of a physical yamux connection, as a transport; see the module docstring.

    Every field but ``attachment`` is guarded by the driver's lock (``driver.lock``).
    """

    __slots__ = ("driver", "stream_id", "inbound", "end", "readable", "waiters", "attachment", "_head")

    virtual = True  # no fd: the poll thread is told of readiness (links._poll)
    #: A channel's receive buffer starts small (it grows with what comes): an idle channel
    #: should cost little more than its state.
    read_size = 256

    def __init__(self, driver: MuxDriver, stream_id: int, *, stall_timeout: float = DEFAULT_STALL_TIMEOUT) -> None:
        # Not Transport.__init__: there is no socket to configure.
        self.driver = driver
        self.stream_id = stream_id
        self.sock = self  # socket_addrs() asks it for the physical connection's addresses
        self._fd = -1
        self._closed = False
        self._shut = False
        self._shut_both = False
        self.stall_timeout = stall_timeout
        # Received, not yet read: a deque from the first bytes on (the driver makes it), as an
        # idle channel should not pay 0.6 KB for an empty one.
        self.inbound: deque[bytes] | tuple[()] = ()
        self._head = 0  # bytes of inbound[0] read already
        self.end: LinksError | None = None  # what reading raises once inbound is empty
        # Waited on for inbound, the end, or room for writing; made by the first waiter (an
        # idle channel keeps no condition): the driver notifies only while ``waiters``.
        self.readable: threading.Condition | None = None
        self.waiters = 0
        self.attachment: Attachment | None = None  # the channel's, once it is made

    def __repr__(self) -> str:
        return f"StreamTransport({self.stream_id}, inbound={len(self.inbound)})"

    # -- what the engine asks of a socket -------------------------------------------------

    def getsockname(self) -> Addr | None:
        return self.driver.local

    def getpeername(self) -> Addr | None:
        return self.driver.peer

    @property
    def peer_certificate(self) -> dict[str, Any] | None:
        """The TLS certificate the peer of the physical connection presented, if any: every
        channel on it comes from that peer (authorize channels by it)."""
        return self.driver.att.peer_certificate

    @property
    def holds_input(self) -> bool:  # type: ignore[override]
        # The end too: it comes with the last bytes (one wake for both), and nothing signals
        # it again, so the poll thread's reader must read on into it.
        return bool(self.inbound) or self.end is not None

    def has_unread_data(self) -> bool:
        return bool(self.inbound)

    # -- reading ----------------------------------------------------------------------------

    def recv_into(self, view: memoryview) -> int:
        driver = self.driver
        driver.lock.acquire()
        try:
            return self._read(view)
        finally:
            driver.release()

    def _read(self, view: memoryview) -> int:
        """Lock held: ``_take``, and the window given back for what was taken."""
        n = self._take(view)
        if n:
            self.driver.engine.consumed(self.stream_id, n)
        return n

    def _take(self, view: memoryview) -> int:
        """Lock held: copy what ``inbound`` holds into ``view``; 0 if nothing yet.

        Raises:
            ClosedError: this side shut the stream. BrokenError: it ended, all read.
        """
        if self._shut:
            raise ClosedError("channel closed")
        inbound, taken, size = self.inbound, 0, len(view)
        while inbound and taken < size:
            chunk = inbound[0]
            head = self._head
            n = min(size - taken, len(chunk) - head)
            # A view of the part taken: a slice of the bytes would be one more copy of it.
            view[taken : taken + n] = memoryview(chunk)[head : head + n] if head or n < len(chunk) else chunk
            taken += n
            if head + n == len(chunk):
                inbound.popleft()
                self._head = 0
            else:
                self._head = head + n
        if not taken and self.end is not None:
            raise raised_again(self.end, False, "channel closed")  # fresh: a stored one's traceback grows
        return taken

    def recv_into_waiting(self, view: memoryview, timeout: float | None = None) -> int:
        # The wait and the read in one pass under the lock: the reply a waiting thread is
        # woken for is taken at once.
        driver, deadline = self.driver, deadline_after(timeout)
        driver.lock.acquire()
        try:
            while not (self.inbound or self.end is not None or self._shut):
                left = time_left(deadline)
                if left == 0.0:
                    return 0
                landed = self._borrow(deadline, view)
                if landed:
                    return landed
                if landed is None:
                    self._wait(left)
            return self._read(view)
        finally:
            driver.release()

    def _borrow(self, deadline: float | None, view: memoryview) -> int | None:
        """Lock held (released meanwhile): read the physical connection on this thread, in the
        poll thread's stead, until this stream has input or its end, ``deadline`` or
        ``BORROW_SLICE``. Its bytes that fit land in ``view`` directly (``MuxDriver.landing``):
        returns how many (0: none, look at ``inbound``). None if the reading cannot be borrowed
        (another thread has it, the connection is not read by the poll thread or is ending, this
        is a runtime thread)."""
        driver = self.driver
        att = driver.att
        if driver.borrower is not None or driver.error is not None or not att.reading or att.closed or on_runtime_thread():
            return None
        read_while = getattr(att.handler, "read_while", None)  # a redial's handshake handler lends nothing
        if read_while is None:
            return None
        driver.borrower = self  # a closer of this stream wakes us (see _wake_borrower)
        driver.landing = view
        driver.lock.release()
        try:
            until = deadline_after(BORROW_SLICE)
            borrowed = read_while(self._pending, until if deadline is None else min(deadline, until), driver.may_park)
        finally:
            driver.lock.acquire()
            driver.borrower = driver.landing = None
            landed, driver.landed = driver.landed, 0
        return landed if borrowed or landed else None

    def _pending(self) -> bool:
        """Whether nothing has come for this stream yet (read without the lock: a borrower's test)."""
        return not (self.inbound or self.end is not None or self._shut or self.driver.landed)

    def _wake_borrower(self) -> None:
        """Lock held, this stream just shut: if its thread sleeps in the physical socket, a PING
        makes the peer send something there (its answer), and the thread then sees the shut."""
        driver = self.driver
        if driver.borrower is self and driver.error is None:
            driver.engine.ping()

    def wait_readable(self, timeout: float | None) -> bool:
        deadline = deadline_after(timeout)
        with self.driver.lock:
            while not (self.inbound or self.end is not None or self._shut):
                left = time_left(deadline)
                if left == 0.0:
                    return False
                self._wait(left)
        return True

    def _notify(self) -> None:
        """Lock held: wake every thread waiting here."""
        if self.waiters and self.readable is not None:
            self.readable.notify_all()

    def _wait(self, left: float | None) -> None:
        """Lock held: wait on ``readable``, counted, so the driver notifies only when someone waits."""
        if self.readable is None:
            self.readable = threading.Condition(self.driver.lock)
        self.driver.unpark()  # what it waits for may be the poll thread's to read
        self.waiters += 1
        try:
            self.readable.wait(left)
        finally:
            self.waiters -= 1

    # -- writing ----------------------------------------------------------------------------

    def send_some(self, data: bytes | bytearray | memoryview) -> int:
        driver = self.driver
        if type(data) is bytes:
            sent = driver.send_now(self, data)  # the common case, in one step (None: it is not)
            if sent is not None:
                return sent
        driver.lock.acquire()
        try:
            self.check_sendable()
            taken = driver.engine.write(self.stream_id, data)
            if taken < len(data):
                driver.unpark()  # the rest waits for the peer's window: the poll thread reads it
            return taken
        finally:
            driver.release()

    def send_refused(self) -> bool:
        """Lock held: whether a send on this stream raises now (``check_sendable``)."""
        driver = self.driver
        return self._shut_both or driver.error is not None or (self.end is not None and self.stream_id not in driver.engine.streams)

    def check_sendable(self) -> None:
        """Lock held: raise what a send on this stream raises now, if anything.

        Raises:
            ClosedError: this side closed the channel. BrokenError: it ended (peer, connection).
        """
        if not self.send_refused():
            return
        if self._shut_both:
            raise ClosedError("channel closed")
        error = self.end or self.driver.error
        raise BrokenError(str(error), getattr(error, "reason", "broken"))

    def send_parts(self, parts: list[bytes | bytearray | memoryview]) -> int:
        # One lock section for a channel's whole backlog, each piece kept by the engine as it
        # is (no join: a channel that owes a 1 MiB message in pieces would copy it again).
        driver = self.driver
        driver.lock.acquire()
        try:
            self.check_sendable()
            write, stream_id, sent = driver.engine.write, self.stream_id, 0
            for part in parts:
                taken = write(stream_id, part)
                sent += taken
                if taken < len(part):
                    driver.unpark()  # as in send_some
                    break
            return sent
        finally:
            driver.release()

    def wait_writable(self, timeout: float | None) -> bool:
        deadline = deadline_after(timeout)
        streams = self.driver.engine.streams
        with self.driver.lock:
            while True:
                stream = streams.get(self.stream_id)
                if stream is None or not stream.blocked or self._shut_both or self.driver.error is not None:
                    return True
                left = time_left(deadline)
                if left == 0.0:
                    return False
                self._wait(left)

    # -- closing ----------------------------------------------------------------------------

    def shutdown_read(self) -> None:
        driver = self.driver
        driver.lock.acquire()
        try:
            self._shut = True
            self._notify()
            self._wake_borrower()
        finally:
            driver.release()

    def shutdown(self) -> None:
        """End both directions: FIN after what is queued (the peer reads to the end)."""
        self._end(reset=False)

    def abort(self) -> None:
        """End both directions at once: RST, unless the peer has ended its side already."""
        self._end(reset=True)

    def _end(self, reset: bool) -> None:
        driver = self.driver
        driver.lock.acquire()
        try:
            if self._shut_both:
                return
            self._shut = self._shut_both = True
            engine, sid = driver.engine, self.stream_id
            stream = engine.streams.get(sid)
            if stream is not None and reset and not stream.fin_received:
                engine.reset(sid)
            else:
                engine.close(sid)
            self._notify()
            self._wake_borrower()
        finally:
            driver.release()

    def close(self) -> None:
        if self._closed:
            return
        self.shutdown()
        self._closed = True
        self.driver.forget(self)
