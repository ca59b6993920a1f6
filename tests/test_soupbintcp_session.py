"""SoupBinTCP sessions over real loopback sockets: login accepted, rejected and timed out;
numbering and replay; End of Session and Logout; and every way the core can hold a connection
(unsplit, split, spawned receivers, a sender Ref shared by threads, a server on a user thread)."""

from __future__ import annotations

import socket
import threading
import time
from contextlib import contextmanager
from types import SimpleNamespace

import pytest
from helpers import watch_logs

import links
from links.soupbintcp import (
    CltProtocol,
    EndOfSession,
    LoginAccepted,
    LoginRejectedError,
    LoginRequest,
    LogoutRequest,
    NotLoggedInError,
    SequencedData,
    SvcProtocol,
    UnsequencedData,
)  # fmt: skip
from links.testing import FakeClock, FaultProxy, memory_socket_pair

WAIT = 5.0


@contextmanager
def echo_server(poll, timer, max_connections=128, **options):
    """A spawned SoupBinTCP server answering every Unsequenced Data with the same payload."""
    options = {"username": "user", "password": "secret", "session": "DAY1", "reply": lambda p: p, **options}
    config = SvcProtocol(**options)
    store = links.StoreCallback()
    with links.Svc.bind(
        "127.0.0.1:0", protocol=config, callback=store, poll_handler=poll, timer=timer, max_connections=max_connections
    ) as svc:
        sender = svc.into_sender_with_spawned_recver()
        yield SimpleNamespace(svc=svc, sender=sender, config=config, store=store, addr=f"127.0.0.1:{svc.local_addr[1]}")


def client(**options) -> CltProtocol:
    return CltProtocol(**{"username": "user", "password": "secret", **options})


def connect(server, poll, timer, config=None, **kwargs) -> links.Clt:
    return links.Clt.connect(
        server.addr, protocol=config or client(), poll_handler=poll, timer=timer, timeout=WAIT, **kwargs
    )


def logged_in(server, username="user") -> links.ConId:
    """The server-side con_id of ``username``'s newest login, once the server completed it (the
    callback sees the Login Request after the protocol accepted it)."""

    def match(msg) -> bool:
        return isinstance(msg, LoginRequest) and msg.username == username

    assert server.store.find_recv(match, timeout=WAIT) is not None, "the server never completed the login"
    return [r.con_id for r in server.store.records if r.direction == "recv" and match(r.msg)][-1]


def publish(server, con_id, *payloads) -> None:
    for payload in payloads:
        assert server.sender.send_to(con_id, SequencedData(payload)) is links.SendStatus.COMPLETED


def take(clt, n) -> list[SequencedData]:
    msgs = [clt.recv(timeout=WAIT) for _ in range(n)]
    assert all(isinstance(m, SequencedData) for m in msgs), msgs
    return msgs


# -- login ----------------------------------------------------------------------------------------


def test_login_accepted_then_unsequenced_data_comes_back_numbered(poll, timer):
    with echo_server(poll, timer) as server, connect(server, poll, timer) as clt:
        assert clt.is_connected()
        assert clt.recv(timeout=WAIT) == LoginAccepted("DAY1", 1)  # kept from the handshake
        clt.send(UnsequencedData(b"hello"))
        clt.send(UnsequencedData(b"again"))
        got = take(clt, 2)
        assert [(m.payload, m.sequence) for m in got] == [(b"hello", 1), (b"again", 2)]
        stamped = server.store.find_sent(lambda m: m == SequencedData(b"again"), timeout=WAIT)
        assert stamped.sequence == 2  # the server's callbacks see the number it gave


@pytest.mark.parametrize(
    ("options", "reason", "meaning"),
    [({"password": "wrong"}, "A", "not authorized"), ({"session": "OTHER"}, "S", "session not available")],
)
def test_login_rejected_raises_an_error_naming_the_reason(poll, timer, options, reason, meaning):
    with echo_server(poll, timer) as server, watch_logs() as logs:
        with pytest.raises(LoginRejectedError, match=meaning) as caught:
            connect(server, poll, timer, client(**options))
        assert caught.value.reason == reason
        assert isinstance(caught.value, links.LinksError)
        assert logs.wait("soupbintcp.login_rejected", reason=reason, username="user")
        # The server closes the rejected connection: its pool is empty again.
        assert logs.wait("clt.disconnected", reason="soupbintcp.login_rejected")


