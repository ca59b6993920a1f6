"""pyzmq: REQ/REP for one call at a time, DEALER/ROUTER for calls in flight; msgpack bodies.

``seq``: the client's REQ socket sends ``[method, params]`` and waits for the REP socket's
answer ``[error, result]`` (REQ/REP allows one request at a time, which is this figure).
``pipe``: a DEALER socket sends ``[msgid, method, params]``, up to ``Params.batch`` at once;
the ROUTER server answers ``[msgid, error, result]`` to the sender's identity and the client
matches each answer to its call by ``msgid`` (a dict of pending calls, as a user would).
Both sockets have no high-water mark (``SNDHWM``/``RCVHWM`` 0): at the default 1,000 a ROUTER
drops the replies it cannot queue, and 1,000 calls in flight reach it.
The server looks the method up by name in a dict, as every peer here does.
"""

from __future__ import annotations

import os
import sys
import threading

import msgpack
import zmq

from links.bench import HOST, Control, Params, Tally, payload

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from calls import WAIT_S, Window, sequential  # noqa: E402


def serve(ctl: Control, params: Params) -> None:
    tally = Tally(ctl, params)

    def echo(data: bytes) -> bytes:
        tally.add(1, len(data))
        return data

    methods = {"echo": echo}
    ctx = zmq.Context()
    sock = ctx.socket(zmq.REP if params.variant == "seq" else zmq.ROUTER)
    sock.sndhwm = sock.rcvhwm = 0  # no high-water mark: a ROUTER drops replies past it
    sock.rcvtimeo = 100  # wake up now and then to notice "stop"
    sock.linger = 0
    sock.bind(f"tcp://{HOST}:*")
    stopped = threading.Event()
    ctl.on_line("stop", stopped.set)
    ctl.send(port=int(sock.last_endpoint.rsplit(b":", 1)[1]))
    pack, unpack = msgpack.packb, msgpack.unpackb
    if params.variant == "seq":
        recv, send = sock.recv, sock.send
        while not stopped.is_set():
            try:
                method, args = unpack(recv())
            except zmq.Again:
                continue
            send(pack([None, methods[method](*args)]))
    else:
        recv_multipart, send_multipart = sock.recv_multipart, sock.send_multipart
        while not stopped.is_set():
            try:
                ident, body = recv_multipart()
            except zmq.Again:
                continue
            msgid, method, args = unpack(body)
            send_multipart([ident, pack([msgid, None, methods[method](*args)])])
    tally.final()
    sock.close()
    ctx.term()


def client(ctl: Control, params: Params, port: int) -> None:
    ctx = zmq.Context()
    sock = ctx.socket(zmq.REQ if params.variant == "seq" else zmq.DEALER)
    sock.sndhwm = sock.rcvhwm = 0  # as the server's: the window bounds what is queued
    sock.linger = 0
    sock.rcvtimeo = int(WAIT_S * 1000)
    sock.connect(f"tcp://{HOST}:{port}")
    pack, unpack = msgpack.packb, msgpack.unpackb
    if params.variant == "seq":
        send, recv = sock.send, sock.recv

        def call(data: bytes) -> bytes:
            send(pack(["echo", [data]]))
            error, result = unpack(recv())
            if error is not None:
                raise RuntimeError(error)
            return result

        result = sequential(call, params)
    else:
        result = _pipelined(sock, params)
    sock.close()
    ctx.term()
    ctl.send(result=result)
    ctl.wait_for("exit")


def _pipelined(sock: zmq.Socket, params: Params) -> dict:
    window = Window(params)
    data = payload(params.size)
    send, recv, pack, unpack = sock.send, sock.recv, msgpack.packb, msgpack.unpackb
    pending: dict[int, bool] = {}
    issued = 0
    while issued < min(params.batch, params.total):
        send(pack([issued, "echo", [data]]))
        pending[issued] = True
        issued += 1
    while pending:
        msgid, error, result = unpack(recv())  # zmq.Again past WAIT_S: a failed measurement
        del pending[msgid]
        window.reply(result if error is None else None)
        if issued < params.total:
            send(pack([issued, "echo", [data]]))
            pending[issued] = True
            issued += 1
    return window.result()
