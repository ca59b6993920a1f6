"""Spawn the receivers into the poll thread and keep only the senders.

The usual shape of a `links` program: nobody calls ``recv()``. Incoming messages reach a
callback on the library's poll thread, and your own thread only sends. Here a service
echoes every message back (from ``send_reply``, on the poll thread), and the client's
callback prints each echo together with the thread that delivered it.

Run: python examples/spawned_recver.py
"""

import logging
import threading
from typing import Any

import structlog

import links

# The library logs connection events through structlog; keep this example's output short.
structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))


class Json(links.Protocol):
    framer = links.LengthPrefixFramer(header_size=4)
    messenger = links.JsonMessenger()


class Echo(Json):
    """The service's protocol: answer every message."""

    def send_reply(self, msg: Any, con: links.Handle) -> None:
        # Runs on the poll thread right after the callback: answer without waiting.
        con.send({"echo": msg}, timeout=0)


class Printer(links.Callback):
    def on_recv(self, con_id: links.ConId, msg: Any) -> None:
        print(f"  {con_id.name} got {msg} on thread {threading.current_thread().name!r}")


store = links.StoreCallback()
with links.Svc.bind("127.0.0.1:0", protocol=Echo) as svc:
    # The acceptor and every accepted receiver now live on the poll thread.
    svc.into_sender_with_spawned_recver()
    addr = f"127.0.0.1:{svc.local_addr[1]}"

    with links.Clt.connect(addr, protocol=Json, callback=Printer() + store, name="clt") as clt:
        # The client's receiver joins the same poll thread; we keep the sender.
        sender = clt.into_sender_with_spawned_recver()
        print(f"sending from thread {threading.current_thread().name!r}")
        for n in range(3):
            sender.send({"n": n})

        # Wait (bounded) for the last echo; StoreCallback keeps everything in order.
        assert store.find_recv(lambda m: m == {"echo": {"n": 2}}, timeout=5.0)
        print("echoes in order:", [m["echo"]["n"] for m in store.recv_msgs()])
        assert len(store.recv_msgs()) == 3
        sender.close()

links.shutdown()  # stop the default poll and timer threads (also done at exit)
print("done")