def test_authenticate_callable_decides_per_user(poll, timer):
    users = {"alice": "pw1", "bob": "pw2"}
    options = {"username": None, "password": None, "authenticate": lambda u, p: users.get(u) == p}
    with echo_server(poll, timer, **options) as server:
        with connect(server, poll, timer, client(username="bob", password="pw2")) as clt:
            assert clt.is_connected()
        with pytest.raises(LoginRejectedError):
            connect(server, poll, timer, client(username="bob", password="pw1"))


def test_failed_logins_are_throttled_per_address(poll, timer):
    # Issue 15, item 13: after a failed login, that address's next logins within the throttle
    # are refused without being checked: password guessing gets one try per throttle period.
    checked = []

    def authenticate(username, password):
        checked.append(password)
        return password == "secret"

    options = {"username": None, "password": None, "authenticate": authenticate, "login_throttle": 60.0}
    with echo_server(poll, timer, **options) as server, watch_logs() as logs:
        with pytest.raises(LoginRejectedError):
            connect(server, poll, timer, client(password="guess"))
        with pytest.raises(LoginRejectedError):  # even the right password, from the same address
            connect(server, poll, timer, client(password="secret"))
        assert checked == ["guess"]
        assert logs.wait("soupbintcp.login_rejected", why="throttled")


def test_connect_times_out_when_the_server_never_answers(poll, timer):
    # A listening socket completes TCP handshakes from its backlog and then says nothing.
    with socket.create_server(("127.0.0.1", 0)) as silent:
        started = time.monotonic()
        with pytest.raises(links.ConnectTimeout):
            links.Clt.connect(
                f"127.0.0.1:{silent.getsockname()[1]}", protocol=client(), timeout=0.3, poll_handler=poll, timer=timer
            )
        assert time.monotonic() - started < 2.0


def test_server_disconnects_a_client_that_never_logs_in(poll, timer):
    with watch_logs() as logs, echo_server(poll, timer, login_timeout=0.2) as server:
        with socket.create_connection(server.svc.local_addr, timeout=WAIT) as raw:
            assert raw.recv(100) == b""  # closed by the server, without a word
        assert logs.wait("soupbintcp.login_timeout", login_timeout=0.2)
        assert logs.wait("clt.disconnected", reason="soupbintcp.login_timeout")


def test_login_deadline_runs_on_the_timer_without_anyone_waiting():
    # Server on a user thread with a fake clock: the deadline is a timer task, nothing else.
    clock = FakeClock()
    timer = links.Timer(clock=clock, thread=False)
    config = SvcProtocol(username="user", password="secret", login_timeout=5.0)
    with links.Svc.bind("127.0.0.1:0", protocol=config, timer=timer) as svc:
        with socket.create_connection(svc.local_addr, timeout=WAIT) as raw, svc.accept(timeout=WAIT) as con:
            clock.advance(4.9)
            timer.run_due()
            con.send(links.soupbintcp.Debug("still here"))
            assert raw.recv(100) == b"\x00\x0b+still here"
            clock.advance(0.1)
            assert timer.run_due() == 1
            assert raw.recv(100) == b""
            with pytest.raises(links.BrokenError, match="soupbintcp.login_timeout"):
                con.send(links.soupbintcp.Debug("gone"))


# -- numbering and replay ---------------------------------------------------------------------------


