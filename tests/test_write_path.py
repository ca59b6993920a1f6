"""The write path never makes anyone wait on a peer that stopped reading.

What these tests prove, over real loopback sockets, against hostile peers that are plain
``socket.socket``s which never read (a small ``SO_RCVBUF``, so what is sent to them piles up
in our kernel buffers within a few megabytes):

* Replies sent from the poll thread (``send_reply`` calling ``con.send(msg)``, with the
  default timeout or ``timeout=0``) never make the poll thread wait: a flooder that never
  reads its replies does not delay a healthy client of the same service, and its refused
  replies reach ``on_would_block``.
* ``send(msg, timeout=0)`` never waits on the socket: it answers ``WOULD_BLOCK`` or
  ``COMPLETED`` at once, also when a frame could only be written in part (links then owns
  the rest and the poll thread finishes it once the socket turns writable, with no further
  call from the user).
* A ``send(timeout=0)`` on a ``Ref`` returns at once even while another thread is stuck in a
  ``send(timeout=None)`` on a clone of it.
* ``broadcast(msg, timeout=0)`` returns at once; one slow connection neither delays the
  others nor costs them a message.
* ``stall_timeout=`` (on ``Svc.bind`` and ``Clt.connect``): a peer that accepts no byte we
  have to send for that long is a slow consumer. Its connection alone is closed (logged as
  ``clt.slow_consumer`` with ``stall_timeout``, gate slot released, the peer sees the end) and
  later sends raise ``BrokenError`` (``reason == "slow_consumer"`` on the connection's own
  sender); healthy connections carry on.

Every wait is bounded: a call that could hang runs on a worker thread (``spawn``) and the
test fails, naming the call, when it has not returned in time; closing the connection then
wakes the worker. Timing bounds (``PROMPT``) are "never waits for the peer" checks, far above
any scheduling hiccup and far below the 30 s default stall timeout, not speed assertions.
"""

from __future__ import annotations

import socket
import struct
import sys
import threading
import time
import traceback
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager, suppress
from pathlib import Path
from typing import Any

import pytest

import links

WAIT = 5.0  # for what must happen (a message arriving, a log event, a peer seeing the end)
PROMPT = 1.0  # the longest a call that must not wait on the peer may take
SMALL_RCVBUF = 4096  # the hostile peers' receive buffer (the kernel doubles it)
STALL = 0.5  # the stall_timeout of the slow-consumer tests

COMPLETED = links.SendStatus.COMPLETED
WOULD_BLOCK = links.SendStatus.WOULD_BLOCK


class Json(links.Protocol):
    framer = links.LengthPrefixFramer(header_size=4, max_frame_size=1 << 20)
    messenger = links.JsonMessenger()


class Raw(links.Protocol):
    framer = links.LengthPrefixFramer(header_size=4, max_frame_size=1 << 26)
    messenger = links.RawMessenger()


def more_than_the_kernel_takes() -> int:
    """A payload size the kernel cannot take in one write toward a peer that does not read.

    TCP grows a send buffer up to ``tcp_wmem``'s maximum (4 MiB by default; about 3 MiB of it
    fit toward a non-reader on loopback), so a 1 MiB frame could go out whole: one MiB more
    than that maximum is always written only in part.
    """
    try:
        wmem_max = int(Path("/proc/sys/net/ipv4/tcp_wmem").read_text().split()[2])
    except (OSError, ValueError, IndexError):
        wmem_max = 4 << 20
    return max(1 << 20, wmem_max + (1 << 20))


# -- hostile peers ------------------------------------------------------------------------------


def non_reader(addr: tuple[str, int]) -> socket.socket:
    """A client that connects and never reads. ``SO_RCVBUF`` is set before ``connect``, so
    the window it offers stays small and whatever is sent to it piles up on our side."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, SMALL_RCVBUF)
        sock.settimeout(WAIT)
        sock.connect(addr)
    except BaseException:
        sock.close()
        raise
    return sock


def non_reading_listener() -> socket.socket:
    """A raw server socket whose accepted peers have a small receive buffer (inherited from
    the listener) and, in these tests, never read."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, SMALL_RCVBUF)
    sock.bind(("127.0.0.1", 0))
    sock.listen()
    sock.settimeout(WAIT)
    return sock


def target(addr: tuple[str, int]) -> str:
    return f"127.0.0.1:{addr[1]}"


