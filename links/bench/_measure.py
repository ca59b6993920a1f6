"""One measurement: a server and a client process, pinned, driven and checked by the harness.

How one measurement runs
    Server and client are two fresh processes, pinned before they start
    (``os.sched_setaffinity`` between fork and exec, so the interpreter and every thread it
    starts later stay there). One-way workloads (W1, W3, W4): the client sends ``warm``
    messages per connection and pauses; once the server has counted all of them, the harness
    says ``go``; the client stamps ``t0`` and sends the measured messages; the server stamps
    its ``done`` mark when it has counted the last one. Throughput is the measured messages
    over ``done - t0`` (one system-wide monotonic clock), so every measured message was both
    sent and received inside the window. W2: latencies are timed per round trip in the
    client, warm-up round trips left out. CPU per message: both processes' CPU seconds
    (psutil, read by the harness at ``go``/warm and at ``done``) over the window's messages
    (W2: per round trip). psutil reads CPU time in clock ticks (10 ms), so CPU figures of
    windows under a second are coarse.

    Each measurement is bounded (``timeout``; killed and reported past it) and must pass a
    completion check: the server's final count and bytes equal what the client sent, which is
    the full total (W2: every reply came back whole). A failed check or crash is reported in
    the record and never turned into a number.

Implementations
    An ``Impl`` names a module with ``serve`` and ``client`` (see ``_child``). The two
    built-in ones, ``LINKS`` and ``PLAIN``, are modules of this package; a caller registers
    more by passing ``Impl(name, "/path/to/module.py")`` to the harness, and may subclass
    ``Impl`` to run something that is not Python (``command``), as the C floor in
    ``benchmarks/`` does. ``LINKS_TCP`` is links again under another name: the peer of links
    over channels (``Params.mux``), run in each of the subject's variants.
"""

from __future__ import annotations

import importlib
import json
import os
import select
import subprocess
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ._child import BUSY_POLL_S, Params
from ._python import python_command
from ._tls import TLS_CIPHER

__all__ = [
    "GRACE_S", "LINKS", "LINKS_TCP", "LINKS_VARIANTS", "METRICS", "MUX_VARIANTS", "PLAIN", "TLS_VARIANTS", "VARIANT_LABEL",
    "WORKLOADS",
    "Impl", "check", "measure", "metrics", "workload_params",
]  # fmt: skip

WORKLOADS = ("w1", "w2", "w3", "w4")
LINKS_VARIANTS = {
    "w1": ("send", "send_many", "send_busy"),
    "w2": ("recv", "callback", "recv_busy"),
    "w3": ("send",),
    "w4": ("send", "one_thread"),
}
#: links' variants over TLS (``Params.tls``): the issue's W1, W2 and W3; no W4, no busy polling
TLS_VARIANTS = {
    "w1": ("send", "send_many"),
    "w2": ("recv", "callback"),
    "w3": ("send",),
}
#: links' variants over channels (``Params.mux``), each measured against the same variant over
#: TCP connections of its own (``LINKS_TCP``): W1 batches, W2 ``send`` + ``recv``, W3, and W4's
#: 100 senders as 100 threads and as one thread
MUX_VARIANTS = {
    "w1": ("send_many",),
    "w2": ("recv",),
    "w3": ("send",),
    "w4": ("send", "one_thread"),
}
VARIANT_LABEL = {
    "send": "send()",
    "send_many": "send_many({batch})",
    "one_thread": "send_many({batch}), one thread for all clients",
    "recv": "send+recv",
    "callback": "spawned, callback",
    "send_busy": f"send(), server busy-polls {BUSY_POLL_S * 1e6:.0f} µs",
    "recv_busy": f"send+recv, server busy-polls {BUSY_POLL_S * 1e6:.0f} µs",
}
#: workload -> (metric, unit, higher is better)
METRICS = {
    "w1": [("rate", "msgs/s", True), ("cpu", "CPU µs/msg", False)],
    "w2": [("p50", "p50 µs", False), ("p99", "p99 µs", False), ("cpu", "CPU µs/round trip", False)],
    "w3": [("mbps", "MB/s", True), ("cpu", "CPU µs/msg", False)],
    "w4": [("rate", "msgs/s", True), ("cpu", "CPU µs/msg", False)],
}
GRACE_S = 10.0  # after the client reported, how long the server may take to count the rest


@dataclass(frozen=True)
class Impl:
    """One implementation the harness can measure.

    ``module`` is what the child process loads: a dotted name importable there, or the path
    of a ``.py`` file. Its ``serve`` and ``client`` get ``kwargs`` (one file can serve two
    implementations: asyncio and uvloop). ``requires`` names modules that must import, or the
    harness skips the implementation and says why.
    """

    name: str
    module: str | os.PathLike[str]
    kwargs: Mapping[str, Any] = field(default_factory=dict)
    requires: tuple[str, ...] = ()

    def missing(self) -> str | None:
        """Why this implementation cannot run here (an import error), or None."""
        for name in self.requires:
            try:
                importlib.import_module(name)
            except Exception as e:  # noqa: BLE001 - ImportError, or a broken install failing its own way
                return f"import {name} failed: {e}"
        return None

    def command(self, role: str, params: Params, port: int | None) -> list[str]:
        """The child process's command line; ``port`` is the server's, for the client."""
        args = ["--child", role, os.fspath(self.module), json.dumps(dict(self.kwargs)), params.to_json()]
        # The same links as ours, even when the current directory holds another ``links/``.
        return python_command("links.bench", *args, *([str(port)] if port is not None else []))


