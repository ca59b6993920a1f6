"""``links.testing``: the test kit users get with the library.

* ``memory_socket_pair()``: in-memory nonblocking sockets with fault hooks (chunking,
  would-block, EOF, reset), for driving ``Transport``/``Clt`` without the network, on user
  threads or a poll thread (each end's fd reports its readiness);
* ``check_transport(make_pair)``: the conformance suite that proves a socket-like (the
  in-memory double, or your own) behaves like a real socket;
* ``FakeClock``: time that moves only when the test says so;
* ``FaultProxy``: a TCP proxy on loopback that pauses, delays, drops (FIN), resets (RST),
  cuts mid-frame, chunks writes and refuses connections on command, for chaos tests;
* ``Simulator``: the shipped ``Clt`` and ``Svc`` with ``session=`` over memory sockets and a
  seeded, simulated network with cuts, delays and late-noticed failures on a fake clock; a
  failure replays from its seed;
* ``run_chaos()``: a resumable session cut at random through a ``FaultProxy``, every
  message accounted for (``ChaosResult``); what ``links chaos`` runs;
* a sample protocol (Ping/Pong behind a login, with heartbeats: ``SampleClient``,
  ``SampleServer``) and its messages (``SampleMessage`` is their union, carried as JSON by
  ``SampleMessenger``).

The waitable callbacks (``StoreCallback``, ``CounterCallback``) live in ``links`` itself.
"""

from ._chaos import ChaosResult as ChaosResult, run_chaos as run_chaos
from ._clock import FakeClock as FakeClock
from ._conformance import check_transport as check_transport
from ._memory import MemorySocket as MemorySocket, memory_socket_pair as memory_socket_pair
from ._proxy import FaultProxy as FaultProxy, ProxyStats as ProxyStats
from ._simulator import SimResult as SimResult, Simulator as Simulator
from ._sample import (
    Heartbeat as Heartbeat,
    Login as Login,
    LoginAccepted as LoginAccepted,
    LoginFailed as LoginFailed,
    LoginRejected as LoginRejected,
    Ping as Ping,
    Pong as Pong,
    SampleClient as SampleClient,
    SampleMessage as SampleMessage,
    SampleMessenger as SampleMessenger,
    SampleServer as SampleServer,
)

__all__ = [
    "ChaosResult", "FakeClock", "FaultProxy", "Heartbeat", "Login", "LoginAccepted", "LoginFailed", "LoginRejected",
    "MemorySocket", "Ping",
    "Pong", "ProxyStats", "SampleClient", "SampleMessage", "SampleMessenger", "SampleServer", "SimResult",
    "Simulator", "check_transport",
    "memory_socket_pair", "run_chaos",
]  # fmt: skip