def raw_client(listener: socket.socket, timer: links.Timer, poll: links.PollHandler, **connect: Any) -> links.Clt:
    """A ``Raw`` client of ``listener`` (whose accepted peer the test then never reads)."""
    return links.Clt.connect(
        target(listener.getsockname()), protocol=Raw, timer=timer, poll_handler=poll, timeout=WAIT, **connect
    )


def slow_stamp(in_hook: threading.Event, release: threading.Event) -> type:
    """A ``Raw`` protocol whose ``on_send`` of ``b"slow"`` holds the write lock until ``release``."""

    class SlowStamp(Raw):
        def on_send(self, msg):
            if msg == b"slow":
                in_hook.set()
                release.wait(WAIT)
            return None

    return SlowStamp


def client_of_a_non_reader(stack: ExitStack, timer: links.Timer, poll: links.PollHandler, **connect: Any):
    """A ``Raw`` client and the raw peer it connected to, which never reads; ``stack`` closes both."""
    listener = stack.enter_context(non_reading_listener())
    clt = stack.enter_context(raw_client(listener, timer, poll, **connect))
    peer, _ = listener.accept()
    stack.enter_context(peer)
    return clt, peer


def server_side_id(svc: links.Svc, peer: socket.socket) -> str:
    """The ``con_id`` (as logged) of the server's side of a raw client's connection."""
    return str(links.ConId(links.Role.ACCEPTOR, svc.name, svc.local_addr, peer.getsockname()[:2]))


def pooled(sender: links.SvcSender, con_id: str) -> links.ConId:
    (found,) = [c for c in sender.con_ids() if str(c) == con_id]
    return found


def read_until_end(sock: socket.socket, within: float = WAIT) -> str:
    """Drain ``sock`` until the peer ends the connection: ``"eof"``, ``"reset"``, or
    ``"timeout"`` if it had not ended within ``within`` seconds."""
    deadline = time.monotonic() + within
    try:
        while (remaining := deadline - time.monotonic()) > 0:
            sock.settimeout(remaining)
            if not sock.recv(1 << 20):
                return "eof"
    except ConnectionResetError:
        return "reset"
    except TimeoutError:
        pass
    return "timeout"


def recv_exactly(sock: socket.socket, n: int, within: float = WAIT) -> bytes:
    deadline = time.monotonic() + within
    chunks, got = [], 0
    while got < n:
        remaining = deadline - time.monotonic()
        assert remaining > 0, f"only {got} of {n} bytes arrived within {within}s"
        sock.settimeout(remaining)
        chunk = sock.recv(min(1 << 20, n - got))
        assert chunk, f"the connection ended after {got} of {n} bytes"
        chunks.append(chunk)
        got += len(chunk)
    return b"".join(chunks)


