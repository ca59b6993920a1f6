"""``reconnect=``: a plain protocol (no session) over a ``FaultProxy`` that cuts, refuses and pauses.

What a user checks: after a cut the very same ``Clt``, its sender, a sender ``Ref`` and its
spawned receiver carry on once ``clt.reconnected`` is logged; the protocol's handshake (a
login) runs again on a fresh instance; a send between connections waits, answers
``WOULD_BLOCK`` or, once reconnecting is given up, raises; ``close()`` stops the redialing;
a silent peer is detected by the idle timeout; the kernel's liveness options are set.

Waits are on log events (a ``capture_logs`` processor notifies a condition) or on callbacks,
never on sleeps. Every test that cuts asserts from ``proxy.stats()`` that the cut happened.
"""

from __future__ import annotations

import functools
import socket
import statistics
import threading
import time

import pytest
import structlog
from helpers import LogWatch

import links
from links.testing import FakeClock, Login, LoginAccepted, Ping, Pong, SampleClient, SampleServer
from links.testing._proxy import FaultProxy

WAIT = 5.0
FAST = links.Backoff(initial=0.01, maximum=0.05, factor=2.0, jitter=0.1)


class Instances:
    """A protocol factory that remembers every instance it made."""

    def __init__(self, factory) -> None:
        self.factory = factory
        self.made: list = []

    def __call__(self):
        protocol = self.factory()
        self.made.append(protocol)
        return protocol


@pytest.fixture
def server(logs, poll, timer):
    """A spawned ``SampleServer`` service; ``server.store`` sees every message it receives."""
    store = links.StoreCallback()
    with links.Svc.bind("127.0.0.1:0", protocol=SampleServer, callback=store, poll_handler=poll, timer=timer) as svc:
        svc.into_sender_with_spawned_recver()
        svc.store = store
        yield svc


@pytest.fixture
def proxy(server):
    with FaultProxy(server.local_addr) as p:
        yield p


def connect(proxy: FaultProxy, poll, timer, **kwargs) -> links.Clt:
    kwargs.setdefault("protocol", SampleClient)
    kwargs.setdefault("reconnect", FAST)
    return links.Clt.connect(f"127.0.0.1:{proxy.addr[1]}", poll_handler=poll, timer=timer, timeout=WAIT, **kwargs)


def logins(server) -> int:
    return sum(isinstance(m, Login) for m in server.store.recv_msgs())


def cut(proxy: FaultProxy, how: str) -> None:
    assert (proxy.reset() if how == "rst" else proxy.drop()) == 1


def slow_only(request) -> None:
    if "slow" not in (request.config.getoption("markexpr") or ""):
        pytest.skip("long run: select it with -m slow")


# -- the same handles carry on --------------------------------------------------------------------


@pytest.mark.parametrize("how", ["rst", "fin"])
def test_a_clt_used_on_one_thread_carries_on_after_a_cut(proxy, server, logs, poll, timer, how):
    instances = Instances(SampleClient)
    with connect(proxy, poll, timer, protocol=instances) as clt:
        assert clt.recv(WAIT) == LoginAccepted("user")
        clt.send(Ping(1))
        assert clt.recv(WAIT) == Pong(1)
        cut(proxy, how)
        # This recv finds the cut, waits for the redial, and returns the new login's answer.
        assert clt.recv(WAIT) == LoginAccepted("user")
        reconnected = logs.expect("clt.reconnected", attempt=1)
        assert reconnected["local"] != str(clt.con_id.local)  # a new socket under the same Clt
        assert logs.expect("clt.reconnecting", attempt=1)["delay"] <= FAST.base(1) * (1 + FAST.jitter)
        clt.send(Ping(2))
        assert clt.recv(WAIT) == Pong(2)
        assert clt.is_connected()
    # on_connect ran again, on a fresh protocol instance, and the server saw a second login.
    assert len(instances.made) == 2 and instances.made[0] is not instances.made[1]
    assert instances.made[1].logged_in
    assert logins(server) == 2
    stats = proxy.stats()
    assert (stats.rst_cuts, stats.fin_cuts) == ((1, 0) if how == "rst" else (0, 1))
    assert stats.accepted == 2


