"""``Transport``: one socket, never waited on by accident, and the only place ``OSError``
becomes a ``links`` error.

Reads
    ``recv_into`` reads what the kernel has, up to the free space given, and returns the count.
    It returns 0 when nothing is there *yet* (``EAGAIN``); the peer's orderly close (a read of
    zero bytes) is not "nothing yet", it raises ``BrokenError``. Keeping these apart is the
    whole point of not passing raw socket results upward (a bare 0 means both in the socket
    API). ``recv_into_waiting`` is the one call that sleeps until bytes come (or its timeout,
    kept by the kernel as ``SO_RCVTIMEO``): a user thread with nothing else to do waits inside
    ``recv`` itself.

Blocking mode
    A real socket is left in blocking mode and every call but ``recv_into_waiting`` passes
    ``MSG_DONTWAIT``, so nothing else ever blocks. The reason is the waiting read: one
    blocking ``recv`` where a nonblocking socket needs three syscalls (``recv`` finding
    nothing, ``poll``, ``recv``). It took about 5 µs off a loopback round trip
    (benchmarks/RESULTS.md, "W2 client"). So a socket handed to links (``Clt.from_socket``, or
    accepted by ``Svc``) is links' to configure: its blocking mode and receive timeout are set
    here. A socket double stays nonblocking and is waited on through its own ``links_wait``;
    so does a real socket where the platform has no ``MSG_DONTWAIT`` (it is waited on with
    ``poll`` then read, as before).

Writes
    ``send_some(data)`` is one nonblocking ``send``: the count the kernel took, 0 when it
    took nothing. The connection engine writes only through it: what a partial write leaves
    is owed and finished later by the poll thread (``links._outbound``), so no thread of the
    engine ever waits for a socket to drain.

    ``write(data, timeout)`` is the blocking form, for a thread that owns a socket alone (a
    test, the conformance suite): all or nothing per frame. If the kernel took nothing in
    ``timeout`` the answer is ``WOULD_BLOCK`` and the stream is untouched; once the first
    byte is out the rest must follow, so it waits, bounded by ``stall_timeout``, and a peer
    that stops reading mid-frame that long is ``BrokenError``.

Waiting
    Waits use ``select.poll`` on this one fd (no fd-number limit, unlike ``select.select``),
    with one poll object for each direction so a reader and a writer thread can wait at once.
    A socket double from ``links.testing`` supplies its own ``links_wait(readable, timeout)``
    and is waited on through that instead.

Closing
    ``shutdown()`` may be called from any thread at any time: it only tells the kernel to
    end both directions, which wakes every thread waiting on the fd (they then see EOF).
    ``close()`` releases the fd and must only be called by the fd's owner (the poll thread
    when the receiver is registered there), so the number is never reused under a selector
    that still believes it owns it.
"""

from __future__ import annotations

import errno
import math
import select
import socket
import struct
import time
from typing import Any

from ._clock import FOREVER, deadline_after, time_left
from ._core._conid import Addr
from ._core._status import SendStatus
from ._errors import BrokenError, ClosedError

__all__ = ["Transport", "wait_fd", "socket_addrs", "rcvtimeo"]

_COMPLETED = SendStatus.COMPLETED
_WOULD_BLOCK = SendStatus.WOULD_BLOCK
_DONTWAIT = getattr(socket, "MSG_DONTWAIT", 0)  # 0 where there is none (Windows): see Blocking mode
_SENDMSG = hasattr(socket.socket, "sendmsg")
_MAX_PARTS = 1024  # buffers one sendmsg takes (Linux's IOV_MAX)
_POLLIN = select.POLLIN | select.POLLPRI | select.POLLHUP | select.POLLERR
_POLLOUT = select.POLLOUT | select.POLLHUP | select.POLLERR

#: Reads of unread input before a socket is released (``_discard_unread``), and their size.
_DISCARD_READS = 64
_DISCARD_CHUNK = 1 << 16

#: How long ``write`` lets a half-written frame wait for the peer to read before it gives up.
DEFAULT_STALL_TIMEOUT = 30.0


