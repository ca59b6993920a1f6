"""``Clt`` and its halves over real loopback sockets: sending, receiving, closing, errors,
protocol hooks under every wrapper, splitting across threads, and heartbeats.

Most tests use a pair of user-thread ``Clt``s (a client and the server's ``accept()``ed end),
so nothing but the test thread touches the sockets unless the test spawns a receiver.
"""

from __future__ import annotations

import math
import select
import socket
import struct
import threading
import time
import traceback
from contextlib import ExitStack, contextmanager, suppress

import pytest
from helpers import Json

import links
from links._transport import Transport, _timeval, rcvtimeo

WAIT = 5.0  # generous bound for anything that should happen at once


class Raw(links.Protocol):
    framer = links.LengthPrefixFramer(header_size=2, max_frame_size=1 << 12)
    messenger = links.RawMessenger()


class Echo(Json):
    def send_reply(self, msg, con):
        con.send(msg)


def addr(svc: links.Svc) -> str:
    return f"127.0.0.1:{svc.local_addr[1]}"


@contextmanager
def pair(timer, protocol=Json, **connect_kw):
    """A connected (client, server) of user-thread ``Clt``s."""
    with links.Svc.bind("127.0.0.1:0", protocol=protocol, timer=timer) as svc:
        with links.Clt.connect(addr(svc), protocol=protocol, timer=timer, timeout=WAIT, **connect_kw) as client:
            server = svc.accept(timeout=WAIT)
            assert server is not None
            with server:
                yield client, server


@contextmanager
def raw_peer():
    """A plain listening socket, for peers that misbehave on purpose (never read, reset)."""
    listener = socket.socket()
    # A small receive window (inherited by accepted sockets) so a peer that never reads
    # fills up after a few kilobytes.
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    with listener:
        yield listener


@contextmanager
def reset_by_peer(timer, protocol, **connect):
    """A client of a ``raw_peer`` whose peer resets its connection at once (RST: a later write
    fails); yields ``(clt, listener)``, the listener for a redial to arrive at."""
    with raw_peer() as listener:
        target = "127.0.0.1:%d" % listener.getsockname()[1]
        with links.Clt.connect(target, protocol=protocol, timer=timer, timeout=WAIT, **connect) as clt:
            peer, _ = listener.accept()
            peer.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            peer.close()  # linger 0: an RST instead of a FIN
            yield clt, listener


def redialed(timer, listener):
    """The server side of the client's next connection to ``listener``, as a ``Clt``."""
    listener.settimeout(WAIT)
    sock, _ = listener.accept()
    return links.Clt.from_socket(sock, links.Role.ACCEPTOR, protocol=Json, timer=timer)


class SignalsNoRoom:
    """A real socket whose ``send`` sets ``blocked`` when the kernel had no room for it."""

    def __init__(self, sock, blocked: threading.Event) -> None:
        self._sock, self._blocked = sock, blocked

    def send(self, data, flags=0):
        try:
            return self._sock.send(data, flags)
        except BlockingIOError:
            self._blocked.set()
            raise

    def __getattr__(self, name):
        return getattr(self._sock, name)


def fill_send_buffers(clt) -> threading.Event:
    """Fill both kernel buffers of ``clt``'s connection with raw bytes (its peer never reads or
    parses them), so that every later write waits for room before its first byte. Returns an
    event set once a write found no room: its sender is then stuck, holding the write lock."""
    transport = clt._con.attachment.transport
    with suppress(BlockingIOError):
        while True:
            transport.sock.send(b"\0" * 65536, socket.MSG_DONTWAIT)
    blocked = threading.Event()
    transport.sock = SignalsNoRoom(transport.sock, blocked)
    return blocked


# -- send / recv ------------------------------------------------------------------------------


@pytest.mark.parametrize(("protocol", "msg"), [(Json, {"n": 1, "s": "é"}), (Raw, b"\x00raw\xff")], ids=["json", "raw"])
def test_round_trip_both_ways(timer, protocol, msg):
    with pair(timer, protocol) as (client, server):
        assert client.send(msg) is links.SendStatus.COMPLETED
        assert server.recv(timeout=WAIT) == msg
        assert server.send(msg) is links.SendStatus.COMPLETED
        assert client.recv(timeout=WAIT) == msg


def test_send_many_delivers_the_batch_in_order(timer):
    with pair(timer) as (client, server):
        assert client.send_many({"i": i} for i in range(200)) is links.SendStatus.COMPLETED
        assert [server.recv(timeout=WAIT) for _ in range(200)] == [{"i": i} for i in range(200)]


