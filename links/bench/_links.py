"""The subject: links, through its public API only, on the default poll thread and timer.

Server (every workload): ``Svc.bind`` then ``into_sender_with_spawned_recver()``, so the
acceptor and every accepted receiver run on the poll thread; a counting ``Callback`` sees each
message there, and for W2 the protocol's ``send_reply`` echoes it.

Client variants:

* ``send`` (W1, W3, W4): ``Clt.send`` per message; W4 runs 100 threads, one ``Clt`` each
  (as the plain peer does);
* ``one_thread`` (W4): one thread owns all 100 ``Clt``s and hands each, in turn, a
  ``send_many`` batch of ``Params.batch`` messages: what an event loop such as Twisted's
  reactor does (it buffers a connection's writes and flushes them once per loop pass), done
  explicitly;
* ``send_many`` (W1): ``Clt.send_many`` with batches of ``Params.batch`` messages;
* ``recv`` (W2): ``Clt.send`` then ``Clt.recv`` on the calling thread;
* ``callback`` (W2): the client's receiver spawned too; the calling thread sends, then waits
  on a ``threading.Event`` that the callback sets on the poll thread;
* ``send_busy`` (W1), ``recv_busy`` (W2): ``send`` and ``recv`` against a server whose poll
  handler busy-polls (``PollHandler(busy_poll=BUSY_POLL_S)``): it stays awake between
  messages instead of being woken for each.

Over TLS (``Params.tls``) the service binds with ``tls=`` and every client connects with
``tls=`` and ``tls_server_name=``, the pinned contexts of ``_tls``; nothing else changes.
links does not say which suite a connection negotiated: the client reports ``TLS_CIPHER``
once the server's certificate is verified (``peer_certificate``), the only suite its
context allows.

Over channels (``Params.mux``, ``links.mux``) the service binds with ``mux=True`` and every
client connection is a channel: the client holds one ``links.mux.connect`` handle for its
whole run and opens each connection on it with ``open()``, so all of them (W4's 100) travel
on one TCP connection. The client reports over how many TCP connections its connections
went (``"carriers"``: distinct ``con_id.local``, which for a channel is its TCP
connection's address); the completion check holds a channel run to one.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import links
import links.mux

from ._child import BUSY_POLL_S, HOST, MAX_FRAME, Control, Go, Params, Tally, payload, rtt_result, run_senders
from ._scripts import quiet_logs
from ._tls import TLS_CIPHER, TLS_SERVER_NAME, tls_client_context, tls_server_context

WAIT_S = 30.0  # a reply that takes longer than this is a failure, not a slow round trip


class Raw(links.Protocol):
    """4-byte big-endian length prefix, raw bytes: the frames of every workload."""

    framer = links.LengthPrefixFramer(header_size=4, max_frame_size=MAX_FRAME)
    messenger = links.RawMessenger()


class RawEcho(Raw):
    """``Raw`` that echoes every message from ``send_reply`` (the W2 server)."""

    def send_reply(self, msg: Any, con: Any) -> None:
        con.send(msg)  # one message in flight: there is always room


class Counting(links.Callback):
    def __init__(self, tally: Tally) -> None:
        self.add = tally.add

    def on_recv(self, con_id: Any, msg: Any) -> None:
        self.add(1, len(msg))


def serve(ctl: Control, params: Params) -> None:
    quiet_logs()
    tally = Tally(ctl, params)
    protocol = RawEcho if params.workload == "w2" else Raw
    poll = links.PollHandler("links-busy-poll", busy_poll=BUSY_POLL_S) if params.variant.endswith("_busy") else None
    tls = tls_server_context(params.tls) if params.tls else None
    channels = {"mux": True, "max_channels": params.clients + 16} if params.mux else {}
    svc = links.Svc.bind(f"{HOST}:0", protocol=protocol, callback=Counting(tally),
                         max_connections=params.clients + 16, poll_handler=poll, tls=tls, **channels)  # fmt: skip
    svc.into_sender_with_spawned_recver()
    ctl.send(port=svc.local_addr[1])
    ctl.wait_for("stop")
    tally.final()
    svc.close()
    if poll is not None:
        poll.shutdown()
    links.shutdown()


def _connect(port: int, params: Params, callback: links.Callback | None = None) -> links.Clt:
    if params.mux:  # the client's own handle keeps the shared connection open (``client``)
        with links.mux.connect(f"{HOST}:{port}", timeout=10) as mux:
            return mux.open(protocol=Raw, callback=callback, timeout=10)
    tls = {"tls": tls_client_context(params.tls), "tls_server_name": TLS_SERVER_NAME} if params.tls else {}
    return links.Clt.connect(f"{HOST}:{port}", protocol=Raw, callback=callback, timeout=10, **tls)


def _seen(con: links.Clt | links.CltSender) -> tuple[str, Any]:
    """What the result says of a connection: its TLS suite and its TCP connection (see the
    module docstring)."""
    return TLS_CIPHER if con.peer_certificate is not None else "", con.con_id.local


def _about(seen: list[tuple[str, Any]]) -> dict[str, Any]:
    """``result["tls"]`` ("" if any connection was not over TLS) and ``result["carriers"]``."""
    return {"tls": min((tls for tls, _ in seen), default=""), "carriers": len({local for _, local in seen})}


def _sender(port: int, params: Params, data: bytes, seen: list[tuple[str, Any]]) -> Callable[[Go], None]:
    def send(go: Go) -> None:
        with _connect(port, params) as clt:
            seen.append(_seen(clt))
            _send(clt, params, data, params.warm)
            go.warmed()
            _send(clt, params, data, params.count)

    return send


def _send(clt: links.Clt, params: Params, data: bytes, n: int) -> None:
    if params.variant == "send_many":
        batch = [data] * params.batch
        full, rest = divmod(n, params.batch)
        send_many = clt.send_many
        for _ in range(full):
            send_many(batch)
        if rest:
            send_many(batch[:rest])
    else:
        send = clt.send
        for _ in range(n):
            send(data)


def _one_thread(ctl: Control, params: Params, port: int, data: bytes) -> dict[str, float]:
    """All connections driven from this one thread, a batch to each in turn."""
    clts = [_connect(port, params) for _ in range(params.clients)]
    seen = [_seen(clt) for clt in clts]
    try:
        round_robin(clts, data, params.warm, params.batch)
        ctl.send(warmed=True)
        ctl.wait_for("go")
        t0 = time.perf_counter()
        round_robin(clts, data, params.count, params.batch)
    finally:
        for clt in clts:
            clt.close()
    return {"sent": params.total, "bytes": params.total * params.size, "received": 0, "t0": t0, **_about(seen)}


def round_robin(clts: list[links.Clt], data: bytes, n: int, batch: int) -> None:
    """``n`` messages to every connection, ``batch`` at a time, connection after connection."""
    full, rest = divmod(n, batch)
    many, tail = [data] * batch, [data] * rest
    for _ in range(full):
        for clt in clts:
            clt.send_many(many)
    if rest:
        for clt in clts:
            clt.send_many(tail)


class _Replies(links.Callback):
    def __init__(self) -> None:
        self.event = threading.Event()
        self.last = 0

    def on_recv(self, con_id: Any, msg: Any) -> None:
        self.last = len(msg)
        self.event.set()


def _ping_pong(port: int, params: Params, data: bytes) -> dict[str, Any]:
    """Round trips until done, or until one reply does not come within ``WAIT_S``."""
    rtts, received, clock = [], 0, time.perf_counter_ns
    completed = 0
    if params.variant == "callback":
        replies = _Replies()
        clt = _connect(port, params, replies)
        sender = clt.into_sender_with_spawned_recver()
        seen = _seen(sender)
        send, wait, clear = sender.send, replies.event.wait, replies.event.clear
        for i in range(params.total):
            t0 = clock()
            send(data)
            if not wait(WAIT_S):
                break
            t1 = clock()
            clear()  # safe here: the next reply cannot come before the next send
            completed += 1
            received += replies.last == len(data)
            if i >= params.warm:
                rtts.append((t1 - t0) / 1000)
        sender.close()
    else:
        with _connect(port, params) as clt:
            seen = _seen(clt)
            send, recv = clt.send, clt.recv
            for i in range(params.total):
                t0 = clock()
                send(data)
                msg = recv(WAIT_S)
                t1 = clock()
                if msg is None:
                    break
                completed += 1
                received += len(msg) == len(data)
                if i >= params.warm:
                    rtts.append((t1 - t0) / 1000)
    return {**rtt_result(rtts or [float("nan")], completed, completed * params.size, received), **_about([seen])}


def let_go(mux: links.mux.Mux) -> None:
    """Close the last handle on a ``links.mux`` connection and wait until the connection is
    closed: it closes once its channels have delivered what they owe (``Carrier.finish``),
    which ``links.shutdown()`` would cut short (it stops the connection's reader under
    channels still writing). A client calls it before ``links.shutdown()``.

    Raises:
        TimeoutError: not closed within ``WAIT_S``.
    """
    closed = threading.Event()
    mux.carrier.on_closed(closed.set)
    mux.close()
    if not closed.wait(WAIT_S):
        raise TimeoutError(f"the channels' connection did not finish within {WAIT_S} s")


def client(ctl: Control, params: Params, port: int) -> None:
    quiet_logs()
    data = payload(params.size)
    # Over channels: one connection for the whole run, dialed here, before any sender thread.
    held = links.mux.connect(f"{HOST}:{port}", timeout=10) if params.mux else None
    if params.workload == "w2":
        result = _ping_pong(port, params, data)
    elif params.variant == "one_thread":
        result = _one_thread(ctl, params, port, data)
    else:
        seen: list[tuple[str, Any]] = []
        result = run_senders(ctl, params, _sender(port, params, data, seen))
        result.update(_about(seen))
    if held is not None:
        let_go(held)
    links.shutdown()
    ctl.send(result=result)
    ctl.wait_for("exit")
