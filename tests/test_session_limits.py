"""Sessions keep the application's frame limits and never number what they cannot send.

* A HELLO is read with a limit fit for a HELLO: a peer that declares a huge first frame is
  refused at once, costing the server a few hundred bytes, not megabytes.
* After the HELLO, the application's ``max_frame_size`` (plus the session's header) bounds
  every frame a peer sends.
* ``send`` of a message over the application's limit raises ``FrameTooLarge`` and numbers
  nothing: it never enters the replay buffer, so it cannot be replayed as poison.
* A batch that fails half-way (a message that cannot be serialized) numbers nothing: the
  next send goes out with the next number, and the server sees no gap.
"""

from __future__ import annotations

import socket
import struct
import threading
from contextlib import ExitStack

import pytest
from helpers import Json, PollPasses, watch_logs

import links
from links.session import Resumable
from links.session import _wire as wire

WAIT = 5.0
LIMIT = 1 << 16  # helpers.Json's max_frame_size


@pytest.fixture
def service(poll, timer):
    store = links.StoreCallback()
    with links.Svc.bind(
        "127.0.0.1:0", protocol=Json, callback=store, poll_handler=poll, timer=timer, session=Resumable(),
    ) as svc:  # fmt: skip
        svc.into_sender_with_spawned_recver()
        yield svc, store


def client(svc, poll, timer) -> links.Clt:
    return links.Clt.connect(
        f"127.0.0.1:{svc.local_addr[1]}", protocol=Json, poll_handler=poll, timer=timer, timeout=WAIT, session=Resumable(),
    )  # fmt: skip


def raw_hello(sock: socket.socket) -> None:
    sock.sendall(wire.encode_hello(wire.NO_KEY, 0))
    frame = sock.recv(4096)  # WELCOME (and nothing else yet)
    assert frame and isinstance(wire.decode(memoryview(frame)), wire.Welcome)


@pytest.mark.timeout(20)
def test_a_huge_declared_hello_is_refused_at_once(service):
    svc, _ = service
    with watch_logs() as logs, socket.create_connection(svc.local_addr, timeout=WAIT) as peer:
        peer.sendall(struct.pack("!I", 8 << 20) + b"\x01" * 1000)  # "an 8 MiB HELLO follows"
        assert logs.wait("frame.too_large")
        peer.settimeout(WAIT)
        assert peer.recv(1) == b""  # closed, not kept waiting for 16 MiB
        assert svc.gate.in_use == 0


@pytest.mark.timeout(20)
def test_after_the_hello_the_applications_limit_bounds_every_frame(service):
    svc, _ = service
    with watch_logs() as logs, socket.create_connection(svc.local_addr, timeout=WAIT) as peer:
        raw_hello(peer)
        # A DATA frame declaring far more than the application's 64 KiB: refused on its header.
        peer.sendall(struct.pack("!IBQQ", 1 + 16 + 10 * LIMIT, 4, 1, 0))
        event = logs.wait("frame.too_large")
        assert event is not None and event["max_frame_size"] < 2 * LIMIT
        peer.settimeout(WAIT)
        assert peer.recv(1) == b""


@pytest.mark.timeout(20)
def test_a_message_over_the_limit_raises_and_is_never_numbered(service, poll, timer):
    svc, store = service
    with client(svc, poll, timer) as clt:
        with pytest.raises(links.FrameTooLarge):
            clt.send({"big": "x" * (2 * LIMIT)})
        assert clt.send({"after": 1}) is links.SendStatus.COMPLETED
        assert store.find_recv(lambda m: m == {"after": 1}, WAIT) is not None
        assert not any("big" in m for m in store.recv_msgs() if isinstance(m, dict))


@pytest.mark.timeout(20)
def test_a_batch_that_fails_half_way_numbers_nothing(service, poll, timer):
    svc, store = service
    with watch_logs() as logs, client(svc, poll, timer) as clt:
        with pytest.raises(TypeError):
            clt.send_many([{"ok": 1}, {"bad": object()}])
        assert clt.send({"next": 2}) is links.SendStatus.COMPLETED
        assert store.find_recv(lambda m: m == {"next": 2}, WAIT) is not None
        assert not logs.matching("session.protocol_error")
        assert {"ok": 1} not in store.recv_msgs()  # all or nothing


@pytest.mark.timeout(20)
def test_a_resume_whose_first_write_fails_still_expires(poll, timer):
    # Issue 15, item 5: the resuming client is gone before WELCOME and the replay are written;
    # the session must go back to detached (and so expire), not stay attached with no socket.
    from links.session import _accept

    with watch_logs() as logs, links.Svc.bind(
        "127.0.0.1:0", protocol=Json, timer=timer, poll_handler=poll, session=Resumable(detached_ttl=0.2),
    ) as svc:  # fmt: skip
        accepted: list = []
        acceptor = threading.Thread(target=lambda: accepted.append(svc.accept(timeout=WAIT)), name="accept")
        acceptor.start()
        clt = client(svc, poll, timer)
        acceptor.join(WAIT)
        server = accepted[0]
        key = clt._con.session.engine.key
        clt.close()
        ours, theirs = socket.socketpair()
        theirs.close()  # the resuming client reset right after its HELLO
        permit = svc.gate.try_acquire()
        _accept.admit(svc, ours, permit, ("127.0.0.1", 1), wire.encode_hello(key, 0), b"")
        assert logs.wait("session.expired") is not None  # within the log watch's timeout
        assert server._con.state.value == "closed"
        assert svc.gate.in_use == 0