def test_recv_returns_none_only_when_the_timeout_expires(timer):
    with pair(timer) as (client, server):
        assert client.recv(timeout=0) is None
        started = time.monotonic()
        assert client.recv(timeout=0.1) is None
        assert time.monotonic() - started >= 0.1
        server.send({"late": True})
        assert client.recv(timeout=WAIT) == {"late": True}


@pytest.mark.parametrize(
    ("bad", "error"), [(math.nan, ValueError), (-1.0, ValueError), ("5", TypeError)], ids=["nan", "negative", "str"]
)
def test_a_timeout_that_is_not_seconds_is_refused_at_once_and_spoils_nothing(timer, bad, error):
    """nan compares false with everything: taken as a wait, it could hang for ever. A negative
    timeout is a slip in the caller's arithmetic, refused rather than taken as 0."""
    with links.Svc.bind("127.0.0.1:0", protocol=Json, timer=timer) as svc:
        with links.Clt.connect(addr(svc), protocol=Json, timer=timer, timeout=WAIT) as client:
            with pytest.raises(error, match="timeout"):
                svc.accept(timeout=bad)
            with pytest.raises(error, match="timeout"):
                links.Clt.connect(addr(svc), protocol=Json, timer=timer, timeout=bad)
            if error is ValueError:  # idle_timeout is checked for a positive number
                with pytest.raises(ValueError, match="idle_timeout"):
                    links.Clt.connect(addr(svc), protocol=Json, timer=timer, timeout=WAIT, idle_timeout=bad)
            server = svc.accept(timeout=WAIT)
            with server:
                waits = [
                    lambda: client.recv(bad),
                    lambda: client.send({"n": 1}, bad),
                    lambda: client.send_many([{"n": 1}], bad),
                    lambda: links.Ref(client).send({"n": 1}, bad),
                    lambda: svc.recv(bad),
                    lambda: svc.send({"n": 1}, bad),
                ]
                for wait in waits:
                    with pytest.raises(error, match="timeout"):
                        wait()
                assert client.send({"n": 2}) is links.SendStatus.COMPLETED
                assert server.recv(timeout=WAIT) == {"n": 2}  # nothing of the refused sends went out


def test_iteration_yields_messages_until_the_peer_closes(timer):
    with pair(timer) as (client, server):
        server.send_many([{"i": 0}, {"i": 1}, {"i": 2}])
        server.close()
        assert list(client) == [{"i": 0}, {"i": 1}, {"i": 2}]
        assert not client.is_connected()


def test_close_is_idempotent_and_ends_use(timer):
    with pair(timer) as (client, server):
        assert client.is_connected()
        client.close()
        client.close()
        assert not client.is_connected()
        with pytest.raises(links.ClosedError):
            client.send({"n": 1})
        with pytest.raises(links.ClosedError):
            client.recv(timeout=0)
        with pytest.raises(links.BrokenError):  # the peer saw the close
            server.recv(timeout=WAIT)


def test_context_manager_closes(timer):
    with links.Svc.bind("127.0.0.1:0", protocol=Json, timer=timer) as svc:
        with links.Clt.connect(addr(svc), protocol=Json, timer=timer, timeout=WAIT) as client:
            assert client.is_connected()
        assert not client.is_connected()
        server = svc.accept(timeout=WAIT)
        with server, pytest.raises(links.BrokenError):
            server.recv(timeout=WAIT)


def test_con_id_names_role_name_and_both_addresses(timer):
    with pair(timer, name="alice") as (client, server):
        port = server.con_id.local[1]
        client_port = server.con_id.peer[1]
        assert str(client.con_id) == f"Initiator(alice@127.0.0.1:{client_port}->127.0.0.1:{port})"
        assert str(server.con_id) == f"Acceptor(svc@127.0.0.1:{port}<-127.0.0.1:{client_port})"
        assert client.con_id.role is links.Role.INITIATOR and server.con_id.role is links.Role.ACCEPTOR


def test_connect_with_nobody_listening_times_out(timer):
    # A bound socket that never listens reserves a port that refuses every connection.
    with socket.socket() as reserved:
        reserved.bind(("127.0.0.1", 0))
        started = time.monotonic()
        with pytest.raises(links.ConnectTimeout) as info:
            links.Clt.connect(f"127.0.0.1:{reserved.getsockname()[1]}", protocol=Json, timer=timer, timeout=0.2)
        assert isinstance(info.value, TimeoutError)
        assert time.monotonic() - started < WAIT  # retried until its timeout, not forever


