"""``memory_socket_pair()``: two connected in-memory sockets with fault hooks.

What it is
    A stand-in for a connected nonblocking stream socket, faithful for the part of the
    socket API that ``links._transport.Transport`` uses: ``setblocking(False)``, ``fileno``,
    ``recv_into`` (and ``recv``), ``send`` (flags accepted and ignored: it never blocks),
    ``shutdown``, ``close``, ``getsockname`` and ``getpeername``, plus ``links_wait``, which
    tells ``Transport`` to keep it nonblocking and wait through it (a real socket is put in
    blocking mode instead, with ``MSG_DONTWAIT`` on every call that must not wait).
    ``links.testing.check_transport`` runs the same assertions over a real
    ``socket.socketpair()`` and over this double; that is what keeps the two honest.

Semantics (those of a Linux ``AF_UNIX`` stream socketpair, which ``check_transport`` checks)
    * ``recv_into`` raises ``BlockingIOError`` when nothing is buffered, and returns 0 once the
      peer shut down its sending side (or closed) and the buffered bytes are drained. After
      our own ``shutdown(SHUT_RD)`` it also drains what is buffered, then returns 0.
    * ``send`` takes as much as fits into the peer's receive buffer (``capacity`` bytes) and
      returns the count: partial writes happen. A full buffer raises ``BlockingIOError``.
      Sending after our ``SHUT_WR``, or to a peer that shut down reading or closed, raises
      ``BrokenPipeError``.
    * After ``close()`` every call raises ``OSError(EBADF)`` and ``fileno()`` returns -1.
    * Known difference: closing with unread received bytes is a clean close here; a real
      socket would reset the peer instead.

Fault hooks (settable at any time, from any thread)
    * ``chunk_size``: at most this many bytes per ``recv_into`` and per ``send`` (down to 1),
      so every framing path sees its input split everywhere.
    * ``would_block``: while True, ``send`` and ``recv_into`` on this end raise
      ``BlockingIOError`` and waits on this end (and its fd) do not report readiness, even
      once the peer shut down or closed; only a closed or reset connection fails at once.
    * ``eof()``: the peer sees EOF after the bytes already sent (like ``shutdown(SHUT_WR)``).
    * ``reset()``: the connection is reset: buffered bytes are lost and every later
      ``send``/``recv_into`` on either end raises ``ConnectionResetError``. (A real socket
      reports the reset once and then EOF; here it stays, which is simpler to test against.)

Waiting
    ``links_wait(readable, timeout)`` waits on one ``threading.Condition`` shared by the two
    ends, notified whenever readiness may have changed. ``Transport`` calls it instead of
    ``select.poll``, so waits are real blocking waits, never a polling loop. Like a real
    socket, an end reports writable only once half of the peer's buffer is free (``send``
    itself takes whatever fits): a writer then moves a large batch per wakeup instead of
    trading the lock with the reader byte by byte.

Why ``fileno()`` is a real fd, and what a selector sees on it
    Code keys on fd numbers (``Transport`` stores one, logs print it, fd-leak checks count
    them), and a made-up number could collide with a real fd of the process. So each end
    holds a real ``socket.socketpair()`` of its own (two fds, both closed in ``close()``) and
    ``fileno()`` returns one end of it, the *placeholder*: the number is unique while the
    double is open and freed with it. The other end, the *drain*, is seen by nobody else; with
    it the placeholder is kept readable and writable exactly when this end is, so a
    ``PollHandler`` (or any selector) serves the double as it would a real socket: a receiver
    spawned into a poll thread is woken to read, and owed bytes are written as room comes.
    The placeholder is kept in step under the double's lock at every change that may flip
    either readiness, and only a flip costs a system call.

    Reading: the placeholder is readable exactly when ``links_wait(True, 0)`` would return
    True: bytes buffered, or the end of the stream reached (the peer's ``SHUT_WR``, ``eof()``
    or close, our own ``SHUT_RD``), and ``would_block`` not set; closed or reset at once. While
    it is, the drain end has sent it one byte, read back off the placeholder when it stops
    being readable (our ``recv`` took the last byte, ``would_block`` set). The placeholder is
    closed before the drain end, so it never sees its other end hang up (which would read as
    readable for good).

    Writing: the placeholder is writable exactly when ``links_wait(False, 0)`` would return
    True: room in the peer's buffer (half of it, as above) and ``would_block`` not set. An
    ended connection counts as writable, as on a real socket whose next ``send`` then fails:
    closed or reset at once; this end's sending shut down (its ``SHUT_WR``, the peer's
    ``SHUT_RD`` or close) once ``would_block`` is clear. While this end is not writable the
    placeholder's tiny send buffer is kept full of filler bytes (written until ``EAGAIN``);
    every change that may make room (the peer's ``recv``, ``would_block`` cleared, a shutdown,
    ``close``, ``reset``) empties it by reading the drain end. So a poll thread waits for room
    as it would on a real socket, instead of spinning. (The two directions of the socketpair
    are independent: filler only flows to the drain end, the readable byte only from it.)
"""