def test_sender_ref_and_spawned_receiver_carry_on_across_cuts(proxy, server, logs, poll, timer):
    store = links.StoreCallback()
    instances = Instances(SampleClient)
    clt = connect(proxy, poll, timer, protocol=instances, callback=store)
    ref = clt.into_sender_with_spawned_recver_ref()
    clone = ref.clone()
    with ref:
        ref.send(Ping(0))
        assert store.find_recv(lambda m: m == Pong(0), WAIT)
        for n, how in enumerate(["rst", "fin", "rst"], start=1):
            cut(proxy, how)
            logs.expect("clt.reconnected", count=n)  # the poll thread saw the cut; the timer redialed
            ref.send(Ping(2 * n))
            clone.send(Ping(2 * n + 1))
            assert store.find_recv(lambda m, n=n: m == Pong(2 * n + 1), WAIT)
        pongs = [m.seq for m in store.recv_msgs() if isinstance(m, Pong)]
        assert pongs == [0, 2, 3, 4, 5, 6, 7]
        assert len(instances.made) == 4 and all(p.logged_in for p in instances.made)
        assert store.recv_msgs().count(LoginAccepted("user")) == 4  # the callback saw every relogin
    assert logins(server) == 4
    stats = proxy.stats()
    assert (stats.rst_cuts, stats.fin_cuts, stats.accepted) == (2, 1, 4)
    with pytest.raises(links.ClosedError):
        clone.send(Ping(99))  # closing one clone closed it for all


# -- sending between connections -------------------------------------------------------------------


def test_send_while_disconnected_would_block_or_waits_for_the_reconnect(proxy, server, logs, poll, timer):
    store = links.StoreCallback()
    clt = connect(proxy, poll, timer, callback=store)
    with clt.into_sender_with_spawned_recver() as sender:
        proxy.refuse(True)  # every redial is reset during its login: no connection to send on
        cut(proxy, "fin")
        logs.expect("clt.reconnect_failed", attempt=1)
        assert sender.send(Ping(1), timeout=0) is links.SendStatus.WOULD_BLOCK
        assert sender.send(Ping(2), timeout=0.02) is links.SendStatus.WOULD_BLOCK

        result: dict = {}
        started = threading.Event()

        def send_and_wait() -> None:
            started.set()
            result["status"] = sender.send(Ping(3), timeout=WAIT)
            result["at"] = time.monotonic()

        waiter = threading.Thread(target=send_and_wait, name="waiting-sender")
        waiter.start()
        assert started.wait(WAIT)
        logs.expect("clt.reconnect_failed", attempt=2)  # still refused while the sender waits
        assert "status" not in result
        allowed = time.monotonic()
        proxy.refuse(False)
        waiter.join(WAIT)
        assert result["status"] is links.SendStatus.COMPLETED
        assert result["at"] > allowed  # it waited for the connection that was refused until then
        logs.expect("clt.reconnected")
        assert store.find_recv(lambda m: m == Pong(3), WAIT)
    assert [m.seq for m in server.store.recv_msgs() if isinstance(m, Ping)] == [3]  # 1 and 2 were not sent
    stats = proxy.stats()
    assert stats.refused >= 2 and stats.fin_cuts == 1


def test_sends_raise_once_reconnecting_is_given_up(proxy, server, logs, poll, timer):
    backoff = links.Backoff(initial=0.01, maximum=0.02, jitter=0.0, max_attempts=3)
    ref = connect(proxy, poll, timer, reconnect=backoff).into_sender_with_spawned_recver_ref()
    with ref:
        proxy.refuse(True)
        errors: list = []

        def send_and_wait() -> None:
            try:
                ref.clone().send(Ping(1))  # timeout=None: waits for a connection that never comes
            except links.LinksError as e:
                errors.append(e)

        waiter = threading.Thread(target=send_and_wait, name="waiting-sender")
        cut(proxy, "rst")
        logs.expect("clt.reconnecting", attempt=1)
        waiter.start()
        waiter.join(WAIT)  # woken when the connection is closed for good
        assert not waiter.is_alive()
        assert len(errors) == 1 and isinstance(errors[0], links.BrokenError)
        assert errors[0].reason == "reconnect_gave_up"
        with pytest.raises(links.BrokenError) as raised:
            ref.send(Ping(2), timeout=0)
        assert raised.value.reason == "reconnect_gave_up"
    assert [e["attempt"] for e in logs.matching("clt.reconnect_failed")] == [1, 2, 3]
    assert not logs.matching("clt.reconnecting", attempt=4)
    assert proxy.stats().refused == 3