def hello_then_reset(addr) -> None:
    """A peer that starts a session (HELLO, WELCOME) and resets: its session is left detached."""
    with socket.create_connection(addr, timeout=WAIT) as peer:
        raw_hello(peer)
        peer.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))  # RST on close


@pytest.mark.timeout(30)
def test_detached_sessions_are_bounded_and_sends_go_to_the_live_client(poll, timer):
    # Issue 15, item 1: HELLO-then-RST peers leave sessions detached; they count against
    # max_sessions (the oldest detached one is evicted), and round-robin sends reach the live client.
    store = links.StoreCallback()
    with watch_logs() as logs, links.Svc.bind(
        "127.0.0.1:0", protocol=Json, poll_handler=poll, timer=timer, max_connections=8,
        session=Resumable(max_sessions=4),
    ) as svc:  # fmt: skip
        sender = svc.into_sender_with_spawned_recver()
        for _ in range(20):
            hello_then_reset(svc.local_addr)
        assert logs.wait("session.detached", 20) is not None
        assert len(svc.registry.sessions) <= 4
        assert logs.wait("session.evicted", 16) is not None
        live = links.Clt.connect(
            f"127.0.0.1:{svc.local_addr[1]}", protocol=Json, callback=store, poll_handler=poll, timer=timer,
            timeout=WAIT, session=Resumable(),
        )  # fmt: skip
        with live.into_sender_with_spawned_recver():
            poll.sync()
            for i in range(10):
                assert sender.send({"n": i}) is links.SendStatus.COMPLETED
            assert store.wait_recv_count(10, WAIT)
            assert [m["n"] for m in store.recv_msgs()] == list(range(10))  # none went to a dead session
        assert len(svc.registry.sessions) <= 4


@pytest.mark.timeout(30)
def test_unauthenticated_peers_cost_the_server_little_memory(service):
    # Issue 15, item 2: peers that declare a huge HELLO and send megabytes of it once grew the
    # server by what they sent (up to 16 MiB each). Now the header alone is refused.
    psutil = pytest.importorskip("psutil")
    svc, _ = service
    process = psutil.Process()
    before = process.memory_info().rss
    chunk = b"\x01" * (2 << 20)
    with watch_logs() as logs, ExitStack() as peers:
        for _ in range(8):  # all held open while the memory is measured
            peer = peers.enter_context(socket.create_connection(svc.local_addr, timeout=WAIT))
            try:
                peer.sendall(struct.pack("!I", 8 << 20) + chunk)  # 2 MiB of an "8 MiB HELLO"
            except OSError:
                pass  # refused and closed on its header, mid-send
        svc.poll_or_default().sync()  # the poll thread has read what it was going to
        grown = process.memory_info().rss - before
        assert grown < 4 << 20, f"8 unauthenticated peers grew the server by {grown / 2**20:.1f} MiB"
        assert logs.wait("frame.too_large", 8) is not None


@pytest.mark.timeout(20)
def test_a_hello_and_frames_trickled_a_byte_per_write_are_read_as_they_come(poll, timer):
    # Before its HELLO is whole (the handshake reader) and after (the connection's reader), a
    # frame cut anywhere waits for the rest: the poll thread reads each byte as it comes and
    # does not look again in between (a spin would make thousands of passes).
    passes = PollPasses(poll, WAIT)

    def trickle(sock: socket.socket, data: bytes) -> int:
        """``data`` a byte per write, each read by the poll thread before the next; its passes."""
        before = passes.count
        for i in range(len(data)):
            seen = passes.count
            sock.sendall(data[i : i + 1])
            passes.after(seen)
        return passes.count - before

    store = links.StoreCallback()
    with links.Svc.bind(
        "127.0.0.1:0", protocol=Json, callback=store, poll_handler=poll, timer=timer, session=Resumable(),
    ) as svc:  # fmt: skip
        svc.into_sender_with_spawned_recver()
        with socket.create_connection(svc.local_addr, timeout=WAIT) as peer:
            peer.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            hello = wire.encode_hello(wire.NO_KEY, 0)
            assert trickle(peer, hello) <= 4 * len(hello) + 20
            frame = peer.recv(4096)  # WELCOME
            assert frame and isinstance(wire.decode(memoryview(frame)), wire.Welcome)
            data = wire.encode_data(1, 0, b'{"n":1}')
            assert trickle(peer, data) <= 4 * len(data) + 20
            assert store.wait_recv_count(1, WAIT)
            data = wire.encode_data(2, 0, b'{"n":2}')
            peer.sendall(data[:5])  # half a header, then nothing for a while
            assert passes.while_idle(poll) <= 80
            peer.sendall(data[5:])
            assert store.wait_recv_count(2, WAIT)
            assert [r.msg for r in store.records] == [{"n": 1}, {"n": 2}]