from __future__ import annotations

import errno
import itertools
import os
import socket
import threading
from typing import Any

__all__ = ["MemorySocket", "memory_socket_pair"]

#: Default receive-buffer size of each end (the size of a Linux pipe buffer).
DEFAULT_CAPACITY = 1 << 16

_ports = itertools.count(1)
# Written into a placeholder to fill its send buffer (a few KiB once shrunk, see _placeholder_pair).
_FILLER = bytes(1 << 13)


def _error(cls: type[OSError], code: int) -> OSError:
    return cls(code, os.strerror(code))


def _placeholder_pair() -> tuple[socket.socket, socket.socket]:
    """A nonblocking socketpair: the placeholder (``fileno()``) and the drain end, which sets
    its readiness, with buffers as small as the kernel allows, so a few KiB fill the placeholder."""
    placeholder, drain = socket.socketpair()
    try:
        for sock in (placeholder, drain):
            sock.setblocking(False)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 1)  # raised to the kernel's minimum
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1)
    except BaseException:
        placeholder.close()
        drain.close()
        raise
    return placeholder, drain


class _Shared:
    """What both ends share: one lock + condition, and the reset flag."""

    __slots__ = ("cond", "reset")

    def __init__(self) -> None:
        self.cond = threading.Condition(threading.Lock())
        self.reset = False


