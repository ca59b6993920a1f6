"""What ``mypy --strict`` tells a user of links: checked by ``tests/test_typing.py``, never run.

Each line marked ``# type: ignore[code]`` is a mistake the annotations must catch: under
``--strict`` an ignore that silences nothing is itself an error, so if links' types grew
loose (``Any`` where a precise type was), the check fails. The unmarked lines must pass.
"""

from __future__ import annotations

from typing import Any

import links
from links.lowlevel import TimerHandle


class Orders(links.Protocol[int, str]):
    """A protocol that names its message types: the hooks are checked against them."""

    def on_send(self, msg: int) -> int | None:
        return msg + 1

    def on_recv(self, msg: str) -> None:
        print(msg.upper())


class WrongHook(links.Protocol[int, str]):
    def on_recv(self, msg: int) -> None:  # type: ignore[override]
        print(msg)


class Untyped(links.Protocol):
    """Without parameters messages are Any: any annotation of the hooks is accepted."""

    def on_recv(self, msg: dict[str, int]) -> None:
        print(msg)


def connect(addr: str) -> links.Clt:
    clt = links.Clt.connect(addr, protocol=Orders, callback=links.StoreCallback(), timeout=1.0)
    status: links.SendStatus = clt.send(1, timeout=0)
    wrong: int = clt.send(1)  # type: ignore[assignment]
    con_id: links.ConId = clt.con_id
    up: bool = clt.is_connected()
    links.Clt.connect(addr, protocol=Orders, timeout="1")  # type: ignore[arg-type]
    links.Clt.connect(addr, protocol=Orders, idle_timeout=1.0, reconnect=links.Backoff(initial=0.1))
    print(status, wrong, con_id, up)
    return clt


def halves(clt: links.Clt) -> None:
    recver, sender = clt.split()
    msg: Any = recver.recv(timeout=0.5)
    sender_ref: links.Ref[links.CltSender] = links.Ref(sender)
    recver_ref: links.Ref[links.CltRecver] = links.Ref(sender)  # type: ignore[arg-type]
    taken: links.SendStatus = sender_ref.send({"n": 1})
    print(msg, recver_ref, taken, sender_ref.con_id)


def service(addr: str) -> None:
    with links.Svc.bind(addr, protocol=Orders, max_connections=2) as svc:
        pool: links.SvcSender = svc.into_sender_with_spawned_recver()
        reached: int = pool.broadcast(1)
        for con_id in pool.con_ids():
            pool.send_to(con_id, 1)
        pool.send_to("someone", 1)  # type: ignore[arg-type]
        print(reached, svc.local_addr[1])


class Deadline(links.Protocol):
    def on_connect(self, con: links.Handle) -> None:
        def expire() -> links.TaskStatus:
            con.close("login_timeout")
            return links.TaskStatus.TERMINATE

        handle: TimerHandle = con.schedule("login", 1.0, expire)
        handle.cancel()
        con.schedule("wrong", 1.0, lambda: None)  # type: ignore[arg-type, return-value]
        timer: links.Timer = con.timer
        print(timer)


def callbacks() -> links.Callback:
    store, counter = links.StoreCallback(), links.CounterCallback()
    arrived: bool = counter.wait_recv(3, timeout=1.0)
    chained: links.ChainCallback = store + counter
    print(arrived)
    return chained


def channels(addr: str) -> None:
    import links.mux

    with links.mux.connect(addr, timeout=2.0, name="orders") as mux:
        chan: links.Clt = mux.open(protocol=Orders, timeout=1.0)
        status: links.SendStatus = chan.send(1)
        sender: links.CltSender = chan.into_sender_with_spawned_recver()
        sender.close()
        mux.open(protocol=Orders, timeout="soon")  # type: ignore[arg-type]
        print(status, mux.con_id)


async def rpc_from_asyncio(addr: str) -> None:
    import asyncio

    import links.aio
    import links.rpc

    server = links.rpc.Server(loop=asyncio.get_running_loop())
    service: links.aio.AsyncRpcService = await links.aio.serve_rpc("127.0.0.1:0", server)
    async with await links.aio.connect_rpc(addr, timeout=1.0) as peer:
        result: Any = await peer.call("add", 1, 2, timeout=1.0)
        pending: asyncio.Future[Any] = peer.call_async("add", 1, 2)
        status: links.SendStatus = await peer.notify("add", 0, 0)
        peer.notify_nowait("add", 0, 0).upper()  # type: ignore[attr-defined]
        again: links.aio.AsyncPeer = links.aio.wrap_rpc(peer.peer)
        print(result, await pending, status, again)
    await service.aclose()