class OneByte(links.Protocol):
    """One-byte frames: the kernel takes all of one or nothing, so a frame is never half-sent
    (a half-sent frame makes the sender wait for the peer to read, and this peer never does)."""

    framer = links.FixedSizeFramer(1)
    messenger = links.RawMessenger()

    def __init__(self) -> None:
        self.would_block: list[bytes] = []

    def on_would_block(self, msg):
        self.would_block.append(msg)


def test_send_without_waiting_reports_would_block_when_the_peer_never_reads(timer):
    protocol = OneByte()
    with raw_peer() as listener:
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)  # fills after a few KB
        sock.connect(listener.getsockname())
        peer, _ = listener.accept()
        with peer, links.Clt.from_socket(sock, links.Role.INITIATOR, protocol=lambda: protocol, timer=timer) as clt:
            completed = 0
            while completed < 1_000_000:  # bound: far more than both buffers hold
                status = clt.send(b"x", timeout=0)
                if status is links.SendStatus.WOULD_BLOCK:
                    break
                completed += 1
            assert status is links.SendStatus.WOULD_BLOCK
            assert protocol.would_block == [b"x"]
            clt.close()
            # All or nothing: the peer gets exactly the frames reported COMPLETED.
            received = 0
            while chunk := peer.recv(65536):
                received += len(chunk)
            assert received == completed


def test_send_after_close_raises_closed_error(timer):
    with pair(timer) as (client, _server):
        client.close()
        with pytest.raises(links.ClosedError):
            client.send({"n": 1})
        with pytest.raises(links.ClosedError):
            client.send_many([{"n": 1}])


class ErrorsSeen(Json):
    """Records ``on_error``: what the send path tells the protocol before it raises."""

    def __init__(self) -> None:
        self.errors: list = []

    def on_error(self, msg, error):
        self.errors.append((msg, error))


# A send without a timeout takes the one-message fast path (Connection.send); with one, the
# general path. Both must fail alike.
SEND_TIMEOUTS = [None, WAIT]


@pytest.mark.parametrize("timeout", SEND_TIMEOUTS)
def test_send_after_peer_reset_raises_broken_error(timer, timeout):
    protocol = ErrorsSeen()
    with reset_by_peer(timer, lambda: protocol) as (clt, _):
        with pytest.raises(links.BrokenError) as raised:
            for _ in range(100):  # the first write after the RST arrives fails
                clt.send({"n": 1}, timeout)
        assert protocol.errors == [({"n": 1}, raised.value)]  # told once, with what was raised
        assert not clt.is_connected()
        with pytest.raises(links.BrokenError):  # and every later one
            clt.send({"n": 2}, timeout)


@pytest.mark.parametrize("peer_reads", [True, False])
def test_closing_while_threads_send_ends_every_sender_with_closed_error(timer, poll, peer_reads):
    """Four threads send on the one-message path while the connection is closed under them:
    to a peer that reads (the close lands between writes), or to one that never does (one
    sender is stuck in its write, holding the lock, and three wait for the lock)."""
    ends: list = []
    with ExitStack() as stack:
        if peer_reads:
            counter = links.CounterCallback()
            svc = stack.enter_context(links.Svc.bind("127.0.0.1:0", protocol=Raw, callback=counter, timer=timer,
                                                     poll_handler=poll))  # fmt: skip
            svc.into_sender_with_spawned_recver()
            target = addr(svc)
        else:
            listener = stack.enter_context(raw_peer())
            target = "127.0.0.1:%d" % listener.getsockname()[1]
        clt = stack.enter_context(links.Clt.connect(target, protocol=Raw, timer=timer, timeout=WAIT))
        if not peer_reads:
            stack.enter_context(listener.accept()[0])  # accepted, never read
            stuck = fill_send_buffers(clt)

        def send_until_closed():
            try:
                while True:
                    clt.send(b"m" * 100)  # no timeout: the one-message path
            except BaseException as e:
                ends.append(e)

        # Daemons: a sender stuck on a leaked lock must fail this test, not hang the run.
        threads = [threading.Thread(target=send_until_closed, daemon=True) for _ in range(4)]
        for thread in threads:
            thread.start()
        if peer_reads:
            assert counter.wait_recv(1000, WAIT)  # they are all well under way
        else:
            assert stuck.wait(WAIT)  # one of them is inside its write, holding the lock
        clt.close()
        for thread in threads:
            thread.join(WAIT)
        assert not any(thread.is_alive() for thread in threads)
        assert [type(e) for e in ends] == [links.ClosedError] * 4
        with pytest.raises(links.ClosedError):  # at once: the write lock was left free
            clt.send(b"after")


RECONNECT = links.Backoff(initial=0.01, maximum=0.05)