class MemorySocket:
    """One end of an in-memory stream connection; made in pairs by ``memory_socket_pair()``.

    ``peer`` is the other end. Semantics and hooks: see the module docstring.
    """

    def __init__(self, shared: _Shared, capacity: int, chunk_size: int | None) -> None:
        self._shared = shared
        self._cond = shared.cond
        # The real fd behind fileno(), readable and writable exactly when this end is (see the
        # module docstring), and the other end of its socketpair, which drives it.
        self._placeholder, self._drain = _placeholder_pair()
        self._placeholder_writable = True  # whether the placeholder's send buffer has room
        self._placeholder_readable = False  # whether the drain end's byte waits in it
        self._capacity = capacity
        # Writers waiting for room wake once half the buffer is free, not at every byte read
        # (real sockets do the same), so a writer and a reader do not trade the lock per byte.
        self._low_water = (capacity + 1) // 2
        self._inbound = bytearray()
        self._rd_shut = False  # our SHUT_RD (or close): no more reading, the peer gets EPIPE
        self._wr_shut = False  # our SHUT_WR (or close, or eof()): the peer sees EOF
        self._closed = False
        self._would_block = False
        self._chunk_size: int | None = None
        self.chunk_size = chunk_size
        self._addr = ("memory", next(_ports))
        self.peer: MemorySocket = self  # replaced by memory_socket_pair()

    @property
    def capacity(self) -> int:
        """This end's receive buffer, in bytes."""
        return self._capacity

    # -- fault hooks ----------------------------------------------------------------------

    @property
    def chunk_size(self) -> int | None:
        """Most bytes moved by one ``send`` or ``recv_into`` on this end (None: no limit)."""
        return self._chunk_size

    @chunk_size.setter
    def chunk_size(self, value: int | None) -> None:
        if value is not None and value < 1:
            raise ValueError("chunk_size must be at least 1 (or None)")
        self._chunk_size = value

    @property
    def would_block(self) -> bool:
        """While True, ``send``/``recv_into`` on this end raise ``BlockingIOError``."""
        return self._would_block

    @would_block.setter
    def would_block(self, value: bool) -> None:
        with self._cond:
            self._would_block = bool(value)
            self._cond.notify_all()  # waiters held back by the flag re-check readiness
            self._follow()

    def eof(self) -> None:
        """The peer sees EOF once it has read what was already sent (sending ends here)."""
        with self._cond:
            self._wr_shut = True
            self._cond.notify_all()
            self._follow_both()

    def reset(self) -> None:
        """Reset the connection: both ends lose buffered bytes and raise ``ConnectionResetError``."""
        with self._cond:
            self._shared.reset = True
            self._inbound.clear()
            self.peer._inbound.clear()
            self._cond.notify_all()
            self._follow_both()

    # -- the socket API ---------------------------------------------------------------------

    def setblocking(self, flag: bool) -> None:
        """Accept ``setblocking(False)`` (a memory socket is always nonblocking; waits go through
        ``links_wait``). Returns None.

        Raises:
            ValueError: ``flag`` is true.
        """
        if flag:
            raise ValueError("MemorySocket is nonblocking only")

    def fileno(self) -> int:
        """A real file descriptor standing in for this end: readable and writable exactly when this
        end is, so selectors and ``poll`` work on it. -1 once closed, like a socket. Never raises.
        """
        return self._placeholder.fileno()  # -1 once closed, like a socket

    def getsockname(self) -> tuple[str, int]:
        """This end's made-up address, ``("memory", n)``.

        Raises:
            OSError: ``EBADF`` once this end is closed.
        """
        self._check_open()
        return self._addr

    def getpeername(self) -> tuple[str, int]:
        """The other end's made-up address, ``("memory", n)``.

        Raises:
            OSError: ``EBADF`` once this end is closed.
        """
        self._check_open()
        return self.peer._addr

    def recv_into(self, buffer: Any, nbytes: int = 0, flags: int = 0) -> int:
        """Move up to ``nbytes`` (0: ``len(buffer)``) received bytes into ``buffer``, at most
        ``chunk_size`` of them.

        Returns:
            How many bytes were moved; 0 once the peer shut down sending (or closed) and nothing
            is left, or after our own ``shutdown(SHUT_RD)``.

        Raises:
            BlockingIOError: nothing is buffered yet (or ``would_block`` is set).
            OSError: ``EBADF`` once this end is closed; ``ConnectionResetError`` after ``reset()``.
        """
        view = memoryview(buffer).cast("B")
        limit = len(view) if nbytes <= 0 else min(nbytes, len(view))
        with self._cond:
            self._check_usable()
            inbound = self._inbound
            if inbound and limit:
                n = min(limit, len(inbound), self._chunk_size or limit)
                view[:n] = inbound[:n]
                del inbound[:n]
                free = self._capacity - len(inbound)
                if free - n < self._low_water <= free:
                    self._cond.notify_all()  # the peer's writers have room now
                    self.peer._follow_writable()
                if not inbound:
                    self._follow_readable()  # drained: not readable any more (unless at EOF)
                return n
            if self._rd_shut or self.peer._wr_shut or not limit:
                return 0
            raise _error(BlockingIOError, errno.EAGAIN)

    def recv(self, bufsize: int, flags: int = 0) -> bytes:
        """Up to ``bufsize`` received bytes, as ``recv_into`` moves them.

        Returns:
            The bytes; empty at EOF.

        Raises:
            BlockingIOError: nothing is buffered yet (or ``would_block`` is set).
            OSError: ``EBADF`` once this end is closed; ``ConnectionResetError`` after ``reset()``.
        """
        buf = bytearray(bufsize)
        n = self.recv_into(buf)
        return bytes(buf[:n])

    def send(self, data: Any, flags: int = 0) -> int:
        """Put as much of ``data`` as fits into the peer's receive buffer (at most ``chunk_size``).

        Returns:
            How many bytes were taken (partial writes happen, as on a real socket).

        Raises:
            BlockingIOError: the peer's buffer is full (or ``would_block`` is set).
            BrokenPipeError: we shut down sending, or the peer shut down reading or closed.
            OSError: ``EBADF`` once this end is closed; ``ConnectionResetError`` after ``reset()``.
        """
        view = memoryview(data).cast("B")
        with self._cond:
            self._check_usable()
            peer = self.peer
            if self._wr_shut or peer._rd_shut:
                raise _error(BrokenPipeError, errno.EPIPE)
            if not view:
                return 0
            free = peer._capacity - len(peer._inbound)
            if free <= 0:
                raise _error(BlockingIOError, errno.EAGAIN)
            n = min(len(view), free, self._chunk_size or free)
            was_empty = not peer._inbound
            peer._inbound += view[:n]
            if was_empty:
                self._cond.notify_all()  # the peer's readers have data now
                peer._follow_readable()  # and so has its fd
            if self._placeholder_writable:
                self._follow_writable()  # under half of the peer's buffer free: not writable any more
            return n

    def shutdown(self, how: int) -> None:
        """Shut down reading (``SHUT_RD``), sending (``SHUT_WR``: the peer sees EOF) or both,
        waking every waiter on either end. Returns None.

        Raises:
            OSError: ``EBADF`` once this end is closed.
        """
        with self._cond:
            self._check_open()
            if how in (socket.SHUT_RD, socket.SHUT_RDWR):
                self._rd_shut = True
            if how in (socket.SHUT_WR, socket.SHUT_RDWR):
                self._wr_shut = True
            self._cond.notify_all()  # wake every waiter on either end, as a real shutdown does
            self._follow_both()

    def close(self) -> None:
        """Idempotent, like ``socket.close``; the peer sees EOF, and EPIPE when sending."""
        with self._cond:
            if self._closed:
                return
            self._closed = self._rd_shut = self._wr_shut = True
            self._inbound.clear()
            self._cond.notify_all()
            self.peer._follow()  # the peer reads EOF and its sends fail now: readable and writable
            # Under the lock, so no _follow() on another thread touches them half closed; the
            # placeholder first, so it never sees its other end hang up (which reads as readable).
            self._placeholder.close()
            self._drain.close()

    def __enter__(self) -> MemorySocket:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- waiting --------------------------------------------------------------------------

    def links_wait(self, readable: bool, timeout: float | None) -> bool:
        """Wait until a ``recv_into`` (``readable``) or ``send`` would not raise
        ``BlockingIOError``; False when ``timeout`` seconds passed first (None: no limit)."""
        ready = self._readable if readable else self._writable
        with self._cond:
            return self._cond.wait_for(ready, timeout)

    def _readable(self) -> bool:
        if self._closed or self._shared.reset:
            return True  # the next call fails at once rather than wait
        if self._would_block:
            return False
        return bool(self._inbound) or self._rd_shut or self.peer._wr_shut

    def _writable(self) -> bool:
        # In the order send() checks: closed and reset fail at once, would_block comes next.
        if self._closed or self._shared.reset:
            return True  # the next send fails at once rather than wait
        if self._would_block:
            return False
        peer = self.peer
        if self._wr_shut or peer._rd_shut:
            return True  # the next send fails with EPIPE
        return peer._capacity - len(peer._inbound) >= peer._low_water

    def _follow_both(self) -> None:
        self._follow()
        self.peer._follow()

    def _follow(self) -> None:
        """Make the placeholder's readiness match ``_readable()`` and ``_writable()`` (lock held)."""
        self._follow_writable()
        self._follow_readable()

    def _follow_readable(self) -> None:
        """Make the placeholder's READ readiness match ``_readable()`` (lock held): one byte
        from the drain end waits in it while this end is readable, read back when it stops."""
        if self._closed:
            return  # its sockets are closed (or closing, under this lock)
        readable = self._readable()
        if readable == self._placeholder_readable:
            return
        if readable:
            self._drain.send(b"r")
        else:
            self._placeholder.recv(1)
        self._placeholder_readable = readable

    def _follow_writable(self) -> None:
        """Make the placeholder's WRITE readiness match ``_writable()`` (lock held)."""
        if self._closed:
            return  # its sockets are closed (or closing, under this lock)
        writable = self._writable()
        if writable == self._placeholder_writable:
            return
        if writable:  # drain the other end until the placeholder's send buffer is empty
            drain = self._drain
            try:
                while drain.recv(len(_FILLER)):
                    pass
            except BlockingIOError:
                pass
        else:  # fill the placeholder's send buffer: no POLLOUT until it is drained
            send = self._placeholder.send
            try:
                while True:
                    send(_FILLER)
            except BlockingIOError:
                pass
        self._placeholder_writable = writable

    # -- helpers (callers hold the lock, except for the read-only checks) -------------------

    def _check_open(self) -> None:
        if self._closed:
            raise _error(OSError, errno.EBADF)

    def _check_usable(self) -> None:
        self._check_open()
        if self._shared.reset:
            raise _error(ConnectionResetError, errno.ECONNRESET)
        if self._would_block:
            raise _error(BlockingIOError, errno.EAGAIN)

    def __repr__(self) -> str:
        state = "closed" if self._closed else "reset" if self._shared.reset else "open"
        ends = f"memory:{self._addr[1]}->memory:{self.peer._addr[1]}"
        return f"MemorySocket({ends}, {state}, buffered={len(self._inbound)})"


def memory_socket_pair(
    *, capacity: int = DEFAULT_CAPACITY, chunk_size: int | None = None
) -> tuple[MemorySocket, MemorySocket]:
    """Two connected ``MemorySocket`` ends.

    Args:
        capacity: the receive buffer of each end, in bytes; ``send`` to a full one raises
            ``BlockingIOError``.
        chunk_size: initial ``chunk_size`` hook of both ends (None: no limit).
    """
    if capacity < 1:
        raise ValueError("capacity must be at least 1 byte")
    if chunk_size is not None and chunk_size < 1:
        raise ValueError("chunk_size must be at least 1 (or None)")
    shared = _Shared()
    a = MemorySocket(shared, capacity, chunk_size)
    try:
        b = MemorySocket(shared, capacity, chunk_size)
    except BaseException:  # out of fds, say: a's must not leak
        a.close()
        raise
    a.peer, b.peer = b, a
    return a, b
