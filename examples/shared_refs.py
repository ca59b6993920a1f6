"""Share one connection's sender across threads with ``links.Ref``.

A ``Ref`` guards its target with a lock, so frames from different threads never interleave,
and its clones share that lock and the connection: closing any clone closes it for all.
Here three threads send through clones of one sender Ref; the service counts and checks
that each thread's messages arrived in the order that thread sent them.

Run: python examples/shared_refs.py
"""

import logging
import threading
from collections import defaultdict

import structlog

import links

structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))


class Json(links.Protocol):
    framer = links.LengthPrefixFramer(header_size=4)
    messenger = links.JsonMessenger()


THREADS, EACH = 3, 1000
counter = links.CounterCallback()
store = links.StoreCallback()

with links.Svc.bind("127.0.0.1:0", protocol=Json, callback=counter + store) as svc:
    svc.into_sender_with_spawned_recver()
    clt = links.Clt.connect(f"127.0.0.1:{svc.local_addr[1]}", protocol=Json)
    ref = clt.into_sender_with_spawned_recver_ref()  # a Ref[CltSender]

    def worker(sender: links.Ref[links.CltSender], name: str) -> None:
        for n in range(EACH):
            sender.send({"from": name, "n": n})

    threads = [threading.Thread(target=worker, args=(ref.clone(), f"t{i}")) for i in range(THREADS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()

    assert counter.wait_recv(THREADS * EACH, timeout=10.0)
    print(f"service received {counter.recv_count} messages from {THREADS} threads over one connection")

    # Interleaved between threads, but in order within each thread.
    seen = defaultdict(list)
    for msg in store.recv_msgs():
        seen[msg["from"]].append(msg["n"])
    for name, numbers in sorted(seen.items()):
        print(f"  {name}: {len(numbers)} messages, in order: {numbers == list(range(EACH))}")

    # Closing one clone closes the shared connection for every holder.
    other = ref.clone()
    ref.close()
    print("after ref.close(): other clone connected =", other.is_connected())
    try:
        other.send({"late": True})
    except links.ClosedError as e:
        print("other clone's send raises ClosedError:", e)

links.shutdown()
print("done")
