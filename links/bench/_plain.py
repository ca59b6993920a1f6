"""The baseline: plain blocking Python sockets, one thread per connection on both sides.

Server: an accept thread, then per connection a thread that reads with ``recv_into`` into one
kept buffer, cuts frames with ``struct`` and copies each payload out (counting servers report
to the tally once per read, under a lock: W4 has 100 such threads); the echo server answers
each frame with one ``sendall``. Client: ``sendall`` of a freshly built frame per message; W4
runs 100 such threads.

Over TLS (``Params.tls``) each socket is wrapped with ``SSLContext.wrap_socket`` (the pinned
contexts of ``_tls``): the server's in its connection's thread, where the handshake runs;
everything else is the same code on the ``SSLSocket``.
"""

from __future__ import annotations

import socket
import ssl
import threading
import time
from collections.abc import Callable

from ._child import HEADER, HOST, Control, Go, Params, Tally, payload, read_frames, recv_exact, rtt_result, run_senders
from ._tls import TLS_SERVER_NAME, tls_client_context, tls_server_context


def serve(ctl: Control, params: Params) -> None:
    tally = Tally(ctl, params)
    lock = threading.Lock()
    listener = socket.create_server((HOST, 0), backlog=1024)

    def counting(conn: socket.socket) -> None:
        got = [0, 0]

        def on_frame(msg: bytes) -> None:
            got[0] += 1
            got[1] += len(msg)

        def on_batch() -> None:
            if got[0]:
                with lock:
                    tally.add(got[0], got[1])
                got[0] = got[1] = 0

        read_frames(conn, on_frame, params.size, on_batch)

    def echo(conn: socket.socket) -> None:
        pack = HEADER.pack

        def on_frame(msg: bytes) -> None:
            conn.sendall(pack(len(msg)) + msg)
            tally.add(1, len(msg))  # one connection: only this thread counts

        read_frames(conn, on_frame, params.size)

    handler = echo if params.workload == "w2" else counting
    tls = tls_server_context(params.tls) if params.tls else None

    def run(conn: socket.socket) -> None:
        try:
            if tls is not None:
                conn = tls.wrap_socket(conn, server_side=True)
            handler(conn)
        except OSError:
            pass  # a reset at the end: the completion check tells whether anything was lost
        finally:
            conn.close()

    def accept() -> None:
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            threading.Thread(target=run, args=(conn,), daemon=True).start()

    threading.Thread(target=accept, daemon=True).start()
    ctl.send(port=listener.getsockname()[1])
    ctl.wait_for("stop")
    with lock:
        tally.final()


def _connect(port: int, tls: ssl.SSLContext | None) -> socket.socket:
    sock = socket.create_connection((HOST, port))
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock if tls is None else tls.wrap_socket(sock, server_hostname=TLS_SERVER_NAME)


def _negotiated(sock: socket.socket) -> str:
    """``result["tls"]``: the suite this connection negotiated, "" for a plain socket."""
    return sock.cipher()[0] if isinstance(sock, ssl.SSLSocket) else ""


def _frame_sender(port: int, params: Params, data: bytes, negotiated: list[str]) -> Callable[[Go], None]:
    tls = tls_client_context(params.tls) if params.tls else None

    def send(go: Go) -> None:
        with _connect(port, tls) as sock:
            negotiated.append(_negotiated(sock))
            sendall, pack = sock.sendall, HEADER.pack
            for _ in range(params.warm):
                sendall(pack(len(data)) + data)  # build each frame, as a real sender would
            go.warmed()
            for _ in range(params.count):
                sendall(pack(len(data)) + data)

    return send


def client(ctl: Control, params: Params, port: int) -> None:
    data = payload(params.size)
    if params.workload == "w2":
        rtts = []
        header, body = memoryview(bytearray(4)), memoryview(bytearray(params.size))
        received = 0
        with _connect(port, tls_client_context(params.tls) if params.tls else None) as sock:
            negotiated = _negotiated(sock)
            sendall, pack, clock = sock.sendall, HEADER.pack, time.perf_counter_ns
            for i in range(params.total):
                t0 = clock()
                sendall(pack(len(data)) + data)
                recv_exact(sock, header)
                (length,) = HEADER.unpack(header)
                recv_exact(sock, body[:length])
                bytes(body[:length])
                t1 = clock()
                received += length == len(data)
                if i >= params.warm:
                    rtts.append((t1 - t0) / 1000)
        ctl.send(result={**rtt_result(rtts, params.total, params.total * params.size, received), "tls": negotiated})
    else:
        sent: list[str] = []
        result = run_senders(ctl, params, _frame_sender(port, params, data, sent))
        ctl.send(result={**result, "tls": min(sent, default="")})  # "" if any connection was not over TLS
    ctl.wait_for("exit")