# -- closing stops the redialing -------------------------------------------------------------------


def redial_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("links-redial")]


def test_close_between_attempts_stops_reconnecting(proxy, server, logs, poll, timer):
    clock = FakeClock()
    fake = links.Timer(clock=clock, thread=False)
    clt = connect(proxy, poll, fake)
    sender = clt.into_sender_with_spawned_recver()
    proxy.refuse(True)
    cut(proxy, "rst")
    logs.expect("clt.reconnecting", attempt=1)
    clock.advance(fake.next_deadline() - clock.monotonic())
    assert fake.run_due() == 1
    logs.expect("clt.reconnecting", attempt=2)  # attempt 1 was refused; attempt 2 is scheduled
    sender.close()
    refused = proxy.stats().refused
    clock.advance(1.0)  # far past attempt 2's deadline
    fake.run_due()
    assert fake.task_count == 0 and fake.next_deadline() is None
    assert not redial_threads()  # the due attempt found the connection closed and dialed nothing
    assert not logs.matching("clt.reconnecting", attempt=3) and not logs.matching("clt.reconnect_failed", attempt=2)
    assert proxy.stats().refused == refused == 1
    with pytest.raises(links.ClosedError):
        sender.send(Ping(1))


def test_close_during_an_attempt_discards_its_connection(proxy, server, logs, poll, timer):
    clock = FakeClock()
    fake = links.Timer(clock=clock, thread=False)
    clt = connect(proxy, poll, fake)
    sender = clt.into_sender_with_spawned_recver()
    proxy.pause()  # the redial connects, but its login waits in the proxy
    cut(proxy, "rst")
    logs.expect("clt.reconnecting", attempt=1)
    clock.advance(fake.next_deadline() - clock.monotonic())
    threads = set(threading.enumerate())
    assert fake.run_due() == 1  # the attempt starts: a connect under way, watched by the poll thread
    assert set(threading.enumerate()) == threads and not redial_threads()  # no thread per attempt
    sender.close()
    proxy.resume()  # the login completes now, after the close
    # Then the attempt publishes onto a closed connection, which discards it: the server sees
    # its second connection end (after the cut one), and the client logged the cut and the close.
    logs.expect("clt.disconnected", 4)
    assert fake.task_count == 0
    assert not logs.matching("clt.reconnected") and not logs.matching("clt.reconnecting", attempt=2)
    assert not sender.is_connected()
    with pytest.raises(links.ClosedError):
        sender.send(Ping(1))
    assert proxy.stats().rst_cuts == 1


# -- dead peers --------------------------------------------------------------------------------------


def dead_peer_trials(proxy, logs, poll, timer, trials: int, interval: float = 0.05) -> list[float]:
    """Pause the proxy (no FIN, no RST: silence) ``trials`` times; the seconds from each pause
    to the ``clt.idle_timeout`` event. Each trial also waits for the reconnect.

    The pause comes right after a heartbeat arrived: the worst case, where the whole idle
    timeout must pass in silence before the peer can be declared dead.
    """
    idle_timeout = 3 * interval
    heartbeats = functools.partial(SampleClient, heartbeat_interval=interval)
    heard = links.CounterCallback()
    clt = connect(proxy, poll, timer, protocol=heartbeats, callback=heard, idle_timeout=idle_timeout)
    latencies = []
    with clt.into_sender_with_spawned_recver():
        for n in range(1, trials + 1):
            if n > 1:
                logs.expect("clt.reconnected", count=n - 1)
            assert heard.wait_recv(heard.recv_count + 2, WAIT)  # the server's heartbeats are flowing
            paused = time.monotonic()
            proxy.pause()
            detected = logs.expect("clt.idle_timeout", count=n)
            latencies.append(detected["t"] - paused)
            proxy.resume()  # the redial's login was waiting in the proxy
        logs.expect("clt.reconnected", count=trials)
    assert not logs.matching("clt.reconnect_failed")
    assert proxy.stats().accepted == trials + 1  # every trial's silence really ended its connection
    return latencies


@pytest.fixture
def heartbeat_server(logs, poll, timer):
    """Like ``server``, but the server sends heartbeats too (every 50 ms), so an idle client hears it."""
    with links.Svc.bind(
        "127.0.0.1:0", protocol=lambda: SampleServer(heartbeat_interval=0.05), poll_handler=poll, timer=timer
    ) as svc:
        svc.into_sender_with_spawned_recver()
        yield svc


