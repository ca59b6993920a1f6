"""A chat room served from asyncio: every message a member sends reaches every member.

``links.aio.serve`` runs one handler task per connection; the handler reads with ``async for``
and hands each line to the whole room with ``server.broadcast``. Three clients connect with
``links.aio.connect``, say one line each, and read the room until they heard all three. The
poll thread moves the bytes; the loop only sees messages. Then one member leaves: its
handler's ``async for`` ends, its connection closes, and the room carries on.

Run: python examples/aio_chat.py
"""

import asyncio
import logging
from typing import Any

import structlog

import links
import links.aio

# The library logs connection events through structlog; keep this example's output short.
structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))


class Chat(links.Protocol[dict[str, Any], dict[str, Any]]):
    framer = links.LengthPrefixFramer(header_size=4)
    messenger = links.JsonMessenger()


async def main() -> None:
    server: links.aio.AsyncServer | None = None

    async def member(conn: links.aio.AsyncClt) -> None:
        async for msg in conn:  # until this member leaves
            assert server is not None
            server.broadcast({"from": msg["name"], "text": msg["text"]})

    server = await links.aio.serve("127.0.0.1:0", protocol=Chat, handler=member, max_connections=10)
    addr = f"127.0.0.1:{server.local_addr[1]}"
    async with server:
        names = ["ann", "bob", "cy"]
        clts = [await links.aio.connect(addr, protocol=Chat, timeout=2.0, name=n) for n in names]
        while len(server.con_ids()) < len(names):  # every member's handler has joined
            await asyncio.sleep(0.01)
        for name, clt in zip(names, clts):
            await clt.send({"name": name, "text": f"hi, I am {name}"})
        for name, clt in zip(names, clts):
            heard = [await asyncio.wait_for(clt.recv(), 5.0) for _ in names]
            print(f"{name} heard: {sorted(m['from'] for m in heard)}")

        # A member leaves: its handler's async for ends, and the room goes on without it.
        await clts[2].aclose()
        while len(server.con_ids()) > 2:
            await asyncio.sleep(0.01)
        await clts[0].send({"name": "ann", "text": "bye cy"})
        print("bob heard:", (await asyncio.wait_for(clts[1].recv(), 5.0))["text"])
        for clt in clts:
            await clt.aclose()


asyncio.run(main())
links.shutdown()  # stop the default poll and timer threads (also done at exit)
print("done")