@pytest.mark.parametrize("timeout", SEND_TIMEOUTS)
def test_with_reconnect_a_send_whose_write_failed_is_written_on_the_next_connection(timer, timeout):
    made: list[ErrorsSeen] = []

    def factory():
        made.append(ErrorsSeen())
        return made[-1]

    with reset_by_peer(timer, factory, reconnect=RECONNECT) as (clt, listener):
        n = 0
        while len(made) == 1:  # until a send failed, and was written again after the redial
            assert n < 1000, "no write failed"
            assert clt.send({"n": n}, timeout) is links.SendStatus.COMPLETED
            n += 1
        failed = {"n": n - 1}
        assert [msg for msg, _ in made[0].errors] == [failed]  # told, on the old connection
        with redialed(timer, listener) as server:
            assert server.recv(timeout=WAIT) == failed  # written whole on the new one


def test_with_reconnect_a_batch_whose_write_failed_raises_and_is_not_written_again(timer):
    """Of a batch whose write failed some may have arrived: writing it again could duplicate
    them, so it raises, even with ``reconnect=``, and the next connection starts clean."""
    made: list[ErrorsSeen] = []

    def factory():
        made.append(ErrorsSeen())
        return made[-1]

    with reset_by_peer(timer, factory, reconnect=RECONNECT) as (clt, listener):
        with pytest.raises(links.BrokenError) as raised:
            for n in range(1000):  # the first write after the RST arrives fails
                clt.send_many([{"n": n, "i": 0}, {"n": n, "i": 1}], WAIT)
        failed = [msg for msg, _ in made[0].errors]
        assert failed == [{"n": n, "i": 0}, {"n": n, "i": 1}]  # told, both of them
        assert all(e is raised.value for _, e in made[0].errors)
        with redialed(timer, listener) as server:
            assert clt.send({"n": "next"}, WAIT) is links.SendStatus.COMPLETED
            assert server.recv(timeout=WAIT) == {"n": "next"}  # first: the batch was not rewritten


class KeepsItsHandles(ErrorsSeen):
    """Keeps the hook handle (``con``) of every connection it is given."""

    handles: list = []

    def on_connect(self, con):
        KeepsItsHandles.handles.append(con)


@pytest.mark.parametrize("timeout", SEND_TIMEOUTS)
def test_a_hook_send_whose_write_failed_raises_and_is_never_written_on_the_next_connection(timer, timeout):
    """Unlike the user's sender, a hook's ``con`` is one TCP connection: what failed on it, or
    is sent on it after it ended, must not go out on the redialed one."""
    KeepsItsHandles.handles = []
    with reset_by_peer(timer, KeepsItsHandles, reconnect=RECONNECT) as (clt, listener):
        [old] = KeepsItsHandles.handles
        with pytest.raises(links.BrokenError) as raised:
            for n in range(1000):
                old.send({"n": n}, timeout)
        assert [e for _, e in old.protocol.errors] == [raised.value]
        with redialed(timer, listener) as server:
            with pytest.raises(links.BrokenError):  # the old handle stays ended
                old.send({"n": "late"}, timeout)
            assert clt.send({"n": "next"}, WAIT) is links.SendStatus.COMPLETED
            assert server.recv(timeout=WAIT) == {"n": "next"}  # first: nothing came before it


class FailsAfterItsFirstWrite(Json):
    """``on_sent`` of the first message ends the connection and raises: a hook's error after
    a good write, not a failed write."""

    failed = False

    def on_connect(self, con):
        self.con = con

    def on_sent(self, msg):
        if not FailsAfterItsFirstWrite.failed:
            FailsAfterItsFirstWrite.failed = True
            self.con.drop("hook")
            raise links.BrokenError("the hook failed", "hook")


@pytest.mark.parametrize("timeout", SEND_TIMEOUTS)
def test_a_hook_error_after_a_good_write_is_raised_not_written_again(timer, poll, timeout):
    FailsAfterItsFirstWrite.failed = False
    store = links.StoreCallback()
    with links.Svc.bind("127.0.0.1:0", protocol=Json, callback=store, timer=timer, poll_handler=poll) as svc:
        svc.into_sender_with_spawned_recver()
        with links.Clt.connect(
            addr(svc), protocol=FailsAfterItsFirstWrite, timer=timer, timeout=WAIT, reconnect=RECONNECT
        ) as clt:
            with pytest.raises(links.BrokenError, match="the hook failed"):
                clt.send({"n": 1}, timeout)
            assert clt.send({"n": 2}, WAIT) is links.SendStatus.COMPLETED  # on the redialed connection
            assert store.find_recv(lambda m: m == {"n": 2}, WAIT)
            assert [m for m in store.recv_msgs() if "n" in m] == [{"n": 1}, {"n": 2}]  # {"n": 1} once


