"""pyzmq: DEALER clients into one ROUTER server.

ZeroMQ frames messages itself (ZMTP), so the 100-byte payload is sent as one zmq message
rather than behind our 4-byte prefix; its I/O thread batches writes, which is what this
peer brings to the comparison. The server receives ``[identity, payload]`` and counts (or
echoes it back to that identity). W4 opens 100 DEALER sockets in one thread and sends
round-robin. ``LINGER`` bounds how long a closing client waits for its queue to drain.
"""

from __future__ import annotations

import threading
import time

import zmq

from links.bench import HOST, Control, Params, Tally, payload, rtt_result

LINGER_MS = 30_000


def serve(ctl: Control, params: Params) -> None:
    tally = Tally(ctl, params)
    ctx = zmq.Context()
    sock = ctx.socket(zmq.ROUTER)
    sock.rcvtimeo = 100  # wake up now and then to notice "stop"
    sock.linger = 0
    sock.bind(f"tcp://{HOST}:*")
    stopped = threading.Event()
    ctl.on_line("stop", stopped.set)
    ctl.send(port=int(sock.last_endpoint.rsplit(b":", 1)[1]))
    recv_multipart, send_multipart, add = sock.recv_multipart, sock.send_multipart, tally.add
    echo = params.workload == "w2"
    while not stopped.is_set():
        try:
            ident, msg = recv_multipart()
        except zmq.Again:
            continue
        add(1, len(msg))
        if echo:
            send_multipart([ident, msg])
    tally.final()
    sock.close()
    ctx.term()


def client(ctl: Control, params: Params, port: int) -> None:
    data = payload(params.size)
    ctx = zmq.Context()
    socks = []
    for _ in range(params.clients):
        sock = ctx.socket(zmq.DEALER)
        sock.linger = LINGER_MS
        sock.connect(f"tcp://{HOST}:{port}")
        socks.append(sock)
    if params.workload == "w2":
        (sock,) = socks
        send, recv, clock = sock.send, sock.recv, time.perf_counter_ns
        rtts, received = [], 0
        for i in range(params.total):
            t0 = clock()
            send(data)
            msg = recv()
            t1 = clock()
            received += len(msg) == len(data)
            if i >= params.warm:
                rtts.append((t1 - t0) / 1000)
        result = rtt_result(rtts, params.total, params.total * params.size, received)
    else:
        sends = [s.send for s in socks]
        for _ in range(params.warm):
            for send in sends:
                send(data)
        ctl.send(warmed=True)  # queued, maybe not yet written: the harness waits for the server's count
        ctl.wait_for("go")
        t0 = time.perf_counter()
        for _ in range(params.count):
            for send in sends:
                send(data)
        result = {"sent": params.total, "bytes": params.total * params.size, "received": 0, "t0": t0}
    for sock in socks:
        sock.close()
    ctx.term()  # returns once every queued message has been written (or LINGER ran out)
    ctl.send(result=result)
    ctl.wait_for("exit")
