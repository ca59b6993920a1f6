"""Hostile peers: an oversized length header, undecodable JSON, a reset. The hostile
connection alone is closed (logged, ``on_disconnect`` run, gate slot released); healthy
connections on the same poll thread keep working. On a user thread the error is raised once,
then the connection reports ``BrokenError`` like any ended one."""

from __future__ import annotations

import socket
import struct
import threading
from contextlib import ExitStack

import pytest
from helpers import watch_logs

import links

WAIT = 5.0
HEALTHY = 10
MAX_FRAME = 1024


class Json(links.Protocol):
    framer = links.LengthPrefixFramer(header_size=4, max_frame_size=MAX_FRAME)
    messenger = links.JsonMessenger()


class Server:
    """The service's protocol (JSON echo) plus waitable records of its connections coming and going."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self.joined: list[str] = []
        self.gone: list[str] = []
        server = self

        class Echo(Json):
            def on_connect(self, con):
                server._add(server.joined, str(con.con_id))

            def on_disconnect(self, con_id):
                server._add(server.gone, str(con_id))

            def send_reply(self, msg, con):
                con.send(msg)

        self.protocol = Echo

    def _add(self, items: list, item) -> None:
        with self._cond:
            items.append(item)
            self._cond.notify_all()

    def wait(self, predicate) -> bool:
        with self._cond:
            return self._cond.wait_for(predicate, WAIT)


def frame(payload: bytes) -> bytes:
    return struct.pack("!I", len(payload)) + payload


def reset(sock: socket.socket) -> None:
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()  # linger 0: an RST instead of a FIN


# The bytes of the hostile frames.
TOO_LARGE = struct.pack("!I", 1 << 20)
BAD_JSON = frame(b"{not json")

# case: (what the hostile peer does, the log event its connection ends with, and its fields)
CASES = {
    "too_large": (lambda s: s.sendall(TOO_LARGE), "frame.too_large", {"size": (1 << 20) + 4}),
    "bad_json": (lambda s: s.sendall(BAD_JSON), "frame.decode_failed", {}),
    "reset": (lambda s: (s.sendall(b"\x00\x00"), reset(s)), "clt.disconnected", {"reason": "broken"}),
}


def exchange(clients: list[links.Clt], tag: str) -> None:
    for i, c in enumerate(clients):
        c.send({"tag": tag, "i": i})
    for i, c in enumerate(clients):
        assert c.recv(timeout=WAIT) == {"tag": tag, "i": i}


@pytest.mark.parametrize("case", list(CASES))
def test_hostile_peer_is_cut_off_and_healthy_ones_carry_on(timer, poll, case):
    attack, event, fields = CASES[case]
    server = Server()
    with watch_logs() as logs, ExitStack() as stack:
        svc = stack.enter_context(
            links.Svc.bind(
                "127.0.0.1:0", protocol=server.protocol, max_connections=HEALTHY + 1, timer=timer, poll_handler=poll
            )
        )
        sender = svc.into_sender_with_spawned_recver()
        target = f"127.0.0.1:{svc.local_addr[1]}"
        clients = [
            stack.enter_context(links.Clt.connect(target, protocol=Json, timer=timer, timeout=WAIT))
            for _ in range(HEALTHY)
        ]
        exchange(clients, "before")

        hostile = stack.enter_context(socket.create_connection(svc.local_addr))
        hostile_id = str(links.ConId(links.Role.ACCEPTOR, svc.name, svc.local_addr, hostile.getsockname()[:2]))
        assert server.wait(lambda: hostile_id in server.joined)
        attack(hostile)

        assert logs.wait(event, con_id=hostile_id, **fields)
        assert server.wait(lambda: hostile_id in server.gone)  # on_disconnect ran
        if case != "reset":
            hostile.settimeout(WAIT)
            assert hostile.recv(1) == b""  # the server closed it
        poll.sync()
        assert svc.gate.in_use == HEALTHY  # its slot came back
        assert len(sender) == HEALTHY and hostile_id not in map(str, sender.con_ids())
        assert server.gone == [hostile_id]  # nobody else was cut off

        exchange(clients, "after")
        assert sender.broadcast({"still": "alive"}) == HEALTHY
        for c in clients:
            assert c.recv(timeout=WAIT) == {"still": "alive"}
        assert poll.handler_count == HEALTHY + 1  # the receivers plus the acceptor
        assert any(t.name == poll.name and t.is_alive() for t in threading.enumerate())


@pytest.mark.parametrize(("case", "error"), [("too_large", links.FrameTooLarge), ("bad_json", links.DecodeError)])
def test_user_thread_recv_raises_the_protocol_error_once_then_broken(timer, case, error):
    attack = CASES[case][0]
    server = Server()
    with links.Svc.bind("127.0.0.1:0", protocol=server.protocol, timer=timer) as svc:
        with socket.create_connection(svc.local_addr) as hostile, svc.accept(timeout=WAIT) as clt:
            attack(hostile)
            with pytest.raises(error):
                clt.recv(timeout=WAIT)
            assert server.gone == [str(clt.con_id)]
            assert svc.gate.in_use == 0
            assert not clt.is_connected()
            with pytest.raises(links.BrokenError):
                clt.recv(timeout=WAIT)
            with pytest.raises(links.BrokenError):
                clt.send({"n": 1})


@pytest.mark.parametrize("bad", [TOO_LARGE, BAD_JSON], ids=["too_large", "bad_json"])
def test_messages_in_the_same_read_before_a_hostile_frame_are_still_served(timer, poll, bad):
    """One write carries two good frames and then the bad one: the spawned receiver serves
    the two (their echoes come back) before it closes the connection."""
    server = Server()
    with links.Svc.bind("127.0.0.1:0", protocol=server.protocol, timer=timer, poll_handler=poll) as svc:
        svc.into_sender_with_spawned_recver()
        with socket.create_connection(svc.local_addr) as hostile:
            good = frame(b'{"n":1}') + frame(b'{"n":2}')
            hostile.sendall(good + bad)
            hostile.settimeout(WAIT)
            received = b""
            while chunk := hostile.recv(4096):
                received += chunk
            assert received == good  # both echoed, then EOF
            assert server.wait(lambda: len(server.gone) == 1)


@pytest.mark.timeout(20)
def test_peers_that_say_nothing_lose_their_slot_after_the_handshake_timeout(poll, timer):
    # Issue 15, item 8: two silent peers (one parked a byte short of a whole frame) must not
    # hold a max_connections=2 service for ever; a real client gets in once they are gone.
    with watch_logs() as logs, links.Svc.bind(
        "127.0.0.1:0", protocol=Json, poll_handler=poll, timer=timer, max_connections=2, handshake_timeout=0.3,
    ) as svc, ExitStack() as stack:  # fmt: skip
        svc.into_sender_with_spawned_recver()
        silent = stack.enter_context(socket.create_connection(svc.local_addr, timeout=WAIT))
        parked = stack.enter_context(socket.create_connection(svc.local_addr, timeout=WAIT))
        parked.sendall(frame(b'{"a": 1}')[:-1])
        assert logs.wait("svc.handshake_timeout", 2) is not None
        for peer in (silent, parked):
            assert peer.recv(1) == b""  # closed by the service
        with links.Clt.connect(f"127.0.0.1:{svc.local_addr[1]}", protocol=Json, timer=timer, timeout=WAIT) as clt:
            assert clt.send({"hi": 1}) is links.SendStatus.COMPLETED
        assert logs.wait("svc.accepted", 3) is not None


def test_a_reply_to_a_peer_that_vanished_ends_its_connection_quietly(poll, timer, logs):
    """A peer that sends requests and then stops reading (gone) makes the replies fail: that
    is the peer's doing, not a handler's bug. Its connection ends as broken, with no
    ``poll.handler_failed``, and the poll thread carries on."""
    from links.testing import memory_socket_pair

    class Echo(links.Protocol):
        framer = links.LengthPrefixFramer(header_size=4)

        def send_reply(self, msg, con):
            con.send(msg)

    client, server_end = memory_socket_pair()
    clt = links.Clt.from_socket(server_end, links.Role.ACCEPTOR, protocol=Echo, poll_handler=poll, timer=timer)
    hold, held = threading.Event(), threading.Event()
    poll.call_soon(lambda: (held.set(), hold.wait(5)))  # the poll thread busy: requests pile up
    assert held.wait(5)
    clt.into_sender_with_spawned_recver()
    for _ in range(3):
        client.send(struct.pack(">I", 5) + b"hello")
    client.shutdown(socket.SHUT_RD)  # gone for replies: every send to it fails now
    hold.set()
    logs.expect("clt.disconnected", reason="broken")
    poll.sync()  # what the poll thread does after it is done
    assert not logs.matching("poll.handler_failed")
    client.close()