@pytest.mark.parametrize("timeout", SEND_TIMEOUTS)
def test_a_message_that_cannot_be_encoded_raises_and_spoils_nothing(timer, timeout):
    protocol = ErrorsSeen()
    with pair(timer, protocol=lambda: protocol) as (client, server):
        with pytest.raises(TypeError):
            client.send({"not json": {1, 2}}, timeout)
        [(msg, error)] = protocol.errors
        assert msg == {"not json": {1, 2}} and isinstance(error, TypeError)
        # Nothing of it reached the wire, and the connection carries on.
        assert client.send({"n": 1}, timeout) is links.SendStatus.COMPLETED
        assert server.recv(timeout=WAIT) == {"n": 1}
        assert client.is_connected()


def test_spawned_receiver_sees_the_peer_close_without_anyone_reading(timer, poll):
    gone = threading.Event()

    class Watched(Json):
        def on_disconnect(self, con_id):
            gone.set()

    with links.Svc.bind("127.0.0.1:0", protocol=Json, timer=timer) as svc:
        clt = links.Clt.connect(addr(svc), protocol=Watched, timer=timer, poll_handler=poll, timeout=WAIT)
        with clt.into_sender_with_spawned_recver() as sender:
            server = svc.accept(timeout=WAIT)
            assert sender.is_connected()
            server.close()
            assert gone.wait(WAIT)
            assert not sender.is_connected()
            with pytest.raises(links.BrokenError):
                sender.send({"n": 1})


# -- protocol hooks under every wrapper ---------------------------------------------------------


class Recorder(links.Callback):
    def __init__(self, log: list) -> None:
        self.log = log

    def on_recv(self, con_id, msg):
        self.log.append(("callback.recv", msg))

    def on_sent(self, con_id, msg):
        self.log.append(("callback.sent", msg))


def hooked(log: list, disconnected: threading.Event):
    """A protocol factory recording every hook into ``log``."""

    class Hooked(Json):
        seq = 0

        def on_connect(self, con):
            log.append(("connect", str(con.con_id)))

        def on_send(self, msg):
            self.seq += 1
            return {**msg, "seq": self.seq}  # a replacement: the peer must get this one

        def on_sent(self, msg):
            log.append(("sent", msg))

        def on_recv(self, msg):
            log.append(("on_recv", msg))

        def send_reply(self, msg, con):
            log.append(("reply", msg))
            if "ask" in msg:
                con.send({"answer": msg["ask"]})

        def on_disconnect(self, con_id):
            log.append(("disconnect", str(con_id)))
            disconnected.set()

    return Hooked


def take(clt: links.Clt, how: str):
    """Use ``clt`` through one wrapper: (send, recv or None when spawned, handles to close)."""
    if how == "unsplit":
        return clt.send, clt.recv, [clt]
    if how == "split":
        recver, sender = clt.split()
        return sender.send, recver.recv, [recver, sender]
    if how == "split_ref":
        recver, sender = clt.split_ref()
        clone = sender.clone()
        return clone.send, recver.recv, [sender, clone, recver]
    if how == "spawned":
        sender = clt.into_sender_with_spawned_recver()
        return sender.send, None, [sender]
    ref = clt.into_sender_with_spawned_recver_ref()
    return ref.send, None, [ref, ref.clone()]


WRAPPERS = ["unsplit", "split", "split_ref", "spawned", "spawned_ref"]


@pytest.mark.parametrize("close_order", ["first_to_last", "last_to_first"])
@pytest.mark.parametrize("how", WRAPPERS)
def test_hooks_run_under_every_wrapper(timer, poll, how, close_order):
    log: list = []
    disconnected = threading.Event()
    with links.Svc.bind("127.0.0.1:0", protocol=Json, timer=timer) as svc:
        clt = links.Clt.connect(
            addr(svc), protocol=hooked(log, disconnected), callback=Recorder(log), timer=timer, poll_handler=poll,
            timeout=WAIT,
        )  # fmt: skip
        send, recv, handles = take(clt, how)
        with svc.accept(timeout=WAIT) as server:
            assert log == [("connect", str(clt.con_id))]

            # on_send stamps; the peer, on_sent and the callback all see the stamped message.
            assert send({"n": 1}) is links.SendStatus.COMPLETED
            assert server.recv(timeout=WAIT) == {"n": 1, "seq": 1}
            assert log[1:] == [("sent", {"n": 1, "seq": 1}), ("callback.sent", {"n": 1, "seq": 1})]

            # on_recv, then the callback, then send_reply, which answers through the sender.
            server.send({"ask": 7})
            if recv is not None:
                assert recv(timeout=WAIT) == {"ask": 7}
            assert server.recv(timeout=WAIT) == {"answer": 7, "seq": 2}
            received = [entry for entry in log if entry[1] == {"ask": 7}]
            assert received == [("on_recv", {"ask": 7}), ("callback.recv", {"ask": 7}), ("reply", {"ask": 7})]

            if close_order == "last_to_first":
                handles.reverse()
            for handle in handles:
                handle.close()
            assert disconnected.wait(WAIT)
            for handle in handles:
                assert not handle.is_connected()
                handle.close()  # idempotent on every handle
            with pytest.raises(links.ClosedError):
                send({"n": 2})
            with pytest.raises(links.BrokenError):
                server.recv(timeout=WAIT)
        poll.sync()
        assert [entry for entry in log if entry[0] == "disconnect"] == [("disconnect", str(clt.con_id))]


