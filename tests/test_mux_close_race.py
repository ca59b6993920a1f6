"""A service's close and what its poll thread was still admitting: a TCP connection that
completes its TLS handshake after ``Svc.close`` must not stay open, carrying channels for a
service that is gone (a plain service closes such a late connection as it joins)."""

from __future__ import annotations

import socket
import ssl

from helpers import Json
from helpers_tls import tls_contexts

import links

WAIT = 5.0


def _pump(sock: socket.socket, out: ssl.MemoryBIO) -> None:
    data = out.read()
    if data:
        sock.sendall(data)


def test_a_tls_handshake_that_completes_after_close_does_not_leave_its_tcp_connection_open(poll, timer):
    server_ctx, client_ctx = tls_contexts()

    with links.Svc.bind("127.0.0.1:0", protocol=Json, poll_handler=poll, timer=timer, mux=True, tls=server_ctx) as svc:
        svc.into_sender_with_spawned_recver()
        with socket.create_connection(svc.local_addr[:2], timeout=WAIT) as sock:
            incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
            tls = client_ctx.wrap_bio(incoming, outgoing, server_hostname="localhost")
            # The client's side of the handshake up to its last flight, which is kept back:
            # the server (the poll thread) waits in the middle of its handshake.
            while True:
                try:
                    tls.do_handshake()
                    break
                except ssl.SSLWantReadError:
                    _pump(sock, outgoing)
                    chunk = sock.recv(1 << 16)
                    assert chunk, "the server closed during the handshake"
                    incoming.write(chunk)
            svc.close()  # the handshake is still under way on the server
            _pump(sock, outgoing)  # the client's Finished: the server's handshake completes now
            # The service is closed: the connection that just completed must end.
            ended = False
            try:
                while True:
                    chunk = sock.recv(1 << 16)
                    if not chunk:
                        ended = True
                        break
            except ConnectionResetError:
                ended = True
            except TimeoutError:
                ended = False
            assert ended, "the TCP connection admitted after Svc.close is still open"