def test_replay_from_a_requested_sequence_number_then_live_data(poll, timer):
    with echo_server(poll, timer) as server:
        first = client()
        with connect(server, poll, timer, first) as clt:
            publish(server, logged_in(server), b"m1", b"m2", b"m3", b"m4", b"m5")
            clt.recv(timeout=WAIT)  # LoginAccepted
            assert [m.sequence for m in take(clt, 5)] == [1, 2, 3, 4, 5]
            assert first.next_sequence == 6
        server.store.clear()
        with connect(server, poll, timer, client(sequence=3)) as clt:
            assert clt.recv(timeout=WAIT) == LoginAccepted("DAY1", 3)
            replayed = take(clt, 3)
            assert [(m.payload, m.sequence) for m in replayed] == [(b"m3", 3), (b"m4", 4), (b"m5", 5)]
            publish(server, logged_in(server), b"m6")
            assert [(m.payload, m.sequence) for m in take(clt, 1)] == [(b"m6", 6)]


@pytest.mark.parametrize("requested", [0, 100])
def test_sequence_zero_or_beyond_the_end_starts_at_the_end(poll, timer, requested):
    with echo_server(poll, timer) as server:
        with connect(server, poll, timer) as clt:
            publish(server, logged_in(server), b"a", b"b")
            clt.recv(timeout=WAIT)
            take(clt, 2)
        with connect(server, poll, timer, client(sequence=requested)) as clt:
            assert clt.recv(timeout=WAIT) == LoginAccepted("DAY1", 3)
            clt.send(UnsequencedData(b"live"))
            assert [(m.payload, m.sequence) for m in take(clt, 1)] == [(b"live", 3)]


def test_a_sequence_older_than_the_store_keeps_is_rejected(poll, timer):
    with echo_server(poll, timer, max_messages=3) as server:
        with connect(server, poll, timer) as clt:
            publish(server, logged_in(server), b"1", b"2", b"3", b"4", b"5")
            clt.recv(timeout=WAIT)
            take(clt, 5)
        assert [m.sequence for m in server.config.store.messages("user")] == [3, 4, 5]
        with pytest.raises(LoginRejectedError, match="session not available") as caught:
            connect(server, poll, timer, client(sequence=2))
        assert caught.value.reason == "S"
        with connect(server, poll, timer, client(sequence=3)) as clt:  # the oldest kept is fine
            assert clt.recv(timeout=WAIT) == LoginAccepted("DAY1", 3)
            assert [m.payload for m in take(clt, 3)] == [b"3", b"4", b"5"]


def test_sequenced_data_refused_for_lack_of_room_takes_no_number():
    # An in-memory socket pair: its fault hook makes the server's socket refuse writes on demand.
    # max_outbound=0: one frame may be owed; the next is refused, before it is numbered.
    config = SvcProtocol(username="user", password="secret", heartbeat_interval=None)
    server_end, client_end = memory_socket_pair()
    with watch_logs() as logs, client_end, links.Timer(clock=FakeClock(), thread=False) as timer:
        server = links.Clt.from_socket(server_end, links.Role.ACCEPTOR, protocol=config, timer=timer, max_outbound=0)
        with server:
            client_end.send(login_bytes())
            assert isinstance(server.recv(timeout=WAIT), LoginRequest)  # accepted: A went out
            assert server.send(SequencedData(b"one"), timeout=0) is links.SendStatus.COMPLETED
            server_end.would_block = True
            assert server.send(SequencedData(b"two"), timeout=0) is links.SendStatus.COMPLETED  # owed
            assert server.send(SequencedData(b"three"), timeout=0) is links.SendStatus.WOULD_BLOCK
            assert not logs.matching("soupbintcp.sequence_gap")
            # "three" took no number: the store holds what was sent, numbered without a gap.
            assert [(m.payload, m.sequence) for m in config.store.messages("user")] == [(b"one", 1), (b"two", 2)]
            server_end.would_block = False
            assert server.send(SequencedData(b"three"), timeout=WAIT) is links.SendStatus.COMPLETED
        assert [(m.payload, m.sequence) for m in config.store.messages("user")] == [
            (b"one", 1), (b"two", 2), (b"three", 3),
        ]  # fmt: skip


def login_bytes(sequence: int = 0) -> bytes:
    return b"\x00\x2fL" + b"user  " + b"secret    " + b" " * 10 + str(sequence).encode().rjust(20)


