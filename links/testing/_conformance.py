"""``check_transport(make_pair)``: one conformance suite for anything that claims to be a socket.

``make_pair()`` returns two connected socket-likes (not ``Transport`` objects): a real
``socket.socketpair()``, a ``links.testing.memory_socket_pair()``, or your own double. The
suite wraps each end in ``links._transport.Transport``, frames with a ``Link`` over a
``LengthPrefixFramer``, and checks what the rest of ``links`` relies on. Running it over the
real socket and over a double is what proves the double faithful (the idea of trio's
``check_two_way_stream``); call it from your own tests for your own socket-likes.

Each check takes a fresh pair and closes it, so checks cannot leak state into each other.

Filling a buffer without breaking the framing
    A ``Transport.write`` that got part of a frame out waits until the rest is written
    (all-or-nothing frames), so filling a socket with framed writes until one is refused
    can hang on a half-written last frame. The fill therefore goes below ``Transport``: raw
    ``send`` calls of a stream of fixed filler frames, then single bytes, until the socket
    refuses even one byte. The stream may stop mid-filler; a helper thread finishes that
    frame later while the other end drains, so the reader must see exactly the fillers and
    then the frame written after them: any byte a refused write had let through would show
    up as a corrupt frame.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from .._core._framer import LengthPrefixFramer
from .._core._link import Link
from .._core._protocol import Protocol
from .._core._status import NEED_DATA, SendStatus
from .._errors import BrokenError, ClosedError, LinksError
from .._transport import Transport

__all__ = ["check_transport"]

PairFactory = Callable[[], tuple[Any, Any]]

#: Bound on every wait of the suite: generous, since a failing check waits it out.
TIMEOUT = 10.0

_FILLER = bytes(range(256)) * 16  # the payload of each raw filler frame (4 KiB)

#: Far beyond any kernel socket buffer: a socket that takes this much never pushes back.
_MAX_FILL = 1 << 26


def check_transport(make_pair: PairFactory) -> None:
    """Assert that sockets from ``make_pair()`` behave as ``links`` needs.

    Checked, each on a fresh pair:

    * ``recv_into`` returns 0 when nothing is there; waits report readiness correctly;
      ``recv_into_waiting`` sleeps until bytes come.
    * ``write(timeout=0)`` on a full buffer returns ``WOULD_BLOCK`` and writes nothing, and
      the stream stays intact.
    * frames round-trip whole and in order in both directions, including frames larger
      than the socket buffer, written by one thread while another reads.
    * after the peer shuts down (or closes), the bytes it sent still arrive, then
      ``recv_into`` raises ``BrokenError`` with reason ``"peer_closed"``; writing to a
      closed peer raises ``BrokenError``.
    * after a local ``shutdown()``/``close()``, reads and writes raise ``ClosedError``, and
      ``shutdown()`` wakes threads waiting to read or write (in ``recv_into_waiting`` too).

    Raises:
        AssertionError: naming the check and what differed.
    """
    _run(_check_nothing_there, make_pair)
    _run(_check_waiting_read, make_pair)
    buffered = _run(_check_full_buffer, make_pair)
    _run(_check_round_trip, make_pair, large=2 * buffered + 1001)
    _run(_check_peer_shutdown, make_pair, close=False)
    _run(_check_peer_shutdown, make_pair, close=True)
    _run(_check_local_shutdown, make_pair)
    _run(_check_shutdown_wakes_waiters, make_pair)
    _run(_check_shutdown_wakes_a_waiting_read, make_pair)


def _run(check: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """Run one check; a ``links`` error it did not expect is a failed check too."""
    try:
        return check(*args, **kwargs)
    except LinksError as e:
        raise AssertionError(f"{check.__name__.removeprefix('_check_')}: unexpected {e!r}") from e


# -- the checks ------------------------------------------------------------------------------


def _check_nothing_there(make_pair: PairFactory) -> None:
    with _transports(make_pair) as (a, b):
        buf = bytearray(64)
        _expect(b.recv_into(memoryview(buf)) == 0, "nothing there", "recv_into on an empty socket must return 0")
        _expect(not b.wait_readable(0), "nothing there", "an empty socket must not be readable")
        _expect(a.wait_writable(0), "nothing there", "a fresh socket must be writable")
        frame = _framer(64).encode(b"hello")
        _expect(a.write(frame, 0) is SendStatus.COMPLETED, "nothing there", "a small write must complete")
        _expect(b.wait_readable(TIMEOUT), "nothing there", "a socket with data must become readable")
        link = _link(64)
        _expect(_read_frames(b, link, 1) == [b"hello"], "nothing there", "the frame must arrive whole")
        _expect(b.recv_into(memoryview(buf)) == 0, "nothing there", "recv_into after draining must return 0")


def _check_full_buffer(make_pair: PairFactory) -> int:
    """Returns how many bytes the socket buffered before refusing more."""
    with _transports(make_pair) as (a, b):
        filler = _framer(len(_FILLER) + 4).encode(_FILLER)
        sent = _fill(a, filler)
        _expect(sent > 0, "full buffer", "a fresh socket must buffer something")
        _expect(not a.wait_writable(0), "full buffer", "a full socket must not be writable")
        extra = _framer(64).encode(b"refused, then sent again")
        refused = a.write(extra, 0)
        _expect(refused is SendStatus.WOULD_BLOCK, "full buffer", "write(timeout=0) on a full socket must not block")

        def finish() -> None:  # the rest of the cut filler frame, then the refused frame again
            _send_raw(a, filler[sent % len(filler) :] if sent % len(filler) else b"")
            if a.write(extra, TIMEOUT) is not SendStatus.COMPLETED:
                raise AssertionError("full buffer: the refused frame could not be sent once the peer read")

        fillers = -(-sent // len(filler))  # frames started, the last possibly cut
        with _background(finish, a, b):
            got = _read_frames(b, _link(len(filler)), fillers + 1)
        _expect(all(f == _FILLER for f in got[:-1]), "full buffer", "filler frames arrived corrupt")
        _expect(got[-1] == b"refused, then sent again", "full buffer", "the stream was not intact after WOULD_BLOCK")
        _expect(b.recv_into(memoryview(bytearray(64))) == 0, "full buffer", "bytes beyond the expected frames arrived")
        return sent


def _check_round_trip(make_pair: PairFactory, large: int) -> None:
    big = (bytes(range(251)) * (large // 251 + 1))[:large]
    frames = [b"", b"x", bytes(range(256)), big, *(b"%d" % i for i in range(50)), big[::-1], b"last"]
    with _transports(make_pair) as (a, b):

        def writer(t: Transport) -> Callable[[], None]:
            def run() -> None:
                for frame in frames:
                    if t.write(_framer(large + 4).encode(frame), TIMEOUT) is not SendStatus.COMPLETED:
                        raise AssertionError("round trip: a write timed out")

            return run

        # Both directions at once, each written by its own thread: the big frames cannot
        # fit into a socket buffer, so they only get through while the other end reads.
        with _background(writer(a), a, b), _background(writer(b), a, b):
            got_b = _read_frames(b, _link(large + 4), len(frames))
            got_a = _read_frames(a, _link(large + 4), len(frames))
        _expect(got_b == frames, "round trip", "frames from a to b arrived changed or out of order")
        _expect(got_a == frames, "round trip", "frames from b to a arrived changed or out of order")


def _check_peer_shutdown(make_pair: PairFactory, close: bool) -> None:
    name = "peer close" if close else "peer shutdown"
    with _transports(make_pair) as (a, b):
        status = a.write(_framer(64).encode(b"last words"), 0)
        _expect(status is SendStatus.COMPLETED, name, "a small write must complete")
        if close:
            a.close()
        else:
            a.shutdown()
        link = _link(64)
        _expect(_read_frames(b, link, 1) == [b"last words"], name, "bytes sent before the end must still arrive")
        _expect(b.wait_readable(TIMEOUT), name, "a socket at EOF must be readable")
        try:
            b.recv_into(link.buffer.writable())
        except BrokenError as e:
            _expect(e.reason == "peer_closed", name, f"the reason must be 'peer_closed', not {e.reason!r}")
        else:
            raise AssertionError(f"{name}: recv_into at EOF must raise BrokenError")
        if close:
            _expect(_write_fails(b) is BrokenError, name, "writing to a closed peer must raise BrokenError")


def _check_local_shutdown(make_pair: PairFactory) -> None:
    with _transports(make_pair) as (a, b):
        frame = _framer(64).encode(b"x")
        for step in ("shutdown", "close"):
            getattr(a, step)()
            read_error = _raises(lambda: a.recv_into(memoryview(bytearray(64))))
            _expect(read_error is ClosedError, f"local {step}", "recv_into must raise ClosedError")
            _expect(_raises(lambda: a.write(frame, 0)) is ClosedError, f"local {step}", "write must raise ClosedError")


def _check_shutdown_wakes_waiters(make_pair: PairFactory) -> None:
    with _transports(make_pair) as (a, b):
        _fill(a, _framer(len(_FILLER) + 4).encode(_FILLER))
        results: dict[str, Any] = {}
        started = [threading.Event(), threading.Event()]

        def wait_read() -> None:
            started[0].set()
            results["read"] = a.wait_readable(TIMEOUT)

        def blocked_write() -> None:
            started[1].set()
            results["write"] = _raises(lambda: a.write(_framer(64).encode(b"x"), TIMEOUT))

        threads = [threading.Thread(target=fn, daemon=True) for fn in (wait_read, blocked_write)]
        for t in threads:
            t.start()
        # Both threads are about to wait (or already do): a shutdown that wakes nobody
        # leaves them waiting until their own TIMEOUT, so they are still there at TIMEOUT/2.
        for event in started:
            event.wait(TIMEOUT)
        a.shutdown()
        for t in threads:
            t.join(TIMEOUT / 2)
        woken = not any(t.is_alive() for t in threads)
        for t in threads:
            t.join(TIMEOUT)
        _expect(woken, "shutdown wakes", "shutdown() did not wake the threads waiting on the socket")
        read, write = results.get("read"), results.get("write")
        _expect(read is True, "shutdown wakes", "a reader waiting when shutdown() came must see readiness")
        _expect(write is ClosedError, "shutdown wakes", f"a blocked write must raise ClosedError, not {write}")


def _check_shutdown_wakes_a_waiting_read(make_pair: PairFactory) -> None:
    """The one reader of a connection, asleep in ``recv_into_waiting``, is woken by ``shutdown()``."""
    with _transports(make_pair) as (a, b):
        results: dict[str, Any] = {}
        started = threading.Event()

        def waiting_read() -> None:
            started.set()
            results["recv"] = _raises(lambda: _read_until_data(a))

        thread = threading.Thread(target=waiting_read, daemon=True)
        thread.start()
        started.wait(TIMEOUT)
        a.shutdown()
        thread.join(TIMEOUT)
        _expect(not thread.is_alive(), "shutdown wakes", "shutdown() did not wake a waiting read")
        recv = results.get("recv")
        _expect(recv is ClosedError, "shutdown wakes", f"a waiting read must raise ClosedError, not {recv}")


def _check_waiting_read(make_pair: PairFactory) -> None:
    """``recv_into_waiting`` sleeps until bytes come, then returns them."""
    with _transports(make_pair) as (a, b):
        got: list[bytes] = []
        started = threading.Event()

        def reader() -> None:
            started.set()
            data = b""
            while len(data) < 4:  # a read may return part of what was sent
                data += _read_until_data(b)
            got.append(data)

        thread = threading.Thread(target=reader, daemon=True)
        thread.start()
        started.wait(TIMEOUT)
        _expect(a.write(b"ping", TIMEOUT) is SendStatus.COMPLETED, "waiting read", "a small write must complete")
        thread.join(TIMEOUT)
        _expect(not thread.is_alive(), "waiting read", "a waiting read did not return once bytes came")
        _expect(got == [b"ping"], "waiting read", f"a waiting read returned {got}, not [b'ping']")


def _read_until_data(t: Transport) -> bytes:
    """``recv_into_waiting`` until it returns bytes (it may return 0: a signal, a spurious wakeup)."""
    buf = bytearray(64)
    while not (n := t.recv_into_waiting(memoryview(buf))):
        pass
    return bytes(buf[:n])


# -- helpers --------------------------------------------------------------------------------


def _expect(ok: bool, check: str, what: str) -> None:
    if not ok:
        raise AssertionError(f"{check}: {what}")


def _framer(max_payload: int) -> LengthPrefixFramer:
    return LengthPrefixFramer(header_size=4, max_frame_size=max_payload + 4)


def _link(max_payload: int) -> Link:
    protocol: Protocol = Protocol()
    protocol.framer = _framer(max_payload)
    return Link(protocol)


@contextmanager
def _transports(make_pair: PairFactory) -> Iterator[tuple[Transport, Transport]]:
    a, b = make_pair()
    ends: list[Transport] = []
    try:
        # A stalled half-written frame fails within the suite's bound, not after 30 s.
        ends = [Transport(a, stall_timeout=TIMEOUT), Transport(b, stall_timeout=TIMEOUT)]
        yield ends[0], ends[1]
    finally:
        for t in ends:
            t.close()
        for sock in (a, b)[len(ends) :]:
            sock.close()


@contextmanager
def _background(fn: Callable[[], None], *transports: Transport) -> Iterator[None]:
    """Run ``fn`` on a thread for the block; re-raise its error. If the block fails, the
    transports are shut down first, which wakes the thread wherever it waits."""
    errors: list[BaseException] = []

    def run() -> None:
        try:
            fn()
        except BaseException as e:
            errors.append(e)

    thread = threading.Thread(target=run, name="links-check", daemon=True)
    thread.start()
    try:
        yield
    except BaseException:
        for t in transports:
            t.shutdown()
        thread.join(TIMEOUT)
        raise
    thread.join(TIMEOUT)
    if thread.is_alive():
        for t in transports:
            t.shutdown()
        thread.join(TIMEOUT)
        raise AssertionError("a writer thread did not finish")
    if errors:
        raise errors[0]


def _read_frames(t: Transport, link: Link, count: int) -> list[bytes]:
    """Read until ``count`` whole frames arrived (an AssertionError after ``TIMEOUT``)."""
    deadline = time.monotonic() + TIMEOUT
    frames: list[bytes] = []
    while len(frames) < count:
        msg = link.next_message()
        if msg is not NEED_DATA:
            frames.append(msg)
            continue
        n = t.recv_into(link.buffer.writable())
        if n:
            link.buffer.commit(n)
            continue
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise AssertionError(f"only {len(frames)} of {count} frames arrived within {TIMEOUT}s")
        t.wait_readable(remaining)
    return frames


def _fill(t: Transport, filler: bytes) -> int:
    """Raw-send copies of ``filler`` until the socket refuses a single byte; bytes sent."""
    sock, view = t.sock, memoryview(filler)
    sent = 0
    step = len(filler)
    while sent < _MAX_FILL:
        at = sent % len(filler)
        try:
            sent += sock.send(view[at : at + step], socket.MSG_DONTWAIT)
        except BlockingIOError:
            if step == 1:
                return sent
            step = 1  # a big send can be refused while a small one still fits
    raise AssertionError(f"full buffer: the socket took {sent} bytes without ever refusing one")


def _send_raw(t: Transport, data: bytes) -> None:
    """Raw-send all of ``data``, waiting for room (below ``Transport``, see the module docstring)."""
    view = memoryview(data)
    deadline = time.monotonic() + TIMEOUT
    while view:
        try:
            n = t.sock.send(view, socket.MSG_DONTWAIT)
        except BlockingIOError:
            n = 0
        view = view[n:]
        if view and not t.wait_writable(deadline - time.monotonic()) and time.monotonic() > deadline:
            raise AssertionError("full buffer: the reader did not make room")


def _write_fails(t: Transport) -> type[BaseException] | None:
    """The error class of writing to a closed peer. TCP may accept a first write (the peer
    answers it with a reset), so try a few times, waiting for that answer in between."""
    frame = _framer(64).encode(b"anyone there?")
    for _ in range(3):
        error = _raises(lambda: t.write(frame, 0))
        if error is not None:
            return error
        t.wait_readable(1.0)
    return None


def _raises(fn: Callable[[], Any]) -> type[BaseException] | None:
    try:
        fn()
    except LinksError as e:
        return type(e)
    return None
