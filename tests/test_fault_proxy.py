"""``FaultProxy`` over real loopback sockets: clean forwarding, then each fault and its counter."""

from __future__ import annotations

import os
import queue
import select
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import psutil
import pytest

import links
from links.testing import FaultProxy

WAIT = 5.0  # upper bound for anything that should happen promptly; never reached when all is well


class EchoServer:
    """A blocking echo server: one accept thread and one thread per connection.

    Each connection reports how it ended on ``endings``: ``("eof" | "reset", bytes received)``.
    On EOF it half-closes its side too, as a well-behaved server would.
    """

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.addr = self.sock.getsockname()[:2]
        self.endings: queue.Queue[tuple[str, int]] = queue.Queue()
        self._conns: list[socket.socket] = []
        self._threads: list[threading.Thread] = []
        self._stopping = False
        self._acceptor = threading.Thread(target=self._accept_loop, name="echo-accept")
        self._acceptor.start()

    def _accept_loop(self) -> None:
        while True:
            conn, _ = self.sock.accept()
            if self._stopping:
                conn.close()
                return
            self._conns.append(conn)
            thread = threading.Thread(target=self._echo, args=(conn,), name="echo-conn")
            self._threads.append(thread)
            thread.start()

    def _echo(self, conn: socket.socket) -> None:
        received, ending = 0, "eof"
        try:
            while data := conn.recv(1 << 16):
                received += len(data)
                conn.sendall(data)
            conn.shutdown(socket.SHUT_WR)
        except ConnectionError:
            ending = "reset"
        except OSError:
            ending = "error"
        self.endings.put((ending, received))

    def stop(self) -> None:
        self._stopping = True
        socket.create_connection(self.addr).close()  # wakes the blocking accept()
        self._acceptor.join(WAIT)
        self.sock.close()
        for conn in self._conns:
            try:
                conn.shutdown(socket.SHUT_RDWR)  # wakes a thread blocked in recv or sendall
            except OSError:
                pass
        for thread in self._threads:
            thread.join(WAIT)
        for conn in self._conns:
            conn.close()


@pytest.fixture
def echo():
    server = EchoServer()
    yield server
    server.stop()


@pytest.fixture
def proxy(echo):
    with FaultProxy(echo.addr) as p:
        yield p


def dial(proxy: FaultProxy) -> socket.socket:
    return socket.create_connection(proxy.addr, timeout=WAIT)


def recv_exactly(sock: socket.socket, n: int) -> bytes:
    """Up to ``n`` bytes, fewer only if the peer closed first."""
    buf = bytearray()
    while len(buf) < n:
        data = sock.recv(n - len(buf))
        if not data:
            break
        buf += data
    return bytes(buf)


def round_trip(sock: socket.socket, data: bytes = b"hello") -> bytes:
    sock.sendall(data)
    return recv_exactly(sock, len(data))


# -- forwarding without faults ---------------------------------------------------------------


def test_forwards_bytes_unchanged_both_ways(proxy):
    data = os.urandom(1 << 20)
    with dial(proxy) as clt:
        assert round_trip(clt) == b"hello"
        with ThreadPoolExecutor(1) as pool:  # send while reading, or both sides' buffers fill
            sending = pool.submit(clt.sendall, data)
            assert recv_exactly(clt, len(data)) == data
            sending.result(WAIT)
    stats = proxy.stats()
    assert (stats.accepted, stats.bytes_c2s, stats.bytes_s2c) == (1, 5 + len(data), 5 + len(data))
    assert (stats.fin_cuts, stats.rst_cuts, stats.after_cuts, stats.refused) == (0, 0, 0, 0)


def test_client_close_is_passed_on_as_fin(proxy, echo):
    with dial(proxy) as clt:
        assert round_trip(clt) == b"hello"
        clt.shutdown(socket.SHUT_WR)
        assert echo.endings.get(timeout=WAIT) == ("eof", 5)
        assert clt.recv(1) == b""  # the server's FIN came back through the proxy


def test_chunk_size_one_still_delivers_everything_in_order(proxy):
    data = os.urandom(4000)
    proxy.chunk_size(1)
    with dial(proxy) as clt:
        assert round_trip(clt, data) == data
        assert proxy.stats().sends == 2 * len(data)  # one send per byte, each way
        proxy.chunk_size(None)
        assert round_trip(clt) == b"hello"
    assert proxy.stats().bytes_s2c == len(data) + 5