@contextmanager
def flooding(sock: socket.socket, frame: bytes, limit: int = 64 << 20) -> Iterator[None]:
    """Send ``frame`` over and over on ``sock`` (whole frames, up to ``limit`` bytes) from a
    background thread, never reading; stopped and joined when the block ends."""
    stop = threading.Event()
    chunk = memoryview(frame * max(1, 65536 // len(frame)))

    def run() -> None:
        sock.settimeout(0.05)  # a full socket: look at ``stop`` again this often
        sent, pos = 0, 0
        while not stop.is_set() and sent < limit:
            try:
                n = sock.send(chunk[pos:])
            except TimeoutError:
                continue
            except OSError:
                return  # the server cut it off
            sent += n
            pos = (pos + n) % len(chunk)

    thread = threading.Thread(target=run, name="flooder", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(WAIT)


# -- bounded calls ------------------------------------------------------------------------------


class Worker:
    """Runs ``fn`` on its own thread, so that a call which hangs fails the test in bounded
    time instead of hanging it."""

    def __init__(self, fn: Callable[[], Any], name: str) -> None:
        self._done = threading.Event()
        self._result: Any = None
        self._error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, args=(fn,), name=name, daemon=True)
        self.thread.start()

    def _run(self, fn: Callable[[], Any]) -> None:
        try:
            self._result = fn()
        except BaseException as e:  # handed to the test by outcome()
            self._error = e
        finally:
            self._done.set()

    @property
    def done(self) -> bool:
        return self._done.is_set()

    def outcome(self, timeout: float, what: str) -> Any:
        """``fn``'s result (or its exception, raised here); fails the test if it is still
        running after ``timeout`` seconds."""
        if not self._done.wait(timeout):
            frame = sys._current_frames().get(self.thread.ident)
            where = "".join(traceback.format_stack(frame)[-3:]) if frame is not None else "?\n"
            pytest.fail(f"{what} has not returned after {timeout}s; it waits in:\n{where}", pytrace=False)
        if self._error is not None:
            raise self._error
        return self._result


@pytest.fixture
def spawn(poll, timer):
    """Start a ``Worker``; every worker is joined after the test body closed its connections
    (which wakes any worker still stuck in a call), before the poll and timer shut down."""
    workers: list[Worker] = []

    def start(fn: Callable[[], Any], name: str = "worker") -> Worker:
        worker = Worker(fn, name)
        workers.append(worker)
        return worker

    yield start
    for worker in workers:
        worker.thread.join(WAIT)


def timed(fn: Callable[[], Any]) -> tuple[Any, float]:
    started = time.monotonic()
    result = fn()
    return result, time.monotonic() - started


class Progress:
    """Calls entered and returned by a sender thread, waitable: tells when it is stuck."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self.entered = 0
        self.returned = 0

    def enter(self) -> None:
        with self._cond:
            self.entered += 1
            self._cond.notify_all()

    def leave(self) -> None:
        with self._cond:
            self.returned += 1
            self._cond.notify_all()

    def wait_stuck(self, quiet: float, within: float) -> bool:
        """Whether, within ``within`` seconds, a call was seen in progress with no call
        returning for ``quiet`` seconds."""
        deadline = time.monotonic() + within
        with self._cond:
            while time.monotonic() < deadline:
                returned = self.returned
                if not self._cond.wait_for(lambda: self.returned != returned, quiet) and self.entered > returned:
                    return True
        return False


# -- the services -------------------------------------------------------------------------------


class EchoServer:
    """A JSON echo service whose replies go out from the poll thread via ``reply(con, msg)``;
    ``refused`` is set once a reply reached ``on_would_block``."""

    def __init__(self, reply: Callable[[Any, Any], Any]) -> None:
        self.refused = threading.Event()
        server = self

        class Echo(Json):
            def send_reply(self, msg, con):
                reply(con, msg)

            def on_would_block(self, msg):
                server.refused.set()

        self.protocol = Echo


REPLIES = {
    "default_timeout": lambda con, msg: con.send(msg),
    "timeout_0": lambda con, msg: con.send(msg, timeout=0),
}


# -- 1, 2: replies from the poll thread ---------------------------------------------------------


@pytest.mark.timeout(20)
@pytest.mark.parametrize("reply", list(REPLIES))
def test_a_flooder_that_never_reads_its_replies_does_not_delay_a_healthy_client(timer, poll, reply):
    """Echo replies to a flooder that never reads fill its socket; the poll thread must not
    wait on it, so a healthy client of the same service still gets every echo at once."""
    server = EchoServer(REPLIES[reply])
    request = Json.framer.encode(Json.messenger.serialize({"pad": "x" * 2048}))
    with ExitStack() as stack:
        svc = stack.enter_context(
            links.Svc.bind("127.0.0.1:0", protocol=server.protocol, timer=timer, poll_handler=poll)
        )
        svc.into_sender_with_spawned_recver()
        healthy = stack.enter_context(
            links.Clt.connect(target(svc.local_addr), protocol=Json, timer=timer, timeout=WAIT, name="healthy")
        )
        assert healthy.send({"warm": "up"}) is COMPLETED
        assert healthy.recv(timeout=WAIT) == {"warm": "up"}

        flooder = stack.enter_context(non_reader(svc.local_addr))
        stack.enter_context(flooding(flooder, request))
        # Bounded: once the flooder's socket is full its replies are refused. Today the wait
        # runs out instead, because the poll thread is stuck writing to the flooder.
        server.refused.wait(3.0)

        for i in range(50):
            assert healthy.send({"rt": i}) is COMPLETED
            assert healthy.recv(timeout=2.0) == {"rt": i}, f"round trip {i}: no echo within 2s"
        assert server.refused.is_set(), "the flooder's replies were never refused: its socket never filled"


# -- 3: send(timeout=0) against a non-reader ----------------------------------------------------


@pytest.mark.timeout(20)
def test_send_with_timeout_0_never_waits_and_soon_says_would_block(timer, poll, spawn):
    """Against a peer that never reads, ``send(timeout=0)`` soon answers ``WOULD_BLOCK`` and
    no call waits for the peer (today one that wrote part of a frame waits up to 30 s)."""
    msg = b"x" * 1000
    with ExitStack() as stack:
        clt, peer = client_of_a_non_reader(stack, timer, poll)

        def fill() -> tuple[int | None, float]:
            longest = 0.0
            for calls in range(1, 100_001):
                status, took = timed(lambda: clt.send(msg, timeout=0))
                longest = max(longest, took)
                if status is WOULD_BLOCK:
                    return calls, longest
                assert status is COMPLETED
            return None, longest

        calls, longest = spawn(fill, "sender").outcome(WAIT, "a send(timeout=0) against a peer that never reads")
        assert calls is not None, "100,000 sends of 1 KB to a peer that never reads were all COMPLETED"
        assert longest < PROMPT, f"a send(timeout=0) took {longest:.3f}s"


# -- 4: a shared Ref --------------------------------------------------------------------------


@pytest.mark.timeout(20)
def test_send_with_timeout_0_on_a_ref_does_not_wait_behind_a_sender_stuck_on_the_peer(timer, poll, spawn):
    """One thread waits in ``send(timeout=None)`` for a peer that never reads; another
    thread's ``send(timeout=0)`` on a clone of the same ``Ref`` still returns at once."""
    chunk = b"x" * 65536
    with ExitStack() as stack:
        clt, peer = client_of_a_non_reader(stack, timer, poll)
        _, sender = clt.split_ref()
        stack.callback(sender.close)  # wakes the stuck sender before the workers are joined

        progress = Progress()

        def send_forever() -> None:
            while True:
                progress.enter()
                sender.send(chunk, timeout=None)
                progress.leave()

        first = spawn(send_forever, "stuck-sender")
        stuck = progress.wait_stuck(quiet=0.5, within=WAIT)
        if first.done:
            first.outcome(0, "the first sender")  # raises what ended it
        assert stuck, "send(timeout=None) to a peer that never reads never got stuck"

        other = sender.clone()
        second = spawn(lambda: timed(lambda: other.send(b"y", timeout=0)), "nonblocking-sender")
        status, took = second.outcome(3.0, "send(timeout=0) on a clone of a Ref whose other holder is stuck")
        assert isinstance(status, links.SendStatus)
        assert took < PROMPT, f"send(timeout=0) took {took:.3f}s"
        assert not first.done, "the first sender was expected to be still waiting for room"


# -- 5: broadcast --------------------------------------------------------------------------------


@pytest.mark.timeout(20)
def test_broadcast_with_timeout_0_is_not_held_up_by_a_slow_connection(timer, poll, spawn, logs):
    """Each ``broadcast(timeout=0)`` returns at once; the healthy client gets every message,
    in order, while the connection that never reads is refused some."""
    pad = "x" * 16384
    with ExitStack() as stack:
        svc = stack.enter_context(links.Svc.bind("127.0.0.1:0", protocol=Json, timer=timer, poll_handler=poll))
        sender = svc.into_sender_with_spawned_recver()
        healthy = stack.enter_context(
            links.Clt.connect(target(svc.local_addr), protocol=Json, timer=timer, timeout=WAIT, name="healthy")
        )
        stack.enter_context(non_reader(svc.local_addr))
        logs.expect("svc.accepted", count=2)
        assert poll.sync()
        assert len(sender) == 2

        def broadcasts() -> list[tuple[int, float]]:
            """Broadcast until the slow connection has refused 20 of them (and at least 200
            went out); the healthy client reads each before the next, so it always has room."""
            taken: list[tuple[int, float]] = []
            for i in range(2000):
                n, took = timed(lambda: sender.broadcast({"i": i, "pad": pad}, timeout=0))
                taken.append((n, took))
                got = healthy.recv(timeout=WAIT)
                assert got is not None and got["i"] == i, f"broadcast {i}: the healthy client got {got and got['i']}"
                if i + 1 >= 200 and sum(1 for n, _ in taken if n < 2) >= 20:
                    break
            return taken

        taken = spawn(broadcasts, "broadcaster").outcome(
            12.0, "broadcast(timeout=0) with a connection that never reads"
        )
        longest = max(took for _, took in taken)
        assert longest < PROMPT, f"a broadcast(timeout=0) took {longest:.3f}s"
        assert all(n >= 1 for n, _ in taken)  # the healthy client took every one (and got it, in order)
        slow_takes = sum(n for n, _ in taken) - len(taken)
        assert slow_takes < len(taken), "the connection that never reads was never refused a message"


# -- 6: slow consumers ---------------------------------------------------------------------------


@pytest.mark.timeout(20)
def test_a_slow_consumer_is_cut_off_by_the_service_and_healthy_clients_carry_on(timer, poll, logs):
    """``Svc.bind(stall_timeout=0.5)``: a client that takes none of what the service sends is
    cut off (logged, gate slot back, it sees the end); a healthy client carries on."""
    big = {"pad": "x" * 60000}
    server = EchoServer(REPLIES["timeout_0"])
    with ExitStack() as stack:
        svc = stack.enter_context(
            links.Svc.bind(
                "127.0.0.1:0", protocol=server.protocol, timer=timer, poll_handler=poll, stall_timeout=STALL
            )
        )
        sender = svc.into_sender_with_spawned_recver()
        healthy = stack.enter_context(
            links.Clt.connect(target(svc.local_addr), protocol=Json, timer=timer, timeout=WAIT, name="healthy")
        )
        slow = stack.enter_context(non_reader(svc.local_addr))
        slow_id = server_side_id(svc, slow)
        logs.expect("svc.accepted", count=2)
        assert poll.sync()
        assert svc.gate.in_use == 2
        slow_con = pooled(sender, slow_id)

        for _ in range(10_000):  # ~600 MB at most; the peer's side is full after a few MB
            status, took = timed(lambda: sender.send_to(slow_con, big, timeout=0))
            assert took < PROMPT, f"send_to(timeout=0) took {took:.3f}s"
            if status is WOULD_BLOCK:
                break
        else:
            pytest.fail("a peer that never reads took every message")

        cut = logs.expect("clt.slow_consumer", con_id=slow_id)
        assert cut["stall_timeout"] == STALL
        logs.expect("clt.disconnected", con_id=slow_id)
        assert read_until_end(slow) in ("eof", "reset")
        with pytest.raises(links.BrokenError):
            sender.send_to(slow_con, big, timeout=0)
        assert poll.sync()
        assert svc.gate.in_use == 1  # its slot came back
        assert len(sender) == 1 and slow_id not in map(str, sender.con_ids())
        assert logs.matching("clt.slow_consumer") == [cut]  # nobody else was cut off

        for i in range(10):
            assert healthy.send({"after": i}) is COMPLETED
            assert healthy.recv(timeout=WAIT) == {"after": i}


@pytest.mark.timeout(20)
def test_a_client_whose_server_never_reads_breaks_as_a_slow_consumer(timer, poll, spawn, logs):
    """``Clt.connect(stall_timeout=0.5)`` to a server that never reads: sending raises
    ``BrokenError("slow_consumer")`` within seconds, and so does every later send."""
    chunk = b"x" * 65536
    with ExitStack() as stack:
        listener = stack.enter_context(non_reading_listener())
        clt = stack.enter_context(raw_client(listener, timer, poll, stall_timeout=STALL))
        peer, _ = listener.accept()
        stack.enter_context(peer)

        def send_until_it_breaks() -> links.BrokenError | None:
            for _ in range(10_000):  # ~650 MB at most; the peer's side is full after a few MB
                try:
                    clt.send(chunk, timeout=None)
                except links.BrokenError as e:
                    return e
            return None

        error, took = spawn(lambda: timed(send_until_it_breaks), "sender").outcome(
            WAIT, "send(timeout=None) to a server that never reads, with stall_timeout=0.5"
        )
        assert error is not None, "every send to a server that never reads completed"
        assert error.reason == "slow_consumer"
        assert took < WAIT
        cut = logs.expect("clt.slow_consumer", con_id=str(clt.con_id))
        assert cut["stall_timeout"] == STALL
        with pytest.raises(links.BrokenError) as later:
            clt.send(b"y", timeout=0)
        assert later.value.reason == "slow_consumer"


# -- 7: the poll thread finishes a partly written frame ------------------------------------------


@pytest.mark.timeout(20)
def test_a_partly_written_frame_is_finished_without_another_send(timer, poll, spawn):
    """``send(timeout=0)`` of a frame larger than the kernel takes answers ``COMPLETED`` at
    once; the poll thread writes the rest once the peer reads, with no further call."""
    size = more_than_the_kernel_takes()
    payload = bytes(range(256)) * (size // 256)
    with ExitStack() as stack:
        clt, peer = client_of_a_non_reader(stack, timer, poll)

        status, took = spawn(lambda: timed(lambda: clt.send(payload, timeout=0)), "sender").outcome(
            3.0, f"send(timeout=0) of a {len(payload)}-byte frame to a peer not reading yet"
        )
        assert status is COMPLETED  # links owns the rest of the frame now
        assert took < PROMPT, f"send(timeout=0) took {took:.3f}s"

        # No further call on the client: the peer starts reading and the whole frame arrives.
        frame = recv_exactly(peer, 4 + len(payload), within=10.0)
        assert struct.unpack("!I", frame[:4]) == (len(payload),)
        assert frame[4:] == payload
        peer.settimeout(0.2)
        with pytest.raises(TimeoutError):
            peer.recv(1)  # and nothing after it


# -- what was COMPLETED is delivered ------------------------------------------------------------


@pytest.mark.timeout(20)
def test_what_was_completed_is_written_even_when_the_poll_thread_shuts_down_right_after_close(timer):
    # A program that sends, closes and exits (links.shutdown() at interpreter exit) must not
    # lose the bytes still owed at close: the shutdown gives them time to go out.
    poll = links.PollHandler("drain-poll")
    with non_reading_listener() as listener, ExitStack() as stack:
        clt = raw_client(listener, timer, poll)
        stack.callback(clt.close)
        peer, _ = listener.accept()
        stack.enter_context(peer)
        taken = 0
        for _ in range(100_000):  # until the socket and then the backlog are full
            if clt.send(b"x" * 1000, timeout=0) is WOULD_BLOCK:
                break
            taken += 1
        assert taken < 100_000, "the peer's buffers never filled"
        received = []
        start = threading.Event()

        def read_to_the_end() -> None:
            start.wait(WAIT)
            total = 0
            while chunk := peer.recv(1 << 16):
                total += len(chunk)
            received.append(total)

        reader = threading.Thread(target=read_to_the_end, name="reader")
        reader.start()
        clt.close()  # returns at once: what is owed is written in the background...
        start.set()
        poll.shutdown(timeout=2 * WAIT)  # ...and a shutdown right after still lets it out
        reader.join(WAIT)
        assert not reader.is_alive(), "the connection never ended"
        assert received == [taken * 1004]  # every COMPLETED frame, header included, then EOF


@pytest.mark.timeout(20)
def test_close_wakes_a_sender_waiting_for_room_at_once(timer, poll):
    # The close lingers to write what is owed (it stops only reading), which no socket event
    # announces to a thread waiting for room: the waiting sender must still notice at once.
    with non_reading_listener() as listener, ExitStack() as stack:
        clt = raw_client(listener, timer, poll, max_outbound=0)  # one frame owed, then waits
        stack.callback(clt.close)
        peer, _ = listener.accept()
        stack.enter_context(peer)
        for _ in range(10_000):  # the socket full and one frame owed: the next send must wait
            if clt.send(b"x" * 65536, timeout=0) is WOULD_BLOCK:
                break
        started = threading.Event()
        ended = []

        def send_and_wait() -> None:
            started.set()
            try:
                clt.send(b"x" * 65536)  # timeout=None: waits for room that never comes
            except links.LinksError as e:
                ended.append((time.monotonic(), e))

        sender = threading.Thread(target=send_and_wait, name="sender")
        sender.start()
        assert started.wait(WAIT)
        closed_at = time.monotonic()
        clt.close()
        sender.join(WAIT)
        assert not sender.is_alive()
        at, error = ended[0]
        assert isinstance(error, links.ClosedError)
        assert at - closed_at < PROMPT


@pytest.mark.timeout(20)
def test_a_close_delivers_what_is_owed_even_with_the_peers_bytes_left_unread(timer, poll):
    # Closing a socket with unread input makes the kernel reset the connection and throw away
    # what it had not sent yet: the bytes the peer sent us must not cost it what we owe it.
    with non_reading_listener() as listener, ExitStack() as stack:
        clt = raw_client(listener, timer, poll)
        stack.callback(clt.close)
        peer, _ = listener.accept()
        stack.enter_context(peer)
        peer.sendall(struct.pack("!I", 3) + b"hey")  # never read by the client
        taken = 0
        for _ in range(100_000):  # the socket full, then the backlog
            if clt.send(b"x" * 1000, timeout=0) is WOULD_BLOCK:
                break
            taken += 1
        clt.close()  # lingers: the poll thread writes what is owed, then releases the socket
        total = 0
        try:
            while chunk := peer.recv(1 << 16):
                total += len(chunk)
        except ConnectionResetError:
            pytest.fail(f"reset after {total} of {taken * 1004} bytes")
        assert total == taken * 1004


@pytest.mark.timeout(20)
def test_the_poll_thread_does_not_wait_for_a_write_lock_held_by_a_slow_hook(timer, poll):
    # A protocol's on_send runs under its connection's write lock. While one sender is held
    # there, the poll thread, finishing that connection's owed bytes, must not wait for the
    # lock: every other connection on the poll thread is served meanwhile.
    in_hook, release = threading.Event(), threading.Event()
    SlowStamp = slow_stamp(in_hook, release)

    with non_reading_listener() as listener, ExitStack() as stack:
        stack.callback(release.set)
        svc = stack.enter_context(links.Svc.bind("127.0.0.1:0", protocol=EchoServer(REPLIES["default_timeout"]).protocol,
                                                 timer=timer, poll_handler=poll))  # fmt: skip
        svc.into_sender_with_spawned_recver()
        healthy = stack.enter_context(links.Clt.connect(target(svc.local_addr), protocol=Json, timer=timer, timeout=WAIT))
        slow = stack.enter_context(links.Clt.connect(
            target(listener.getsockname()), protocol=SlowStamp, timer=timer, poll_handler=poll, timeout=WAIT,
            max_outbound=1 << 30,  # the next frame is taken (and stamped) behind the owed bytes
        ))  # fmt: skip
        peer, _ = listener.accept()
        stack.enter_context(peer)
        big = b"x" * more_than_the_kernel_takes()
        assert slow.send(big, timeout=0) is COMPLETED  # partly written: the rest is owed
        stuck = threading.Thread(target=lambda: slow.send(b"slow", timeout=0), name="slow-hook", daemon=True)
        stuck.start()
        stack.callback(stuck.join, WAIT)
        assert in_hook.wait(WAIT)  # the write lock is held now
        drained = [0]

        def drain() -> None:  # the socket gets room: the poll thread wants to finish the owed bytes
            peer.settimeout(WAIT)
            with suppress(OSError):
                while chunk := peer.recv(1 << 16):
                    drained[0] += len(chunk)

        reader = threading.Thread(target=drain, name="drain", daemon=True)
        reader.start()
        stack.callback(reader.join, WAIT)
        stack.callback(peer.shutdown, socket.SHUT_RDWR)  # first: ends the drain
        i = 0
        deadline = time.monotonic() + WAIT
        while drained[0] < len(big) // 2 and time.monotonic() < deadline:  # well past a writable event
            assert healthy.send({"rt": i}) is COMPLETED
            assert healthy.recv(timeout=2.0) == {"rt": i}, f"round trip {i}: the poll thread was held up"
            i += 1
        assert drained[0] >= len(big) // 2, "the owed bytes never moved"
        release.set()


@pytest.mark.timeout(20)
def test_a_connection_read_on_a_user_thread_is_never_read_by_the_poll_thread(timer, poll):
    # It owes bytes, so the poll thread watches its socket for room; a hang-up reported there
    # (with the write lock busy, so the writer gives up its turn) must not make the poll thread
    # read it: the message is the user's recv's, not the callback's on the poll thread.
    in_hook, release = threading.Event(), threading.Event()
    on_poll_thread = []
    SlowStamp = slow_stamp(in_hook, release)

    class Where(links.Callback):
        def on_recv(self, con_id, msg):
            on_poll_thread.append(threading.current_thread().name == poll.name)

    a, b = socket.socketpair()
    with ExitStack() as stack:
        stack.enter_context(b)
        stack.callback(release.set)
        clt = stack.enter_context(links.Clt.from_socket(
            a, links.Role.INITIATOR, protocol=SlowStamp, callback=Where(), poll_handler=poll, timer=timer,
            max_outbound=1 << 30,
        ))  # fmt: skip
        assert clt.send(b"x" * more_than_the_kernel_takes(), timeout=0) is COMPLETED  # owed: watched for room
        stuck = threading.Thread(target=lambda: clt.send(b"slow", timeout=0), name="slow-hook", daemon=True)
        stuck.start()
        stack.callback(stuck.join, WAIT)
        assert in_hook.wait(WAIT)  # the write lock is held now
        b.sendall(struct.pack("!I", 5) + b"hello")  # for the user's recv
        b.shutdown(socket.SHUT_RDWR)  # a hang-up on the watched socket
        assert poll.sync() and poll.sync()  # the poll thread has seen it since
        release.set()
        assert clt.recv(timeout=WAIT) == b"hello"
        assert on_poll_thread == [False]  # dispatched once, on this thread


@pytest.mark.parametrize("gathered", [True, False], ids=["sendmsg", "joined"])
def test_parts_written_in_one_call_are_owed_from_where_the_socket_stopped(gathered):
    # A layer's frames as pieces (links.mux: headers and views of the writers' buffers): what
    # the socket does not take, from the middle of any piece on, is owed and written in order.
    from links._outbound import Outbound
    from links._transport import Transport

    a, b = socket.socketpair()
    with a, b:
        a.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
        class Joined(Transport):  # as a layer that takes one buffer at a time (TLS)
            __slots__ = ()

            def send_parts(self, parts):
                return self.send_some(b"".join(parts))

        transport = Transport(a) if gathered else Joined(a)
        lock = threading.Lock()
        class Owner:  # the poll thread's part, done here by the loop below
            def watch_writable(self):
                pass

            def unwatch(self):
                pass

        out = Outbound(transport, lock=lock, clock=time.monotonic, owner=Owner())
        pieces = [bytes([i % 251]) * (1000 + 7919 * i % 50_000) for i in range(40)]
        parts = [p if i % 2 else memoryview(p) for i, p in enumerate(pieces)]
        with lock:
            out.take_parts(parts)
            assert out.backlog  # far more than the socket buffers: the rest is owed
            out.take_parts([b"tail"])  # after what is owed, never before it
        expected = b"".join(pieces) + b"tail"
        got = bytearray()
        deadline = time.monotonic() + WAIT
        while len(got) < len(expected) and time.monotonic() < deadline:
            with lock:
                out.flush()
            with suppress(BlockingIOError):
                got += b.recv(1 << 16, socket.MSG_DONTWAIT)
        assert bytes(got) == expected
        with lock:
            assert out.flush() and out.owed_bytes == 0


def test_deferred_frames_wait_for_the_next_flush_and_go_out_in_order_in_few_writes():
    # Connection.send_later's part: frames owed without a write of their own; the next flush
    # writes them all, gathered, behind what was owed before; a full backlog refuses more.
    from links._outbound import Outbound
    from links._transport import Transport

    a, b = socket.socketpair()
    with a, b:
        writes = []

        class Counting(Transport):
            __slots__ = ()

            def send_some(self, data):
                writes.append(1)
                return super().send_some(data)

            def send_parts(self, parts):
                writes.append(len(parts))
                return super().send_parts(parts)

        class Owner:
            def watch_writable(self):
                pass

            def unwatch(self):
                pass

        lock = threading.Lock()
        out = Outbound(Counting(a), lock=lock, clock=time.monotonic, owner=Owner(), max_outbound=1000)
        frames = [b"%03d" % i for i in range(300)]
        with lock:
            taken = [out.defer(f) for f in frames]
            assert writes == []  # nothing written yet
            assert out.needs_watch() and not out.needs_watch()  # one watch per backlog
            assert out.flush() and out.owed_bytes == 0
        assert taken == [True] * 300  # 900 bytes: under max_outbound all along
        assert len(writes) <= 2  # 256 gathered, then the rest
        with lock:
            assert all(out.defer(b"x" * 100) for _ in range(10))
            assert not out.defer(b"refused")  # at max_outbound: not taken
            assert out.flush()
        expected = b"".join(frames) + b"x" * 1000
        b.settimeout(WAIT)
        got = bytearray()
        while len(got) < len(expected):
            got += b.recv(1 << 16)
        assert bytes(got) == expected