def test_on_disconnect_runs_once_when_the_peer_closes_first(timer, poll):
    log: list = []
    disconnected = threading.Event()
    with links.Svc.bind("127.0.0.1:0", protocol=Json, timer=timer) as svc:
        protocol = hooked(log, disconnected)
        clt = links.Clt.connect(addr(svc), protocol=protocol, timer=timer, poll_handler=poll, timeout=WAIT)
        ref = clt.into_sender_with_spawned_recver_ref()
        svc.accept(timeout=WAIT).close()
        assert disconnected.wait(WAIT)
        ref.close()
        ref.clone().close()
        poll.sync()
        assert [entry[0] for entry in log].count("disconnect") == 1


# -- split across threads ------------------------------------------------------------------------


def test_split_halves_work_on_two_threads_and_the_clt_is_spent(timer, poll):
    n = 300
    with links.Svc.bind("127.0.0.1:0", protocol=Echo, timer=timer, poll_handler=poll) as svc:
        svc.into_sender_with_spawned_recver()
        with links.Clt.connect(addr(svc), protocol=Json, timer=timer, timeout=WAIT) as clt:
            recver, sender = clt.split()
            for spent in (lambda: clt.send({}), lambda: clt.recv(timeout=0), clt.split):
                with pytest.raises(links.ClosedError):
                    spent()
            got: list = []

            def read():
                for msg in recver:
                    got.append(msg)
                    if len(got) == n:
                        return

            def write():
                for i in range(n):
                    sender.send({"i": i})

            threads = [threading.Thread(target=read), threading.Thread(target=write)]
            for t in threads:
                t.start()
            for t in threads:
                t.join(WAIT)
            assert got == [{"i": i} for i in range(n)]


def test_two_threads_receiving_on_one_recver_get_busy_error(timer):
    inside = threading.Event()
    release = threading.Event()

    class Blocking(Json):
        def on_recv(self, msg):
            inside.set()  # thread A is now inside recv(); keep it there
            release.wait(WAIT)

    with pair(timer, Blocking) as (client, server):
        recver, _sender = client.split()
        result: list = []
        reader = threading.Thread(target=lambda: result.append(recver.recv(timeout=WAIT)))
        reader.start()
        server.send({"n": 1})
        assert inside.wait(WAIT)
        with pytest.raises(links.BusyError):
            recver.recv(timeout=0)
        release.set()
        reader.join(WAIT)
        assert result == [{"n": 1}]
        server.send({"n": 2})
        assert recver.recv(timeout=WAIT) == {"n": 2}  # usable again once the first caller left


# -- heartbeats ----------------------------------------------------------------------------------


class Beating(Json):
    heartbeat_interval = 0.02

    def send_heartbeat(self, con):
        con.send({"hb": True})


def test_heartbeats_reach_the_peer_and_stop_on_close(timer):
    with links.Svc.bind("127.0.0.1:0", protocol=Json, timer=timer) as svc:
        client = links.Clt.connect(addr(svc), protocol=Beating, timer=timer, timeout=WAIT)
        with client, svc.accept(timeout=WAIT) as server:
            for _ in range(3):
                assert server.recv(timeout=WAIT) == {"hb": True}
            client.close()
            # Cancelled at once, even if a beat was running at that moment (it is not rescheduled).
            assert timer.task_count == 0
            with pytest.raises(links.BrokenError):
                while True:  # beats already on the wire, then the end: no more beats
                    assert server.recv(timeout=WAIT) == {"hb": True}