def test_a_server_that_stops_reading_stalls_the_client():
    """Back-pressure: the proxy stops reading a side it cannot forward, so the sender blocks
    once the kernel buffers are full, instead of the proxy buffering without limit."""
    limit = 256 << 20  # far beyond what loopback socket buffers can hold
    with socket.create_server(("127.0.0.1", 0)) as deaf, FaultProxy(deaf.getsockname()[:2]) as proxy:
        with dial(proxy) as clt:
            clt.setblocking(False)
            chunk, total = bytes(1 << 16), 0
            while total < limit:
                try:
                    total += clt.send(chunk)
                except BlockingIOError:
                    _, writable, _ = select.select([], [clt], [], 0.5)
                    if not writable:
                        break  # stalled for half a second: the back-pressure reached us
        assert total < limit
        assert proxy.stats().bytes_c2s < total  # the rest waits in buffers, bounded


# -- faults ----------------------------------------------------------------------------------


def test_pause_holds_bytes_and_resume_delivers_them(proxy):
    with dial(proxy) as clt:
        assert round_trip(clt) == b"hello"
        proxy.pause()
        before = proxy.stats()
        clt.sendall(b"queued")
        clt.settimeout(0.2)
        with pytest.raises(TimeoutError):
            clt.recv(1)
        assert proxy.stats().bytes_c2s == before.bytes_c2s  # nothing reached the server either
        proxy.resume()
        clt.settimeout(WAIT)
        assert recv_exactly(clt, 6) == b"queued"
    assert proxy.stats().open_pairs in (0, 1)  # the pair may still be closing


def test_delay_holds_each_chunk(proxy):
    delay = 0.15
    with dial(proxy) as clt:
        assert round_trip(clt) == b"hello"  # the pair is up before timing starts
        proxy.delay(delay)
        start = time.monotonic()
        assert round_trip(clt, b"late") == b"late"
        elapsed = time.monotonic() - start
    assert elapsed >= 2 * delay * 0.9  # held once each way; no upper bound on purpose


def test_drop_makes_both_ends_see_eof(proxy, echo):
    with dial(proxy) as clt:
        assert round_trip(clt) == b"hello"
        assert proxy.drop() == 1
        assert clt.recv(1) == b""
        assert echo.endings.get(timeout=WAIT) == ("eof", 5)
    stats = proxy.stats()
    assert (stats.fin_cuts, stats.rst_cuts, stats.open_pairs) == (1, 0, 0)


def test_drop_sends_fin_even_with_unread_bytes(proxy, echo):
    """Closing a socket with unread bytes sends RST; a FIN drop must drain them instead."""
    with dial(proxy) as clt:
        assert round_trip(clt) == b"hello"
        proxy.pause()
        clt.sendall(b"unread")  # sits in the proxy's receive buffer
        assert proxy.drop(how="fin") == 1
        assert clt.recv(1) == b""
        assert echo.endings.get(timeout=WAIT) == ("eof", 5)


def test_reset_makes_both_ends_see_a_reset(proxy, echo):
    with dial(proxy) as clt:
        assert round_trip(clt) == b"hello"
        assert proxy.reset() == 1
        with pytest.raises(ConnectionResetError):
            clt.recv(1)
        assert echo.endings.get(timeout=WAIT) == ("reset", 5)
    stats = proxy.stats()
    assert (stats.fin_cuts, stats.rst_cuts, stats.open_pairs) == (0, 1, 0)


def test_cut_after_counts_both_directions_then_fins(proxy, echo):
    with dial(proxy) as clt:
        assert round_trip(clt) == b"hello"
        assert proxy.cut_after(8, how="fin") == 1
        clt.sendall(b"12345")  # 5 bytes reach the server, 3 of its 5-byte echo come back
        assert recv_exactly(clt, 5) == b"123"  # short: EOF after exactly 3 bytes
        assert echo.endings.get(timeout=WAIT) == ("eof", 10)
    stats = proxy.stats()
    assert (stats.after_cuts, stats.bytes_c2s, stats.bytes_s2c) == (1, 10, 8)


def test_cut_after_mid_frame_resets_after_exactly_n_bytes(proxy, echo):
    with dial(proxy) as clt:
        assert round_trip(clt) == b"hello"
        proxy.cut_after(10, how="rst", direction="c2s")
        clt.sendall(bytes(100))
        with pytest.raises(ConnectionResetError):
            clt.recv(1)
        assert echo.endings.get(timeout=WAIT) == ("reset", 5 + 10)
    assert proxy.stats().after_cuts == 1


