"""One conformance suite over the real socket and the in-memory double.

``check_transport`` passing for ``socket.socketpair()`` shows the checks describe a real
socket; passing for ``memory_socket_pair()`` (whole, and cut into 1- and 7-byte chunks) shows
the double behaves the same. The last tests break the double on purpose and expect the suite
to notice, so a suite that checks nothing cannot pass unnoticed.
"""

from __future__ import annotations

import socket

import pytest

from links.testing import MemorySocket, check_transport, memory_socket_pair


@pytest.mark.parametrize(
    "make_pair",
    [
        pytest.param(socket.socketpair, id="socketpair"),
        pytest.param(memory_socket_pair, id="memory"),
        # Byte-by-byte traffic costs a Python call per byte: a small buffer keeps the
        # "bigger than the buffer" frames small enough to stay fast.
        pytest.param(lambda: memory_socket_pair(chunk_size=1, capacity=4096), id="memory-chunk1"),
        pytest.param(lambda: memory_socket_pair(chunk_size=7, capacity=4096), id="memory-chunk7"),
    ],
)
def test_conformance(make_pair):
    check_transport(make_pair)


def test_conformance_where_the_platform_has_no_msg_dontwait(monkeypatch):
    """Real sockets then stay nonblocking and a waiting read polls first (the fallback path)."""
    import links._transport as transport

    monkeypatch.setattr(transport, "_DONTWAIT", 0)
    check_transport(socket.socketpair)


def test_chunk_size_can_be_set_on_each_end_after_creation():
    def make_pair():
        a, b = memory_socket_pair(capacity=4096)
        a.chunk_size, b.chunk_size = 3, 5
        return a, b

    check_transport(make_pair)


class _EofIsNothingYet(MemorySocket):
    """A broken double: reports EOF as "nothing there yet", as a naive fake would."""

    def recv_into(self, buffer, nbytes=0, flags=0):
        n = super().recv_into(buffer, nbytes, flags)
        if n == 0:
            raise BlockingIOError
        return n


class _NeverBlocks(MemorySocket):
    """A broken double: claims to send what does not fit (never says would-block)."""

    def send(self, data, flags=0):
        try:
            return super().send(data, flags)
        except BlockingIOError:
            return len(memoryview(data))


def _broken_pair(cls):
    def make_pair():
        a, b = memory_socket_pair()
        a.__class__ = b.__class__ = cls
        return a, b

    return make_pair


@pytest.mark.parametrize(
    ("cls", "message"),
    [(_EofIsNothingYet, "peer shutdown"), (_NeverBlocks, "full buffer")],
    ids=["eof-as-would-block", "never-blocks"],
)
def test_suite_catches_an_unfaithful_double(cls, message):
    with pytest.raises(AssertionError, match=message):
        check_transport(_broken_pair(cls))
