"""The channel data path under concurrency, on real loopback sockets (plain and TLS).

Many threads sending on channels of one TCP connection queue their frames in the engine
while one of them writes (``MuxDriver._flush``): what each was told was COMPLETED arrives,
whole and in order on its channel, large messages (several turns of chunks, written as views
of the sender's own bytes) and small ones alike.
"""

from __future__ import annotations

import threading

import pytest
from helpers import Json
from helpers_tls import tls_contexts

import links

WAIT = 10.0
THREADS = 16
MESSAGES = 150


class Big(Json):
    framer = links.LengthPrefixFramer(header_size=4, max_frame_size=1 << 20)


@pytest.fixture(params=[False, True], ids=["tcp", "tls"])
def contexts(request):
    return tls_contexts() if request.param else (None, None)


def test_threads_sending_on_their_own_channels_at_once_get_every_message_through_in_order(poll, timer, contexts):
    server_ctx, client_ctx = contexts
    store = links.StoreCallback()
    tls = {"tls": server_ctx} if server_ctx else {}
    with links.Svc.bind("127.0.0.1:0", protocol=Big, callback=store, poll_handler=poll, timer=timer, mux=True, **tls) as svc:
        svc.into_sender_with_spawned_recver()
        dial = {"tls": client_ctx, "tls_server_name": "localhost"} if client_ctx else {}
        with links.mux.connect(f"127.0.0.1:{svc.local_addr[1]}", poll_handler=poll, timer=timer, timeout=WAIT, **dial) as mux:
            channels = [mux.open(protocol=Big, timeout=WAIT) for _ in range(THREADS)]
            start, errors = threading.Barrier(THREADS), []

            def send(i: int) -> None:
                try:
                    start.wait(WAIT)
                    for k in range(MESSAGES):
                        pad = "x" * (200_000 if k % 50 == 7 else k % 13)  # now and then several chunks' worth
                        assert channels[i].send({"ch": i, "k": k, "pad": pad}, timeout=WAIT) is links.SendStatus.COMPLETED
                except BaseException as e:  # noqa: BLE001 - reported below
                    errors.append(e)

            threads = [threading.Thread(target=send, args=(i,), name=f"sender-{i}") for i in range(THREADS)]
            for t in threads:
                t.start()
            for t in threads:
                t.join(WAIT)
            assert not errors, errors
            assert not any(t.is_alive() for t in threads)
            store.find_recv(lambda _m: len(store.recv_msgs()) >= THREADS * MESSAGES, timeout=WAIT)
            got: dict[int, list[int]] = {}
            for msg in store.recv_msgs():
                got.setdefault(msg["ch"], []).append(msg["k"])
                assert len(msg["pad"]) == (200_000 if msg["k"] % 50 == 7 else msg["k"] % 13)
            assert got == {i: list(range(MESSAGES)) for i in range(THREADS)}
            for ch in channels:
                ch.close()


class Echo(Big):
    def send_reply(self, msg, con):
        con.send(msg)


def test_a_send_that_finds_another_writer_leaves_its_frame_to_it_without_waiting(poll, timer):
    # Another thread is writing to the TCP connection (here: the test holds its write lock).
    # A send on a channel is taken at once, COMPLETED without waiting for that writer, and its
    # frame goes out, in order, with the next write once the writer lets go.
    with links.Svc.bind("127.0.0.1:0", protocol=Echo, poll_handler=poll, timer=timer, mux=True) as svc:
        svc.into_sender_with_spawned_recver()
        with links.mux.connect(f"127.0.0.1:{svc.local_addr[1]}", poll_handler=poll, timer=timer, timeout=WAIT) as mux:
            a, b = mux.open(protocol=Big, timeout=WAIT), mux.open(protocol=Big, timeout=WAIT)
            driver = mux.carrier._driver
            with driver.write_lock:
                for k in range(3):
                    assert a.send({"k": k}, timeout=0) is links.SendStatus.COMPLETED
                assert driver.engine.has_output  # queued for the writer, not written
            assert b.send({"k": "next"}, timeout=WAIT) is links.SendStatus.COMPLETED  # writes all queued
            assert [a.recv(timeout=WAIT) for _ in range(3)] == [{"k": 0}, {"k": 1}, {"k": 2}]
            assert b.recv(timeout=WAIT) == {"k": "next"}
            a.close()
            b.close()