@pytest.mark.parametrize(
    "setting",
    [{"login_timeout": 0.0}, {"login_timeout": float("nan")}, {"heartbeat_interval": -1.0},
     {"heartbeat_interval": float("nan")}, {"idle_timeout": 0.0}, {"idle_timeout": float("nan")}],
    ids=lambda setting: f"{next(iter(setting))}={next(iter(setting.values()))}",
)  # fmt: skip
def test_a_liveness_setting_that_is_not_a_positive_duration_is_refused(setting):
    name = next(iter(setting))
    with pytest.raises(ValueError, match=name):
        SvcProtocol(username="user", password="secret", **setting)
    if name != "login_timeout":  # the server's alone
        with pytest.raises(ValueError, match=name):
            CltProtocol(username="user", password="secret", **setting)


def test_sequenced_data_to_a_connection_not_logged_in_is_refused(timer):
    config = SvcProtocol(username="user", password="secret")
    with links.Svc.bind("127.0.0.1:0", protocol=config, timer=timer) as svc:
        with socket.create_connection(svc.local_addr, timeout=WAIT):
            con_id = svc.accept_into_pool(timeout=WAIT)
            with pytest.raises(NotLoggedInError):
                svc.send_to(con_id, SequencedData(b"x"))
            assert config.store.next_sequence("user") == 1  # nothing was numbered


def test_a_newer_login_of_the_same_user_replaces_the_older_connection(poll, timer):
    with watch_logs() as logs, echo_server(poll, timer) as server:
        with connect(server, poll, timer) as old, connect(server, poll, timer) as new:
            assert logs.wait("soupbintcp.replaced", username="user")
            assert old.recv(timeout=WAIT) == LoginAccepted("DAY1", 1)
            assert old.recv(timeout=WAIT) == EndOfSession()
            with pytest.raises(links.ClosedError):
                old.recv(timeout=WAIT)
            new.send(UnsequencedData(b"x"))
            new.recv(timeout=WAIT)
            assert take(new, 1)[0].sequence == 1


# -- goodbyes -------------------------------------------------------------------------------------


def test_closing_the_server_sends_end_of_session_to_every_client(poll, timer):
    with echo_server(poll, timer, authenticate=lambda u, p: True, username=None, password=None) as server:
        clts = [connect(server, poll, timer, client(username=f"u{i}")) for i in range(3)]
        for i in range(3):
            logged_in(server, f"u{i}")
        server.svc.close()
        for clt in clts:
            with clt:
                assert clt.recv(timeout=WAIT) == LoginAccepted("DAY1", 1)
                assert clt.recv(timeout=WAIT) == EndOfSession()
                assert not clt.is_connected()
                with pytest.raises(links.ClosedError):
                    clt.recv(timeout=WAIT)


def test_closing_the_client_sends_logout_and_the_server_disconnects(poll, timer):
    with watch_logs() as logs, echo_server(poll, timer) as server:
        clt = connect(server, poll, timer)
        con_id = logged_in(server)
        clt.close()
        assert server.store.find_recv(lambda m: m == LogoutRequest(), timeout=WAIT)
        assert logs.wait("soupbintcp.logout", username="user", con_id=str(con_id))
        assert logs.wait("clt.disconnected", reason="soupbintcp.logout", con_id=str(con_id))
        with pytest.raises(links.LinksError):
            server.sender.send_to(con_id, SequencedData(b"late"))


# -- every mode of the core -------------------------------------------------------------------------


def test_spawned_client_with_a_sender_ref_shared_by_two_threads(poll, timer):
    per_thread = 200
    received = links.StoreCallback()
    with echo_server(poll, timer) as server:
        clt = connect(server, poll, timer, callback=received)
        ref = clt.into_sender_with_spawned_recver_ref()
        with ref:

            def produce(name: str, handle: links.Ref) -> None:
                for i in range(per_thread):
                    handle.send(UnsequencedData(f"{name}{i}".encode()))

            threads = [threading.Thread(target=produce, args=(n, ref.clone())) for n in "ab"]
            for t in threads:
                t.start()
            for t in threads:
                t.join(WAIT)
            assert received.wait_recv_count(1 + 2 * per_thread, timeout=WAIT)  # LoginAccepted + echoes
            data = [m for m in received.recv_msgs() if isinstance(m, SequencedData)]
            assert [m.sequence for m in data] == list(range(1, 2 * per_thread + 1))
            for name in "ab":  # each thread's messages came back in its order
                mine = [m.payload for m in data if m.payload.startswith(name.encode())]
                assert mine == [f"{name}{i}".encode() for i in range(per_thread)]