LINKS = Impl("links", "links.bench._links")
#: links over TCP, as the peer of links over channels: it runs the subject's variant of each row
LINKS_TCP = Impl("tcp", "links.bench._links")
PLAIN = Impl("plain", "links.bench._plain")


def workload_params(workload: str, scale: float, variant: str, batch: int, tls: str = "", mux: bool = False) -> Params:
    """Sizes at ``scale`` 1: W1 200,000 x 100 B; W2 20,000 round trips; W3 200 x 1 MiB;
    W4 100 clients x 1,000 x 100 B. Warm-up: a tenth more, with floors so tiny scales still
    measure something. ``tls``: the certificates' directory, for a run over TLS; ``mux``:
    links' connections are channels over one TCP connection."""

    def scaled(n: int, least: int) -> int:
        return max(least, round(n * scale))

    if workload == "w1":
        count = scaled(200_000, 1_000)
        return Params("w1", 100, max(1_000, count // 10), count, 1, variant, batch, tls, mux)
    if workload == "w2":
        count = scaled(20_000, 200)
        return Params("w2", 100, max(200, count // 10), count, 1, variant, batch, tls, mux)
    if workload == "w3":
        count = scaled(200, 10)
        return Params("w3", 1 << 20, max(2, count // 10), count, 1, variant, batch, tls, mux)
    count = scaled(1_000, 10)
    return Params("w4", 100, max(1, count // 10), count, 100, variant, batch, tls, mux)


class Failed(Exception):
    pass


class Lines:
    """JSON lines from a child's stdout, read with a deadline."""

    def __init__(self, proc: subprocess.Popen[bytes], who: str) -> None:
        self.fd = proc.stdout.fileno()  # type: ignore[union-attr]
        self.who = who
        self.buf = b""
        self.eof = False

    def ready(self) -> bool:
        return b"\n" in self.buf

    def pop(self) -> dict[str, Any]:
        line, self.buf = self.buf.split(b"\n", 1)
        return json.loads(line)

    def fill(self) -> None:
        chunk = os.read(self.fd, 65536)
        if not chunk:
            self.eof = True
            raise Failed(f"{self.who} exited early")
        self.buf += chunk


def next_line(sources: list[Lines], deadline: float, waiting_for: str) -> tuple[Lines, dict[str, Any]]:
    while True:
        for src in sources:
            if src.ready():
                return src, src.pop()
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise Failed(f"timeout waiting for {waiting_for}")
        readable, _, _ = select.select([s.fd for s in sources], [], [], remaining)
        for src in sources:
            if src.fd in readable:
                src.fill()


def _cpu(proc: Any) -> float:
    times = proc.cpu_times()
    return times.user + times.system


def _spawn(cmd: list[str], cpus: set[int], err: Any) -> subprocess.Popen[bytes]:
    # Pinned before exec, so the interpreter, and every thread it starts later, stays there.
    return subprocess.Popen(
        cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=err,
        preexec_fn=lambda: os.sched_setaffinity(0, cpus),  # noqa: PLW1509 - the harness starts no threads
    )  # fmt: skip


def _tell(proc: subprocess.Popen[bytes], word: str) -> None:
    try:
        proc.stdin.write(word.encode() + b"\n")  # type: ignore[union-attr]
        proc.stdin.flush()  # type: ignore[union-attr]
    except OSError:
        pass  # already gone: the checks below will say what is missing


def _tail(err: Any) -> str:
    err.seek(0)
    text = err.read().decode(errors="replace").strip()
    return text[-1500:]


def measure(impl: Impl, params: Params, cpus: tuple[set[int], set[int]], timeout: float) -> dict[str, Any]:
    """Run one server/client pair; the record has the metrics, or ``error`` and no metrics."""
    import psutil

    record: dict[str, Any] = {"impl": impl.name, "variant": params.variant, "ok": False}
    started = time.monotonic()
    deadline = started + timeout
    procs: list[subprocess.Popen[bytes]] = []
    with tempfile.TemporaryFile() as server_err, tempfile.TemporaryFile() as client_err:
        try:
            server = _spawn(impl.command("server", params, None), cpus[0], server_err)
            procs.append(server)
            s_lines = Lines(server, "server")
            port = next_line([s_lines], deadline, "the server's port")[1]["port"]
            client = _spawn(impl.command("client", params, port), cpus[1], client_err)
            procs.append(client)
            c_lines = Lines(client, "client")
            ps, pc = psutil.Process(server.pid), psutil.Process(client.pid)
            one_way = params.workload != "w2"
            marks: dict[str, dict[str, float]] = {}
            result: dict[str, Any] | None = None
            warmed = False
            reported = 0.0  # when the client's result came
            while "done" not in marks:
                if result is None:
                    _, msg = next_line([s_lines, c_lines], deadline, "the server's count")
                else:  # the client is finished: the rest must arrive soon, or it never will
                    what = f"the server's count after the client finished (client sent {result.get('sent')} of {params.total})"
                    _, msg = next_line([s_lines], min(deadline, reported + GRACE_S), what)
                if "mark" in msg:
                    marks[msg["mark"]] = {"t": msg["t"], "count": msg["count"]}
                    if msg["mark"] == "done" or not one_way:
                        marks[msg["mark"]].update(cpu_server=_cpu(ps), cpu_client=_cpu(pc))
                elif "warmed" in msg:
                    warmed = True
                elif "result" in msg:
                    result, reported = msg["result"], time.monotonic()
                if one_way and warmed and "warm" in marks and "go" not in marks:
                    # every warm-up message has landed and the client is paused: the window opens
                    marks["go"] = {"cpu_server": _cpu(ps), "cpu_client": _cpu(pc)}
                    _tell(client, "go")
            if result is None:
                result = next_line([c_lines], deadline, "the client's result")[1]["result"]
            _tell(server, "stop")
            final = next_line([s_lines], deadline, "the server's final count")[1]["final"]
            _tell(client, "exit")
            record.update(marks=marks, result=result, final=final)
            problems = check(params, marks, result, final)
            if problems:
                raise Failed("completion check failed: " + "; ".join(problems))
            record.update(metrics(params, marks, result), ok=True)
        except Failed as e:
            record["error"] = str(e)
        except Exception as e:  # noqa: BLE001 - a broken peer must not stop the run
            record["error"] = f"{type(e).__name__}: {e}"
        finally:
            for proc in procs:
                _tell(proc, "stop")
                _tell(proc, "exit")
            for proc in procs:
                try:
                    proc.wait(timeout=max(1.0, min(10.0, deadline - time.monotonic())))
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
                    record.setdefault("error", f"pid {proc.pid} did not exit and was killed")
                    record.setdefault("hung", []).append("server" if proc is procs[0] else "client")
                    record["ok"] = False
            for proc in procs:
                for pipe in (proc.stdin, proc.stdout):
                    try:
                        pipe.close()  # type: ignore[union-attr]
                    except OSError:
                        pass
            if not record["ok"]:
                record["stderr_server"] = _tail(server_err)
                record["stderr_client"] = _tail(client_err)
                record["exit_codes"] = [p.returncode for p in procs]
    record["wall_s"] = round(time.monotonic() - started, 3)
    return record


def check(params: Params, marks: dict[str, Any], result: dict[str, Any], final: dict[str, Any]) -> list[str]:
    """The end-to-end completion check: everything sent arrived, exactly once, whole."""
    problems = []
    if result.get("sent") != params.total:
        problems.append(f"client sent {result.get('sent')} of {params.total}")
    if final["count"] != params.total:
        problems.append(f"server counted {final['count']} messages, expected {params.total}")
    if final["bytes"] != params.total * params.size:
        problems.append(f"server counted {final['bytes']} payload bytes, expected {params.total * params.size}")
    if params.workload == "w2" and result.get("received") != params.total:
        problems.append(f"client got {result.get('received')} whole replies of {params.total}")
    if params.tls and result.get("tls") != TLS_CIPHER:
        problems.append(f"the client reported no TLS connection with {TLS_CIPHER} (it said {result.get('tls')!r})")
    if params.mux and result.get("carriers") != 1:
        problems.append(f"the client's channels travelled on {result.get('carriers')} TCP connections, not one")
    if params.workload != "w2" and marks.get("warm", {}).get("count") != params.warm_total:
        problems.append(
            f"server counted {marks.get('warm', {}).get('count')} at the warm mark, expected {params.warm_total}"
        )
    return problems


def metrics(params: Params, marks: dict[str, dict[str, float]], result: dict[str, Any]) -> dict[str, float]:
    """One-way: from the client's ``t0`` at go to the server's done mark. W2: warm to done."""
    done = marks["done"]
    if params.workload == "w2":
        start, n = marks["warm"], done["count"] - marks["warm"]["count"]
        dt = done["t"] - start["t"]
    else:
        start, n = marks["go"], params.total - params.warm_total
        dt = done["t"] - result["t0"]
    server = done["cpu_server"] - start["cpu_server"]
    client = done["cpu_client"] - start["cpu_client"]
    per = 1e6 / n if n else float("nan")
    # The split is in the JSON only: it shows which side was busy (is the load generator the limit?).
    out = {"window_msgs": n, "window_s": dt, "cpu": (server + client) * per, "cpu_server": server * per,
           "cpu_client": client * per}  # fmt: skip
    if params.workload == "w2":
        out.update(p50=result["p50"], p99=result["p99"])
    else:
        out["rate"] = n / dt if dt > 0 else float("nan")
        out["mbps"] = n * params.size / dt / 1e6 if dt > 0 else float("nan")
    return out