def test_close_with_a_goodbye_is_not_held_up_by_a_sender_stuck_on_a_silent_peer():
    """on_close's goodbye must not wait for the write lock held by a sender blocked on a peer
    that stopped reading: the close goes on, and its shutdown frees that sender."""
    goodbyes = []

    class Polite(links.Protocol):
        framer = links.LengthPrefixFramer(4)

        def on_close(self, con):
            goodbyes.append(con.send(b"bye", timeout=0))

    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        # max_outbound=0: one frame may be owed, the next send waits for room.
        clt = links.Clt.connect(f"127.0.0.1:{listener.getsockname()[1]}", protocol=Polite, max_outbound=0)
        peer, _ = listener.accept()  # accepts, never reads
        with peer:
            # Full buffers: the first send below is owed whole, the second waits for room.
            stuck = fill_send_buffers(clt)
            blocked_sender_error = []

            def send_forever():
                try:
                    while True:
                        clt.send(b"y" * 65536)  # timeout=None: waits for room that never comes
                except links.LinksError as e:
                    blocked_sender_error.append(e)

            sender = threading.Thread(target=send_forever)
            sender.start()
            assert stuck.wait(5.0)  # the sender waits for room (outside the write lock)
            clt.close()  # must return (the test's timeout catches a hang)
            sender.join(5.0)
            assert not sender.is_alive()
            assert isinstance(blocked_sender_error[0], links.ClosedError)
            assert len(goodbyes) == 1


# -- the waiting read --------------------------------------------------------------------------


def test_a_socket_handed_in_with_a_receive_timeout_gets_links_own(timer):
    """links owns a handed-in socket's receive timeout (``Clt.from_socket``): a 20 ms
    ``SO_RCVTIMEO`` the socket came with is cleared by the first ``recv()`` without a timeout,
    so that recv cannot give up after 20 ms and take the connection down with it."""
    with links.Svc.bind("127.0.0.1:0", protocol=Json, timer=timer) as svc:
        sock = socket.create_connection(svc.local_addr, timeout=WAIT)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, struct.pack("ll", 0, 20_000))
        with links.Clt.from_socket(sock, links.Role.INITIATOR, protocol=Json, timer=timer) as clt:
            with svc.accept(timeout=WAIT) as server:
                server.send({"n": 1})
                assert clt.recv() == {"n": 1}
                assert struct.unpack("ll", sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, 16)) == (0, 0)
                assert sock.getblocking()  # and every call that must not wait passes MSG_DONTWAIT
                server.send({"n": 2})
                assert clt.recv() == {"n": 2}


def test_the_kernel_receive_timeout_is_never_longer_than_the_wait_and_at_most_1_percent_shorter():
    for timeout in [None, math.inf, 1e12]:
        assert rcvtimeo(timeout) == 0.0  # the kernel's "no timeout"
    assert rcvtimeo(0) == rcvtimeo(1e-9) == 1e-6  # the shortest there is
    for timeout in [2e-6, 3e-5, 0.001, 0.0999, 0.1, 1.0, 2.5, 29.99993, 30.0, 86_400.0]:
        assert timeout / 1.01 <= rcvtimeo(timeout) <= timeout * (1 + 1e-12)
    # Never "no timeout" for a wait that has one: (0, 0) is what the kernel reads as none.
    for i in range(2001):
        timeout = 1e-6 + i * 5e-10  # 1 to 2 µs, where rounding down could reach 0 µs
        assert struct.unpack("ll", _timeval(rcvtimeo(timeout))) != (0, 0)
    # A deadline's remaining time, a little less on every read, keeps the value already set.
    assert len({rcvtimeo(30.0 - i * 7e-5) for i in range(1000)}) == 1


class CountingSocket(socket.socket):
    """A real socket that counts the receive timeouts set on it."""

    rcvtimeo_sets = 0

    def setsockopt(self, level, option, value, *rest):
        if (level, option) == (socket.SOL_SOCKET, socket.SO_RCVTIMEO):
            self.rcvtimeo_sets += 1
        return super().setsockopt(level, option, value, *rest)


def test_waits_for_the_rest_of_a_deadline_set_the_kernel_timeout_once_not_per_read():
    """``recv(timeout)`` waits for what is left of its deadline: a slightly different number
    on every read, which must not cost a ``setsockopt`` each."""
    mine, peer = socket.socketpair()
    sock = CountingSocket(mine.family, mine.type, mine.proto, fileno=mine.detach())
    transport = Transport(sock)
    view = memoryview(bytearray(16))
    with peer:
        try:
            for i in range(50):
                peer.sendall(b"x")
                assert transport.recv_into_waiting(view, 30.0 - i * 7e-5) == 1
        finally:
            transport.close()
    assert sock.rcvtimeo_sets == 1  # it was one per read


