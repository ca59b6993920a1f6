"""The TCP connection under channels owes bytes, and its writable watch is dropped: the
poll thread found the write lock busy when the socket had room, and could not ask for a
later look (``Attachment.watch_again``) because the timer was shut down. Channels write no
more while the connection owes bytes (``MuxDriver._flush``), so nothing written after that
moment may be stranded. A real yamux peer spoken by hand on loopback."""

from __future__ import annotations

import socket
import threading

from helpers import Json
from helpers_yamux import ACK, SYN, WINDOW_UPDATE, RawPeer, header, json_frame

import links
import links.mux

WAIT = 5.0


class _StoppingTimer(links.Timer):
    """A timer that, once ``stop`` is set, refuses every task as a shut-down timer does."""

    def __init__(self) -> None:
        super().__init__(name="test-stopping-timer")
        self.stop = False
        self.refused = threading.Event()

    def schedule(self, name, interval, task, *, delay=None):
        if self.stop:
            if name.startswith("write "):
                self.refused.set()
            raise RuntimeError("test-stopping-timer is shut down")
        return super().schedule(name, interval, task, delay=delay)


def test_a_send_after_the_owed_bytes_lost_their_watch_still_reaches_the_peer(poll):
    timer = _StoppingTimer()
    try:
        with socket.create_server(("127.0.0.1", 0)) as listener:
            listener.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # accepted: a small window
            listener.settimeout(WAIT)
            addr = f"127.0.0.1:{listener.getsockname()[1]}"
            with links.mux.connect(addr, poll_handler=poll, timer=timer, timeout=WAIT, keepalive=None) as mux:
                raw, _ = listener.accept()
                with RawPeer(raw) as peer:
                    ch = mux.open(protocol=Json, timeout=WAIT)
                    peer.expect(1, SYN)
                    peer.send(header(WINDOW_UPDATE, ACK, 1, 64 << 20))  # window enough for all below
                    driver = mux.carrier._driver
                    out = driver.att.outbound
                    big = {"x": "y" * 60_000}
                    for _ in range(2_000):  # until the TCP connection owes bytes (the peer reads nothing)
                        if out.backlog:
                            break
                        ch.send(big, timeout=WAIT)
                    assert out.backlog, "the socket took everything"
                    # The poll thread finds the write lock busy when the socket has room, and
                    # the timer refuses its later look.
                    timer.stop = True
                    with driver.write_lock:
                        while not timer.refused.is_set():
                            peer.sock.settimeout(0.2)
                            try:
                                if not peer.sock.recv(1 << 20):
                                    break
                            except TimeoutError:
                                pass
                        assert timer.refused.wait(WAIT), "the poll thread never found the lock busy"
                    peer.sock.settimeout(WAIT)
                    assert ch.send({"last": 1}, timeout=WAIT) is links.SendStatus.COMPLETED
                    # The peer reads on: the last message must come, after whatever was owed.
                    want = json_frame({"last": 1})
                    got = bytearray()
                    peer.sock.settimeout(2.0)
                    try:
                        while want not in got:
                            chunk = peer.sock.recv(1 << 20)
                            if not chunk:
                                break
                            got += chunk[-(len(want) * 2):] if len(got) > (1 << 20) else chunk
                            if len(got) > (1 << 20):
                                del got[: -len(want) * 2]
                    except TimeoutError:
                        pass
                    stranded = (len(out.backlog), driver.engine.has_output)
                    assert want in got, f"the last message never came (owed pieces, engine output: {stranded})"
                    ch.close()
    finally:
        timer.shutdown()