def test_a_silent_peer_is_detected_by_the_idle_timeout_and_redialed(heartbeat_server, logs, poll, timer):
    bound = 3 * 0.05 + 0.05  # idle_timeout + 50 ms
    with FaultProxy(heartbeat_server.local_addr) as proxy:
        latencies = dead_peer_trials(proxy, logs, poll, timer, trials=10)
    print(f"detection latencies (s): {[round(x, 3) for x in latencies]}")
    # Never declared dead early: the silence lasted (nearly) the whole idle timeout.
    assert min(latencies) > 3 * 0.05 - 0.05
    # The bound, loosely enough for a loaded 2-CPU box: typical trials meet it, none is far off.
    assert statistics.median(latencies) <= bound
    assert max(latencies) <= bound + 0.25


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_dead_peer_detection_bound_in_100_of_100_trials(request, heartbeat_server, logs, poll, timer):
    slow_only(request)
    bound = 3 * 0.05 + 0.05
    with FaultProxy(heartbeat_server.local_addr) as proxy:
        latencies = dead_peer_trials(proxy, logs, poll, timer, trials=100)
    late = [x for x in latencies if x > bound]
    print(f"100 trials: median {statistics.median(latencies):.3f}s, max {max(latencies):.3f}s, late {late}")
    assert not late


@pytest.mark.slow
@pytest.mark.timeout(420)
def test_no_false_disconnect_during_five_minutes_of_healthy_heartbeats(request, poll, timer):
    slow_only(request)
    interval, healthy = 0.1, 300.0
    heard = links.CounterCallback()
    trouble = threading.Event()
    logs = LogWatch()

    def on_trouble(logger, method, event_dict):
        if event_dict["event"] in ("clt.idle_timeout", "clt.disconnected"):
            trouble.set()
        return event_dict

    with (
        structlog.testing.capture_logs(processors=[on_trouble, logs]),
        links.Svc.bind(
            "127.0.0.1:0", protocol=lambda: SampleServer(heartbeat_interval=interval), poll_handler=poll, timer=timer
        ) as svc,
    ):
        svc.into_sender_with_spawned_recver()
        clt = links.Clt.connect(
            f"127.0.0.1:{svc.local_addr[1]}", protocol=lambda: SampleClient(heartbeat_interval=interval),
            callback=heard, idle_timeout=3 * interval, reconnect=FAST, poll_handler=poll, timer=timer,
        )  # fmt: skip
        with clt.into_sender_with_spawned_recver():
            assert not trouble.wait(healthy)
            during = [e["event"] for e in logs.entries]
    assert during.count("clt.connected") == 2  # the client and the accepted end, once each
    assert not {"clt.idle_timeout", "clt.disconnected", "clt.reconnecting"} & set(during)
    assert heard.recv_count >= 0.8 * healthy / interval  # heartbeats really flowed all along


# -- kernel-level liveness ------------------------------------------------------------------------------


def socket_options(fd: int) -> tuple[int, int, int, int, int]:
    with socket.fromfd(fd, socket.AF_INET, socket.SOCK_STREAM) as sock:  # a dup of the same socket
        return (
            sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT),
            sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE),
            sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE),
            sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL),
            sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT),
        )


def test_tcp_user_timeout_and_keepalive_are_set_on_every_connection(proxy, server, logs, poll, timer):
    clt = connect(proxy, poll, timer, tcp_user_timeout=2.5, keepalive=(10, 3, 4))
    recver, sender = clt.split()
    with sender:
        assert recver.recv(WAIT) == LoginAccepted("user")  # kept from connect's handshake
        assert socket_options(recver.fileno()) == (2500, 1, 10, 3, 4)
        cut(proxy, "rst")
        assert recver.recv(WAIT) == LoginAccepted("user")  # the redial's login
        logs.expect("clt.reconnected")
        assert socket_options(recver.fileno()) == (2500, 1, 10, 3, 4)


def test_without_liveness_options_the_kernel_defaults_stay(proxy, server, logs, poll, timer):
    with connect(proxy, poll, timer) as clt:
        recver, sender = clt.split()
        user_timeout, keepalive, *_ = socket_options(recver.fileno())
        assert (user_timeout, keepalive) == (0, 0)
        sender.close()
