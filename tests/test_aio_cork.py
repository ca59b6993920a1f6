"""Sends made in one turn of the loop leave together (``AsyncClt.send`` on a connection the loop
drives: the first is written at once, the rest are queued behind it and written in one go when
the coroutine lets the loop turn, or sooner when the queue is full). What a user checks: every
message arrives, in the order sent, mixed with ``send_many`` and the threaded sender; a reply
to the last of a burst comes (nothing is left unwritten while the sender waits); a close right
after a burst still delivers all of it.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator
import struct

import pytest

import links
import links.aio
from helpers import addr, loop_factories

LOOP_FACTORIES = loop_factories()


class Chat(links.Protocol):
    framer = links.LengthPrefixFramer(header_size=4, max_frame_size=1 << 20)
    messenger = links.JsonMessenger()


async def read_frames(peer: socket.socket, count: int) -> list[object]:
    """``count`` JSON frames from a raw peer socket, read off the loop's thread."""
    import json

    def read() -> list[object]:
        buf, out = bytearray(), []
        peer.settimeout(10.0)
        while len(out) < count:
            chunk = peer.recv(1 << 16)
            if not chunk:
                break
            buf += chunk
            while len(buf) >= 4 and len(buf) >= 4 + struct.unpack_from(">I", buf)[0]:
                n = struct.unpack_from(">I", buf)[0]
                out.append(json.loads(buf[4 : 4 + n]))
                del buf[: 4 + n]
        return out

    return await asyncio.get_running_loop().run_in_executor(None, read)


@contextlib.asynccontextmanager
async def raw_peer() -> AsyncIterator[tuple[links.aio.AsyncClt, socket.socket]]:
    """A links.aio client connected to a raw socket, the peer's end of it."""
    with socket.create_server(("127.0.0.1", 0)) as listener:
        accepting = asyncio.get_running_loop().run_in_executor(None, listener.accept)
        clt = await links.aio.connect(f"127.0.0.1:{listener.getsockname()[1]}", protocol=Chat, timeout=5.0)
        peer, _ = await accepting
        with peer:
            try:
                yield clt, peer
            finally:
                clt.close()


@pytest.mark.asyncio
async def test_a_burst_arrives_whole_and_in_order_with_batches_and_the_threaded_sender() -> None:
    async with raw_peer() as (clt, peer):
        sent = []
        for i in range(3_000):  # no await that yields: all in one turn of the loop
            if i % 500 == 250:
                batch = [{"n": i, "batch": j} for j in range(3)]
                await clt.send_many(batch)
                sent += batch
            elif i % 700 == 350:
                assert clt.sender.send({"n": i, "thread": True}, timeout=0) is links.SendStatus.COMPLETED
                sent.append({"n": i, "thread": True})
            else:
                await clt.send({"n": i})
                sent.append({"n": i})
        assert await read_frames(peer, len(sent)) == sent


async def echo(conn: links.aio.AsyncClt) -> None:
    async for msg in conn:
        await conn.send(msg)


@pytest.mark.asyncio
async def test_the_last_of_a_burst_is_answered_while_its_sender_waits() -> None:
    async with await links.aio.serve("127.0.0.1:0", protocol=Chat, handler=echo) as server:
        async with await links.aio.connect(addr(server), protocol=Chat, timeout=5.0) as clt:
            for burst in (1, 2, 50, 1_000):
                for i in range(burst):
                    await clt.send({"i": i})
                got = [await asyncio.wait_for(clt.recv(), 10.0) for _ in range(burst)]
                assert got == [{"i": i} for i in range(burst)]


@pytest.mark.asyncio
async def test_a_close_right_after_a_burst_delivers_all_of_it() -> None:
    async with raw_peer() as (clt, peer):
        for i in range(2_000):
            await clt.send({"n": i, "pad": "x" * 100})
        await clt.aclose()
        got = await read_frames(peer, 2_001)  # one more than sent: read to the end (EOF)
        assert [m["n"] for m in got] == list(range(2_000))  # type: ignore[index]