def test_split_client_halves_on_two_threads(poll, timer):
    with echo_server(poll, timer) as server:
        recver, sender = connect(server, poll, timer).split()
        with recver, sender:
            writer = threading.Thread(target=lambda: [sender.send(UnsequencedData(b"%d" % i)) for i in range(50)])
            writer.start()
            assert recver.recv(timeout=WAIT) == LoginAccepted("DAY1", 1)
            got = [recver.recv(timeout=WAIT) for _ in range(50)]
            writer.join(WAIT)
            assert [(m.payload, m.sequence) for m in got] == [(b"%d" % i, i + 1) for i in range(50)]


def test_server_on_a_user_thread(poll, timer):
    config = SvcProtocol(username="user", password="secret", reply=lambda p: p.upper())
    with links.Svc.bind("127.0.0.1:0", protocol=config, timer=timer) as svc:
        result: dict = {}
        dialer = threading.Thread(
            target=lambda: result.update(
                clt=links.Clt.connect(
                    f"127.0.0.1:{svc.local_addr[1]}", protocol=client(), timer=timer, poll_handler=poll, timeout=WAIT
                )
            )
        )
        dialer.start()
        with svc.accept(timeout=WAIT) as con:
            assert isinstance(con.recv(timeout=WAIT), LoginRequest)  # answered inside recv
            dialer.join(WAIT)
            with result["clt"] as clt:
                clt.send(UnsequencedData(b"shout"))
                assert con.recv(timeout=WAIT) == UnsequencedData(b"shout")  # the reply goes out here
                assert clt.recv(timeout=WAIT) == LoginAccepted("", 1)
                assert clt.recv(timeout=WAIT) == SequencedData(b"SHOUT")


def test_a_payload_messenger_carries_application_objects(poll, timer):
    json = links.JsonMessenger()
    with echo_server(poll, timer, payload_messenger=json, reply=lambda p: {"echo": p}) as server:
        with connect(server, poll, timer, client(payload_messenger=json)) as clt:
            clt.send(UnsequencedData({"order": 1, "qty": 100}))
            clt.recv(timeout=WAIT)
            (msg,) = take(clt, 1)
            assert msg.payload == {"echo": {"order": 1, "qty": 100}}
            assert msg.sequence == 1


def test_reconnect_resumes_the_stream_after_a_cut_without_gap_or_repeat(poll, timer):
    received = links.StoreCallback()
    with echo_server(poll, timer) as server, FaultProxy(server.addr) as proxy:
        config = client()
        clt = links.Clt.connect(
            f"127.0.0.1:{proxy.addr[1]}", protocol=config, callback=received, reconnect=links.Backoff(initial=0.01),
            poll_handler=poll, timer=timer, timeout=WAIT,
        )  # fmt: skip
        with clt.into_sender_with_spawned_recver():
            first = logged_in(server)
            publish(server, first, b"m1", b"m2", b"m3")
            assert received.find_recv(lambda m: isinstance(m, SequencedData) and m.sequence == 3, timeout=WAIT)
            proxy.pause()
            publish(server, first, b"m4", b"m5")  # numbered and stored, then lost with the link
            server.store.clear()
            proxy.reset()
            proxy.resume()
            # The redial logs in again and asks for 4: the server replays what was lost.
            assert received.find_recv(lambda m: isinstance(m, SequencedData) and m.sequence == 5, timeout=WAIT)
            assert LoginAccepted("DAY1", 4) in received.recv_msgs()
            data = [(m.payload, m.sequence) for m in received.recv_msgs() if isinstance(m, SequencedData)]
            assert data == [(b"m1", 1), (b"m2", 2), (b"m3", 3), (b"m4", 4), (b"m5", 5)]
            assert logged_in(server) != first
