"""Request/response from asyncio: async handlers that await a slow backend, without holding
each other back.

A price service answers ``quote(symbol)`` with an ``async def`` handler that awaits a slow
"backend" (``asyncio.sleep``); ``links.aio.serve_rpc`` runs it on this loop, so twenty
quotes asked at once wait for the backend side by side, not one after the other. The client (``links.aio.connect_rpc``) awaits its calls from coroutines; a call given
up by ``asyncio.wait_for`` is retired, so its late answer is dropped. Either side may call
the other: the service asks its client, whose own ``async def`` handler answers on the loop.

Run: python examples/aio_rpc.py
"""

import asyncio
import logging

import structlog

import links
import links.aio
import links.rpc

# The library logs connection events through structlog; keep this example's output short.
structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))

BACKEND_DELAY = 0.05
PRICES = {"ACME": 101.5, "INIT": 12.25}

prices = links.rpc.Server()
waiting = {"now": 0, "most": 0}  # quotes awaiting the backend: now, and at most at once


@prices.method
async def quote(symbol: str) -> float:
    waiting["now"] += 1
    waiting["most"] = max(waiting["most"], waiting["now"])
    await asyncio.sleep(BACKEND_DELAY)  # the backend: the poll thread and other calls go on
    waiting["now"] -= 1
    if symbol not in PRICES:
        raise KeyError(symbol)  # an error reply: the caller gets RemoteError
    return PRICES[symbol]


@prices.method
def symbols() -> list[str]:  # a plain handler: runs on the poll thread, as always
    return sorted(PRICES)


desk = links.rpc.Server()  # what the client answers when the service calls it


@desk.method
async def whoami() -> str:
    await asyncio.sleep(0)
    return "a desk, answering from a coroutine"


async def main() -> None:
    async with await links.aio.serve_rpc("127.0.0.1:0", prices, max_connections=10) as service:
        port = service.local_addr[1]
        async with await links.aio.connect_rpc(f"127.0.0.1:{port}", server=desk, timeout=2.0) as rpc:
            print("symbols:", await rpc.call("symbols", timeout=2.0))

            quotes = await asyncio.gather(*(rpc.call("quote", "ACME", timeout=2.0) for _ in range(20)))
            print(f"20 quotes at once: {set(quotes)}, awaiting the backend side by side: {waiting['most'] > 1}")

            try:
                await rpc.call("quote", "NOPE", timeout=2.0)
            except links.rpc.RemoteError as e:
                print(f"quote('NOPE'): {e.type} {e.message}")

            try:
                await asyncio.wait_for(rpc.call("quote", "INIT"), BACKEND_DELAY / 10)
            except asyncio.TimeoutError:
                print(f"gave up on a quote: retired, {rpc.in_flight} call(s) in flight")

            (client,) = service.peers()  # the service calls its client back
            print("the service asks its client whoami:", await client.call("whoami", timeout=2.0))
    print("done")


if __name__ == "__main__":
    asyncio.run(main())
    links.shutdown()