def test_cut_after_with_no_connection_arms_the_next_one(proxy, echo):
    assert proxy.cut_after(3, how="fin", direction="s2c") == 0
    with dial(proxy) as clt:
        clt.sendall(b"hello")
        assert recv_exactly(clt, 5) == b"hel"
    with dial(proxy) as clt:  # one-shot: the next connection is not cut
        assert round_trip(clt) == b"hello"
    assert proxy.stats().after_cuts == 1


def test_refuse_resets_new_connections_and_spares_open_ones(proxy):
    with dial(proxy) as old:
        assert round_trip(old) == b"hello"
        proxy.refuse(True)
        with pytest.raises(ConnectionResetError):  # from connect() or the first recv(), by timing
            with dial(proxy) as new:
                new.recv(1)
        assert round_trip(old, b"still") == b"still"
        proxy.refuse(False)
        with dial(proxy) as again:
            assert round_trip(again) == b"hello"
    stats = proxy.stats()
    assert (stats.accepted, stats.refused) == (2, 1)


def test_failed_upstream_connect_resets_the_client():
    with socket.socket() as nobody:  # bound, never listening: connects to it are refused
        nobody.bind(("127.0.0.1", 0))
        with FaultProxy(nobody.getsockname()) as proxy:
            with pytest.raises(ConnectionResetError):  # from connect() or the first recv(), by timing
                with dial(proxy) as clt:
                    clt.recv(1)
            stats = proxy.stats()
    assert (stats.accepted, stats.upstream_failed, stats.open_pairs) == (1, 1, 0)


def test_heal_clears_every_fault(proxy):
    with dial(proxy) as clt:
        assert round_trip(clt) == b"hello"
        proxy.pause()
        proxy.delay(30.0)
        proxy.chunk_size(1)
        proxy.refuse(True)
        assert proxy.cut_after(0) == 1  # armed, but a paused pair forwards nothing, so it waits
        proxy.heal()
        assert round_trip(clt, b"again") == b"again"  # not paused, not held 30 s, not cut
        with dial(proxy) as new:  # not refused
            assert round_trip(new) == b"hello"
    assert proxy.stats().after_cuts == 0


def test_bad_arguments_are_rejected(proxy):
    with pytest.raises(ValueError):
        proxy.drop(how="slow")
    with pytest.raises(ValueError):
        proxy.cut_after(1, direction="up")
    with pytest.raises(ValueError):
        proxy.delay(-1)
    with pytest.raises(ValueError):
        proxy.chunk_size(0)


# -- lifecycle -------------------------------------------------------------------------------


def test_close_releases_every_fd_and_the_thread():
    process = psutil.Process()
    baseline = process.num_fds()
    echo = EchoServer()
    proxy = FaultProxy(echo.addr)
    clt = dial(proxy)
    assert round_trip(clt) == b"hello"
    proxy.delay(10.0)
    clt.sendall(b"held")  # a chunk waiting on the delay timer
    dial(proxy).close()
    proxy.close()
    proxy.close()  # idempotent
    assert not [t for t in threading.enumerate() if t.name == "fault-proxy"]
    with pytest.raises(links.ClosedError):
        proxy.pause()
    assert proxy.stats().accepted == 2  # still readable after close
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(proxy.addr, timeout=WAIT)
    clt.close()
    echo.stop()
    assert process.num_fds() == baseline


# -- through links ---------------------------------------------------------------------------


class Raw(links.Protocol):
    framer = links.LengthPrefixFramer(header_size=4, max_frame_size=1 << 16)
    messenger = links.RawMessenger()


def test_links_clt_sees_broken_error_on_reset(poll, timer):
    store = links.StoreCallback()
    with links.Svc.bind("127.0.0.1:0", protocol=Raw, callback=store, poll_handler=poll, timer=timer) as svc:
        sender = svc.into_sender_with_spawned_recver()
        with FaultProxy(svc.local_addr) as proxy:
            addr = f"{proxy.addr[0]}:{proxy.addr[1]}"
            with links.Clt.connect(addr, protocol=Raw, poll_handler=poll, timer=timer, timeout=WAIT) as clt:
                assert clt.send(b"ping") is links.SendStatus.COMPLETED
                assert store.find_recv(lambda m: m == b"ping", timeout=WAIT) == b"ping"
                assert sender.send(b"pong", timeout=WAIT) is links.SendStatus.COMPLETED
                assert clt.recv(timeout=WAIT) == b"pong"
                assert proxy.reset() == 1
                with pytest.raises(links.BrokenError):
                    clt.recv(timeout=WAIT)
            assert proxy.stats().rst_cuts == 1