def _timeval(seconds: float) -> bytes:
    """``seconds`` as a ``struct timeval``; a positive time never becomes (0, 0), which the
    kernel takes for "no timeout"."""
    whole = int(seconds)
    micros = int((seconds - whole) * 1e6)
    if seconds > 0 and not whole and not micros:
        micros = 1
    return struct.pack("ll", whole, micros)


#: Steps of the receive-timeout grid (``rcvtimeo``): a wait may end up to 1 % early.
_RCVTIMEO_STEP = 1.01
_LOG_STEP = math.log(_RCVTIMEO_STEP)
_SHORTEST = 1e-6  # a timeval's resolution
_FOREVER = FOREVER  # a longer wait, math.inf included, is no timeout at all


def rcvtimeo(timeout: float | None) -> float:
    """The ``SO_RCVTIMEO`` for a wait of ``timeout`` seconds (0.0: none), rounded *down* to a
    grid of 1 % steps.

    A reader with a deadline waits for what remains of it, which is a little less on every
    call (``recv(30)`` per message: 29.99993 s, then 29.99986 s...). Set exactly, that was
    one ``setsockopt`` per message beside its ``recv`` (strace of 2,000 round trips with
    ``recv(30)``: 1,991 of them); on the grid the value set stays good for many reads (one,
    in the same trace). Rounding down keeps the deadline: the kernel may wake the reader up
    to 1 % early, and the reader then waits again for the rest.
    """
    if timeout is None or timeout > _FOREVER:
        return 0.0  # the kernel's "no timeout"
    if timeout <= _SHORTEST:
        return _SHORTEST
    # Rounding down must not go below the shortest: 0 would mean no timeout at all.
    return max(_SHORTEST, _RCVTIMEO_STEP ** math.floor(math.log(timeout) / _LOG_STEP))


def wait_fd(poller: select.poll, timeout: float | None) -> bool:
    """Wait on a one-fd ``poll`` object; True when it is ready, False on timeout."""
    ms = None if timeout is None or timeout > _FOREVER else max(0, int(timeout * 1000 + 0.999))  # round up, never spin
    return bool(poller.poll(ms))


