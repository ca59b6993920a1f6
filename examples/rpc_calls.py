"""Request/response with links.rpc: handlers where they belong, pipelining, deadlines, and the
server calling its client back over the same connection.

The service answers ``add`` on the poll thread (quick, never blocks) and ``slow_square`` on
a thread pool (it sleeps: on the poll thread it would stall every connection). The client
pipelines a hundred calls at once, sees a deadline expire, and answers ``whoami`` when the
server asks it.

Run: python examples/rpc_calls.py
"""

import logging
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor

import structlog

import links.rpc

# The library logs connection events through structlog; keep this example's output short.
structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))


def main() -> None:
    pool = ThreadPoolExecutor(max_workers=8)
    server = links.rpc.Server()  # handlers run on the poll thread, unless they hand work off

    @server.method
    def add(a: int, b: int) -> int:
        return a + b

    def square_slowly(x: int) -> int:
        time.sleep(0.05)
        return x * x

    @server.method
    def slow_square(x: int) -> "Future[int]":
        return pool.submit(square_slowly, x)  # replied when done; other calls go on meanwhile

    client_side = links.rpc.Server({"whoami": lambda: f"a client on {threading.current_thread().name}"})
    svc = links.rpc.serve("127.0.0.1:0", server, name="calc")
    try:
        with links.rpc.connect(f"127.0.0.1:{svc.local_addr[1]}", server=client_side, timeout=1.0) as rpc:
            print("add(2, 3) =", rpc.call("add", 2, 3, timeout=1.0))

            start = time.monotonic()
            squares = [rpc.call_async("slow_square", i, timeout=2.0) for i in range(16)]
            sums = [rpc.call_async("add", i, i, timeout=1.0) for i in range(100)]
            print("100 sums in flight, in order:", [f.result() for f in sums] == [2 * i for i in range(100)])
            print("16 slow squares:", [f.result() for f in squares][-3:], f"in {time.monotonic() - start:.2f}s, not 0.8s")

            try:
                rpc.call("slow_square", 7, timeout=0.01)
            except links.rpc.CallTimeout:
                print("slow_square(7) with a 10 ms deadline: CallTimeout")

            (peer,) = server.peers()
            print("the server asks its client whoami:", peer.call("whoami", timeout=1.0))
    finally:
        svc.close()
        pool.shutdown()
    print("done")


if __name__ == "__main__":
    main()
