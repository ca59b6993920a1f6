"""The child process's side of a measurement: parameters, the control channel, the tally, framing.

Every implementation (the built-in ``links`` and ``plain``, and any a caller registers) is a
module with ``serve(ctl, params, **kwargs)`` and ``client(ctl, params, port, **kwargs)``. The
harness runs each role in its own pinned process as ``links.bench --child ...`` (started
with ``python_command``, so it imports the parent's ``links`` whatever the current
directory); ``child_main`` loads the module (a dotted name, or a ``.py`` file on disk for implementations
that live outside the package, such as the peers in ``benchmarks/system/peers/``) and calls it.
Everything an implementation needs from the harness is here, re-exported by ``links.bench``.

The control channel
    The harness talks to each child process over its stdin/stdout, one JSON object per line.
    A child's real stdout is kept for that channel alone (``Control`` duplicates it and points
    fd 1 at stderr), so a library that prints or logs to stdout cannot corrupt it.

    server → harness: ``{"port": N}`` once listening; ``{"mark": "warm", ...}`` and
    ``{"mark": "done", ...}`` as the count of received messages crosses the warm-up and the
    total; after the harness writes ``stop``, ``{"final": {"count": .., "bytes": ..}}``.

    client → harness (one-way workloads): ``{"warmed": true}`` once every connection has sent
    its warm-up messages; it then waits for ``go``. At the end ``{"result": {"sent": ..,
    "bytes": .., "received": .., "t0": ..}}``, once its connections are closed; then it waits
    for ``exit``, so the harness can still read its CPU time. Over TLS (``Params.tls``) the
    result also says the suite the client's connection negotiated: ``"tls": "ECDHE-..."``; over
    channels (``Params.mux``), how many TCP connections its connections travelled on:
    ``"carriers": 1``.

How a one-way window is timed
    The client pauses after its warm-up; the harness says ``go`` only when the server has
    counted every warm-up message, so the window starts with an empty pipe. The client
    stamps ``t0`` as it resumes and the server stamps its ``done`` mark when the last message
    is counted: every measured message is both sent and received inside the window, so a
    sender that only fills socket buffers is not counted as fast, nor a receiver that drains
    a backlog. Both stamps are ``time.perf_counter()`` (C: ``CLOCK_MONOTONIC``), one
    system-wide clock on Linux.
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import os
import socket
import struct
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from types import ModuleType

HOST = "127.0.0.1"
HEADER = struct.Struct("!I")
#: Frames up to this size are accepted by every peer (W3 sends 1 MiB payloads).
MAX_FRAME = 1 << 21
#: links' busy variants (W1 ``send_busy``, W2 ``recv_busy``): the server's ``busy_poll`` window,
#: longer than a loopback round trip here
BUSY_POLL_S = 50e-6


@dataclass(frozen=True)
class Params:
    """One measurement, as both processes see it. Counts are per connection."""

    workload: str  # "w1" one-way, "w2" ping-pong, "w3" one-way large, "w4" many clients
    size: int  # payload bytes
    warm: int  # messages (W2: round trips) per connection before the measured window
    count: int  # measured messages per connection
    clients: int = 1
    variant: str = ""  # links only: "send", "send_many", "one_thread", "recv", "callback"
    batch: int = 64  # links send_many batch size
    tls: str = ""  # over TLS: the directory of the run's certificates (see ``_tls``); "" plaintext
    mux: bool = False  # links only: every connection a channel, all over one TCP connection (``links.mux``)

    @property
    def per_client(self) -> int:
        return self.warm + self.count

    @property
    def total(self) -> int:
        return self.clients * self.per_client

    @property
    def warm_total(self) -> int:
        return self.clients * self.warm

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> Params:
        return cls(**json.loads(text))


def payload(size: int) -> bytes:
    return (bytes(range(256)) * (size // 256 + 1))[:size]


class Control:
    """The child's end of the control channel (see the module docstring)."""

    def __init__(self) -> None:
        self._out = os.fdopen(os.dup(1), "w", buffering=1)
        os.dup2(2, 1)  # anything else printed to stdout goes to stderr
        sys.stdout = sys.stderr
        self._lock = threading.Lock()

    def send(self, **obj: object) -> None:
        with self._lock:
            self._out.write(json.dumps(obj) + "\n")
            self._out.flush()

    def wait_for(self, word: str) -> None:
        """Block until the harness writes ``word`` (or closes stdin)."""
        for line in sys.stdin:
            if line.strip() == word:
                return

    def on_line(self, word: str, then: Callable[[], None]) -> threading.Thread:
        """Call ``then`` from a helper thread when ``word`` arrives: for event-loop servers."""

        def watch() -> None:
            self.wait_for(word)
            then()

        thread = threading.Thread(target=watch, name=f"ctl-{word}", daemon=True)
        thread.start()
        return thread