class Transport:
    """A connected socket with ``links`` error semantics."""

    __slots__ = ("sock", "_fd", "_closed", "_shut", "_shut_both", "_rpoll", "_wpoll", "_wait", "_blocking", "_rcvtimeo", "stall_timeout")

    def __init__(self, sock: Any, *, stall_timeout: float = DEFAULT_STALL_TIMEOUT) -> None:
        self._wait = getattr(sock, "links_wait", None)
        self._blocking = self._wait is None and _DONTWAIT != 0  # see "Blocking mode" above
        sock.setblocking(self._blocking)
        self.sock = sock
        self._fd = sock.fileno()
        self._closed = False
        self._shut = False  # this side ended reading (and maybe writing): EOF is ours
        self._shut_both = False
        self._rpoll: select.poll | None = None
        self._wpoll: select.poll | None = None
        # The SO_RCVTIMEO this transport set (0.0: none); unknown at first, so the first
        # waiting read sets it whatever the socket came with.
        self._rcvtimeo = -1.0
        self.stall_timeout = stall_timeout

    #: Whether bytes read off the socket wait inside this transport (a layer's: TLS).
    holds_input = False
    #: The free space a connection's receive buffer offers its first read (it grows with use).
    read_size = 1 << 12
    #: Whether it has no fd of its own (a multiplexed stream): the poll thread is told of
    #: its readiness instead of asking the kernel (links._poll).
    virtual = False

    def fileno(self) -> int:
        return self._fd

    @property
    def closed(self) -> bool:
        return self._closed

    # -- reading --------------------------------------------------------------------------

    def recv_into(self, view: memoryview) -> int:
        """Read into ``view``; the byte count, or 0 when nothing is available yet.

        Raises:
            BrokenError: the peer closed (EOF) or reset the connection.
            ClosedError: this side shut the socket down.
        """
        try:
            n = self.sock.recv_into(view, 0, _DONTWAIT)
        except (BlockingIOError, InterruptedError):
            return 0
        except OSError as e:
            raise self._translate(e) from e
        return n or self._ended()

    def recv_into_waiting(self, view: memoryview, timeout: float | None = None) -> int:
        """Read into ``view``, waiting up to ``timeout`` seconds (None: as long as it takes)
        for the first byte or the end.

        Returns the byte count; 0 when the time ran out (the caller checks its own deadline
        and loops). Raises as ``recv_into``. ``shutdown()`` from another thread ends the wait.
        """
        if not self._blocking:  # a socket double, or no MSG_DONTWAIT here: wait, then read
            return self.recv_into(view) if self.wait_readable(timeout) else 0
        seconds = rcvtimeo(timeout)
        if seconds != self._rcvtimeo:
            # The kernel's receive timeout bounds the blocking recv: still one sleeping call,
            # plus a setsockopt only when the timeout moves to another step of the grid.
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, _timeval(seconds))
            self._rcvtimeo = seconds
        try:
            n = self.sock.recv_into(view)
        except (BlockingIOError, InterruptedError):
            if timeout is None:
                # Not in blocking mode after all (someone changed it): never spin, poll instead.
                self.wait_readable(None)
            return 0  # else: SO_RCVTIMEO ran out
        except OSError as e:
            raise self._translate(e) from e
        return n or self._ended()

    def _ended(self) -> int:
        # Zero bytes on a readable socket: an orderly close, by the peer or by our shutdown().
        if self._shut:
            raise ClosedError("connection closed")
        raise BrokenError("peer closed the connection", "peer_closed")

    def has_unread_data(self) -> bool:
        """Whether bytes from the peer are waiting unread (its FIN alone does not count).

        Liveness checks use it: unread bytes prove the peer is alive and only our reader is
        behind, while a peer that closed must not look alive just because EOF is "readable".
        """
        if self._wait is not None:  # a socket double: readiness is all it can tell
            return self._wait(True, 0)
        try:
            return bool(self.sock.recv(1, socket.MSG_PEEK | _DONTWAIT))
        except OSError:  # nothing yet (EAGAIN), or reset: either way, no data
            return False

    def wait_readable(self, timeout: float | None) -> bool:
        if self._wait is not None:
            return self._wait(True, timeout)
        if self._rpoll is None:
            self._rpoll = select.poll()
            self._rpoll.register(self._fd, _POLLIN)
        return wait_fd(self._rpoll, timeout)

    # -- writing --------------------------------------------------------------------------

    def write(self, data: bytes | bytearray | memoryview, timeout: float | None) -> SendStatus:
        """Write a whole frame (or batch of frames), all or nothing.

        Args:
            timeout: how long to wait for room before the first byte: 0 tries once, None
                waits as long as it takes.

        Returns:
            ``COMPLETED`` when every byte went out; ``WOULD_BLOCK`` when none did in time.

        Raises:
            BrokenError: the peer is gone, or stalled mid-frame past ``stall_timeout``.
            ClosedError: this side closed the socket.
        """
        sent = self._first_bytes(data, timeout)
        if sent == 0:
            return _WOULD_BLOCK
        if sent < len(data):  # some of the frame is on the wire: finish it, whatever the timeout
            self._finish(memoryview(data), sent)
        return _COMPLETED

    def _first_bytes(self, data: bytes | bytearray | memoryview, timeout: float | None) -> int:
        """Bytes of ``data`` the socket took, waiting up to ``timeout`` for the first (0: none)."""
        sent = self.send_some(data)
        deadline = None if sent or timeout == 0 else deadline_after(timeout)
        while sent == 0 and timeout != 0:
            left = time_left(deadline)
            if left == 0.0:
                return 0
            self.wait_writable(left)
            sent = self.send_some(data)
        return sent

    def _finish(self, view: memoryview, sent: int) -> None:
        """Write the rest of ``view`` from ``sent`` on, each pause bounded by ``stall_timeout``."""
        stall_deadline = time.monotonic() + self.stall_timeout
        while sent < len(view):
            if not self.wait_writable(stall_deadline - time.monotonic()):
                if time.monotonic() >= stall_deadline:
                    raise BrokenError(f"peer stopped reading mid-frame for {self.stall_timeout}s", "stalled")
                continue
            n = self.send_some(view[sent:])
            if n:
                sent += n
                stall_deadline = time.monotonic() + self.stall_timeout

    def wait_writable(self, timeout: float | None) -> bool:
        if self._wait is not None:
            return self._wait(False, timeout)
        if self._wpoll is None:
            self._wpoll = select.poll()
            self._wpoll.register(self._fd, _POLLOUT)
        return wait_fd(self._wpoll, None if timeout is None else max(timeout, 0.0))

    def send_some(self, data: bytes | bytearray | memoryview) -> int:
        """One nonblocking send: the bytes the kernel took (0: none, it is full).

        Raises:
            BrokenError: the peer is gone.
            ClosedError: this side closed the socket.
        """
        try:
            return self.sock.send(data, _DONTWAIT)
        except (BlockingIOError, InterruptedError):
            return 0
        except OSError as e:
            raise self._translate(e) from e

    def send_parts(self, parts: list[bytes | bytearray | memoryview]) -> int:
        """``send_some`` of ``parts`` one after another, as one write: gathered by the kernel
        on a real socket (``sendmsg``), so a layer that frames data (links.mux) copies none
        of it; joined first for a socket double, a layer (TLS) or a long list.

        Raises:
            As ``send_some``.
        """
        if self._wait is not None or not _SENDMSG or len(parts) > _MAX_PARTS:
            return self.send_some(b"".join(parts))
        try:
            return self.sock.sendmsg(parts, (), _DONTWAIT)
        except (BlockingIOError, InterruptedError):
            return 0
        except OSError as e:
            raise self._translate(e) from e

    # -- closing --------------------------------------------------------------------------

    def shutdown_read(self) -> None:
        """Stop reading only (wakes a thread waiting to read; writes still go out): a closed
        connection that still owes bytes lingers this way. Later reads raise ``ClosedError``."""
        if self._shut:
            return
        self._shut = True
        try:
            self.sock.shutdown(socket.SHUT_RD)
        except OSError:
            pass

    def shutdown(self) -> None:
        """End both directions now (safe from any thread; wakes waiters). Idempotent."""
        if self._shut_both:
            return
        self._shut = self._shut_both = True
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass  # already reset or never connected: either way it is down

    def abort(self) -> None:
        """End both directions because something went wrong (a layer may say so differently:
        a multiplexed stream is reset rather than finished). A socket just shuts down."""
        self.shutdown()

    def close(self) -> None:
        """Release the fd. Only the fd's owner calls this (see the module docstring)."""
        if self._closed:
            return
        self.shutdown()
        self._closed = True
        self._discard_unread()
        self.sock.close()

    def _discard_unread(self) -> None:
        """Read off what the peer sent that nobody will read now. Closing a socket with unread
        input makes the kernel answer with a reset and drop what it had not sent yet: the
        goodbye of an orderly close, or the bytes a lingering close just wrote."""
        scratch = bytearray(_DISCARD_CHUNK)
        for _ in range(_DISCARD_READS):  # bounded: a peer that keeps sending gets its reset
            try:
                if not self.sock.recv_into(scratch, 0, _DONTWAIT):
                    return  # nothing left (after a shutdown, 0 means empty, not only EOF)
            except OSError:  # nothing left (EAGAIN), or already reset
                return

    def _translate(self, e: OSError) -> Exception:
        if self._shut or self._closed or e.errno == errno.EBADF:
            return ClosedError("connection closed")
        return BrokenError(f"{type(e).__name__}: {e.strerror or e}")


def socket_addrs(sock: Any) -> tuple[Addr | None, Addr | None]:
    """``(local, peer)`` of a socket; either is None when the OS cannot say (already reset)."""
    def addr(get: Any) -> Addr | None:
        try:
            a = get()
        except OSError:
            return None
        if not isinstance(a, tuple):
            return None
        return a if len(a) == 2 else (a[0], a[1])  # a pair as it is: a channel's, shared by all on its connection

    return addr(sock.getsockname), addr(sock.getpeername)