def test_a_socket_set_nonblocking_behind_links_back_is_waited_on_not_spun_on():
    """A waiting read sleeps inside ``recv``; if someone switched the socket to nonblocking,
    that ``recv`` returns at once, and the read must then wait in ``poll``, not try again."""
    mine, peer = socket.socketpair()
    transport = Transport(mine)
    mine.setblocking(False)  # someone else's doing
    polling = threading.Event()

    class WatchedPoll:  # the transport's poll object, watched: is the reader waiting in it?
        def __init__(self) -> None:
            self.poller = select.poll()
            self.poller.register(mine, select.POLLIN)

        def poll(self, ms):
            polling.set()
            return self.poller.poll(ms)

    transport._rpoll = WatchedPoll()
    view, got = memoryview(bytearray(16)), []
    reader = threading.Thread(target=lambda: got.append(transport.recv_into_waiting(view, None)))
    with peer:
        try:
            reader.start()
            assert polling.wait(WAIT)  # it waits for the byte instead of returning to be called again
            peer.sendall(b"x")
            reader.join(WAIT)
            assert got == [0]  # woken: the caller reads again, and now there is a byte
            assert transport.recv_into_waiting(view, None) == 1
        finally:
            peer.sendall(b"end")  # a reader still waiting (a failed check) is let go
            reader.join(WAIT)
            transport.close()


def test_spawning_the_receiver_while_a_thread_is_inside_recv_is_refused(timer, poll):
    inside, release = threading.Event(), threading.Event()

    class Holding(Json):
        def on_recv(self, msg):
            inside.set()  # recv() is dispatching this message now
            release.wait(WAIT)

    with links.Svc.bind("127.0.0.1:0", protocol=Json, timer=timer) as svc:
        with links.Clt.connect(addr(svc), protocol=Holding, timer=timer, poll_handler=poll, timeout=WAIT) as clt:
            with svc.accept(timeout=WAIT) as server:
                got = []
                reader = threading.Thread(target=lambda: got.append(clt.recv(timeout=WAIT)))
                reader.start()
                server.send({"n": 1})
                assert inside.wait(WAIT)
                with pytest.raises(links.BusyError):
                    clt.into_sender_with_spawned_recver()
                release.set()
                reader.join(WAIT)
                assert got == [{"n": 1}]
                clt.into_sender_with_spawned_recver()  # once recv has returned, it may move


def test_after_the_peer_closed_and_we_closed_every_call_raises_closed_error(timer):
    with pair(timer) as (client, server):
        server.close()
        with pytest.raises(links.BrokenError) as first:
            client.recv(timeout=WAIT)
        assert first.value.reason == "peer_closed"
        client.close()  # the user's own close: from now on it is "you closed it"
        for call in (lambda: client.send({"n": 1}), lambda: client.recv(timeout=0), lambda: links.Ref(client).send({"n": 1})):
            with pytest.raises(links.ClosedError) as raised:
                call()
            assert isinstance(raised.value.__cause__, links.BrokenError)  # why it had ended, kept


def test_each_call_on_a_closed_connection_raises_a_fresh_exception(timer):
    """One stored exception raised again and again would collect every earlier call's frames."""
    with pair(timer) as (client, server):
        server.close()
        raised = []
        for _ in range(3):
            with pytest.raises(links.BrokenError) as error:
                client.recv(timeout=WAIT)
            raised.append(error.value)
        assert len({id(e) for e in raised}) == 3
        depths = [len(traceback.extract_tb(e.__traceback__)) for e in raised]
        assert depths[0] == depths[1] == depths[2]
        assert all(e.reason == "peer_closed" and e.__cause__ is raised[0].__cause__ for e in raised)


def test_an_infinite_or_huge_timeout_means_no_timeout(timer):
    """inf seconds is "as long as it takes", not an OverflowError from the OS's timers."""
    with pair(timer) as (client, server):
        for forever in (math.inf, 1e300):
            assert client.send({"n": 1}, timeout=forever) is links.SendStatus.COMPLETED
            assert server.recv(timeout=forever) == {"n": 1}
        with pytest.raises(ValueError, match="finite timeout"):
            links.Clt.connect("127.0.0.1:9", protocol=Json, timer=timer, timeout=math.inf)


def test_an_error_raised_again_keeps_its_type_message_and_fields_whatever_its_constructor():
    from links._errors import raised_again

    first = links.FrameTooLarge(10, 5)  # built from (size, limit), not from its message
    again = raised_again(first, False, "closed")
    assert type(again) is links.FrameTooLarge and str(again) == str(first)
    assert (again.size, again.max_frame_size) == (10, 5) and again.__cause__ is first