class Go:
    """The pause between warm-up and the measured window, for clients with one thread per connection.

    Each sender thread calls ``warmed()`` after its warm-up messages and blocks there; the main
    thread's ``release()`` waits for all of them, tells the harness, waits for ``go``, stamps
    ``t0`` and lets them run. A sender that fails calls ``fail()`` so nobody waits forever.
    """

    def __init__(self, ctl: Control, parties: int) -> None:
        self.ctl = ctl
        self._warmed = threading.Barrier(parties + 1, timeout=120)
        self._go = threading.Event()
        self.t0 = 0.0

    def warmed(self) -> None:
        self._warmed.wait()
        self._go.wait()

    def fail(self) -> None:
        self._warmed.abort()

    def release(self) -> float:
        self._warmed.wait()
        self.ctl.send(warmed=True)
        self.ctl.wait_for("go")
        self.t0 = time.perf_counter()
        self._go.set()
        return self.t0


def run_senders(ctl: Control, params: Params, send: Callable[[Go], None]) -> dict[str, float]:
    """``params.clients`` threads, each running ``send(go)``: connect, send ``params.warm``
    messages, ``go.warmed()``, send ``params.count`` more, close. Returns the one-way result."""
    go = Go(ctl, params.clients)
    sent: list[int] = []

    def run() -> None:
        try:
            send(go)
        except BaseException:
            go.fail()
            raise
        sent.append(params.per_client)  # only a thread that got through reports its messages as sent

    threads = [threading.Thread(target=run, name=f"sender-{i}") for i in range(params.clients)]
    for t in threads:
        t.start()
    t0 = go.release()
    for t in threads:
        t.join()
    return {"sent": sum(sent), "bytes": sum(sent) * params.size, "received": 0, "t0": t0}


class Tally:
    """The server's count of received messages; reports the warm and done marks once each.

    ``add`` is called from one thread at a time (an event loop, the links poll thread); the
    thread-per-connection servers call it under their own lock.
    """

    def __init__(self, ctl: Control, params: Params) -> None:
        self.ctl = ctl
        self.count = 0
        self.bytes = 0
        self._marks = [("warm", params.warm_total), ("done", params.total)]
        self._next = self._marks[0][1]

    def add(self, n: int, nbytes: int) -> None:
        self.count += n
        self.bytes += nbytes
        if self.count >= self._next:
            self._mark()

    def _mark(self) -> None:
        t = time.perf_counter()
        while self._marks and self.count >= self._marks[0][1]:
            name, _ = self._marks.pop(0)
            self.ctl.send(mark=name, t=t, count=self.count)
        self._next = self._marks[0][1] if self._marks else float("inf")

    def final(self) -> None:
        self.ctl.send(final={"count": self.count, "bytes": self.bytes})


def read_frames(
    sock: socket.socket, on_frame: Callable[[bytes], None], size: int, on_batch: Callable[[], None] | None = None
) -> None:
    """Blocking read loop until EOF: ``recv_into`` one kept buffer, cut frames, copy each out.

    This is the plain loop a careful user writes by hand; ``on_batch`` runs after the frames
    of each read (the counting servers report there, once per read rather than per frame).
    """
    cap = max(1 << 18, 2 * (size + HEADER.size) + (1 << 16))
    buf = bytearray(cap)
    view = memoryview(buf)
    start = end = 0
    unpack = HEADER.unpack_from
    while True:
        if cap - end < 1 << 16:  # keep 64 KiB free for the next read: move the tail down
            buf[: end - start] = buf[start:end]
            start, end = 0, end - start
        got = sock.recv_into(view[end:])
        if not got:
            return
        end += got
        while end - start >= 4:
            (length,) = unpack(buf, start)
            stop = start + 4 + length
            if stop > end:
                break
            on_frame(bytes(view[start + 4 : stop]))
            start = stop
        if start == end:
            start = end = 0
        if on_batch is not None:
            on_batch()


def recv_exact(sock: socket.socket, view: memoryview) -> None:
    """Fill ``view`` from a blocking ``sock``; ``ConnectionError`` if the peer closes first."""
    got = 0
    while got < len(view):
        n = sock.recv_into(view[got:])
        if not n:
            raise ConnectionError("peer closed")
        got += n


def percentile(values: list[float], p: float) -> float:
    """The same rank rule as the C floor: ``sorted[min(n - 1, int(p / 100 * n))]``."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))]


def rtt_result(rtts_us: list[float], sent: int, nbytes: int, received: int) -> dict[str, float]:
    return {"sent": sent, "bytes": nbytes, "received": received,
            "p50": percentile(rtts_us, 50), "p99": percentile(rtts_us, 99)}  # fmt: skip


def load_module(module: str) -> ModuleType:
    """A dotted module name, or a path to a ``.py`` file (loaded under a name of its own)."""
    if not module.endswith(".py"):
        return importlib.import_module(module)
    path = Path(module)
    # A private name, so a file called after a library (``zmq.py``) cannot shadow that library.
    name = f"_links_bench_{path.stem}"
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load {module}")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod
    spec.loader.exec_module(mod)
    return mod


def child_main(argv: list[str]) -> int:
    """``server MODULE KWARGS_JSON PARAMS_JSON`` or ``client MODULE KWARGS_JSON PARAMS_JSON PORT``."""
    role, module, kwargs_json, params_json, *rest = argv
    ctl = Control()  # first: stdout belongs to the control channel from here on
    params = Params.from_json(params_json)
    kwargs = json.loads(kwargs_json)
    impl = load_module(module)
    if role == "server":
        impl.serve(ctl, params, **kwargs)
    else:
        impl.client(ctl, params, int(rest[0]), **kwargs)
    sys.stderr.flush()
    return 0
