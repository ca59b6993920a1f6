"""links against its peers on workloads W1-W4: one run, interleaved rounds, medians and ratios.

Workloads (4-byte big-endian length prefix; 127.0.0.1, port 0; sizes at ``--scale 1``):

* W1 one-way: 200,000 x 100 B from one client; msgs/s.
* W2 ping-pong: 20,000 x 100 B round trips; p50 and p99 in µs.
* W3 one-way large: 200 x 1 MiB from one client; MB/s (10^6 bytes).
* W4 fan-in: 100 clients x 1,000 x 100 B into one server; msgs/s.

Implementations: links (the subject), the C floor (blocking sockets, built with gcc at run
time, skipped if that fails), plain blocking Python sockets with threads, asyncio streams,
asyncio on uvloop, pyzmq DEALER/ROUTER and Twisted ``Int32StringReceiver``. A peer whose
import fails is skipped and reported. links runs in variants: W1 ``send()`` per message and
``send_many`` batches; W2 ``send`` + ``recv`` on the calling thread, and both receivers
spawned with the client waiting on its callback; W3 and W4 ``send()``. The server is always a
``Svc`` with its acceptor and receivers spawned into the poll thread and a counting callback.

How one measurement runs
    Server and client are two fresh processes, pinned before they start
    (``os.sched_setaffinity``): ``split`` puts the server on the first allowed CPU and the
    client on the second; ``same`` puts both on the first. One-way workloads (W1, W3, W4): the
    client sends ``warm`` messages per connection and pauses; once the server has counted
    all of them, the harness says ``go``; the client stamps ``t0`` and sends the measured
    messages; the server stamps its ``done`` mark when it has counted the last one.
    Throughput is the measured messages over ``done - t0`` (one system-wide monotonic clock),
    so every measured message was both sent and received inside the window. W2: latencies
    are timed per round trip in the client, warm-up round trips left out. CPU per message:
    both processes' CPU seconds (psutil, read by the harness at ``go``/warm and at ``done``)
    over the window's messages (W2: per round trip). psutil reads CPU time in clock ticks
    (10 ms), so CPU figures of windows under a second are coarse.

    Each measurement is bounded (``--timeout``; killed and reported past it) and must pass a
    completion check: the server's final count and bytes equal what the client sent, which is
    the full total (W2: every reply came back whole). A failed check or crash is reported and
    left out of the medians, never turned into a number.

Rounds and ratios
    Each round measures every implementation once per workload and placement, in an order
    that rotates from round to round. The table shows medians over rounds; the ratio is
    links / peer, the median of the per-round ratios (only rounds where both succeeded).
    msgs/s and MB/s: above 1 means links is ahead. µs (latency, CPU): below 1 means links is ahead.

Run: python benchmarks/bench_peers.py [--workloads w1,w2,w3,w4] [--peers c,plain,asyncio,uvloop,zmq,twisted]
     [--rounds 5] [--scale 1.0] [--placement auto|split|same|both] [--json PATH]
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import platform
import select
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
PEER_NAMES = ("c", "plain", "asyncio", "uvloop", "zmq", "twisted")
WORKLOADS = ("w1", "w2", "w3", "w4")
LINKS_VARIANTS = {"w1": ("send", "send_many"), "w2": ("recv", "callback"), "w3": ("send",), "w4": ("send", "one_thread")}
VARIANT_LABEL = {
    "send": "send()",
    "send_many": "send_many({batch})",
    "one_thread": "send_many({batch}), one thread for all clients",
    "recv": "send+recv",
    "callback": "spawned, callback",
}
#: workload -> (metric, unit, higher is better)
METRICS = {
    "w1": [("rate", "msgs/s", True), ("cpu", "CPU µs/msg", False)],
    "w2": [("p50", "p50 µs", False), ("p99", "p99 µs", False), ("cpu", "CPU µs/round trip", False)],
    "w3": [("mbps", "MB/s", True), ("cpu", "CPU µs/msg", False)],
    "w4": [("rate", "msgs/s", True), ("cpu", "CPU µs/msg", False)],
}
GRACE_S = 10.0  # after the client reported, how long the server may take to count the rest


def workload_params(workload: str, scale: float, variant: str, batch: int) -> Any:
    from peers._common import Params

    def scaled(n: int, least: int) -> int:
        return max(least, round(n * scale))

    if workload == "w1":
        count = scaled(200_000, 1_000)
        return Params("w1", 100, max(1_000, count // 10), count, 1, variant, batch)
    if workload == "w2":
        count = scaled(20_000, 200)
        return Params("w2", 100, max(200, count // 10), count, 1, variant, batch)
    if workload == "w3":
        count = scaled(200, 10)
        return Params("w3", 1 << 20, max(2, count // 10), count, 1, variant, batch)
    count = scaled(1_000, 10)
    return Params("w4", 100, max(1, count // 10), count, 100, variant, batch)


# -- one measurement ------------------------------------------------------------------------


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


def _commands(impl: str, role: str, params: Any, floor: str | None, port: int | None) -> list[str]:
    if impl == "c":
        args = [floor, role, params.workload[1], params.size, params.warm, params.count, params.clients]
        return [str(a) for a in (args + ([port] if port is not None else []))]
    cmd = [sys.executable, str(HERE / "bench_peers.py"), "--child", role, impl, params.to_json()]
    return cmd + ([str(port)] if port is not None else [])


def measure(
    impl: str, params: Any, cpus: tuple[set[int], set[int]], floor: str | None, timeout: float
) -> dict[str, Any]:
    """Run one server/client pair; the record has the metrics, or ``error`` and no metrics."""
    import psutil

    record: dict[str, Any] = {"impl": impl, "variant": params.variant, "ok": False}
    started = time.monotonic()
    deadline = started + timeout
    procs: list[subprocess.Popen[bytes]] = []
    with tempfile.TemporaryFile() as server_err, tempfile.TemporaryFile() as client_err:
        try:
            server = _spawn(_commands(impl, "server", params, floor, None), cpus[0], server_err)
            procs.append(server)
            s_lines = Lines(server, "server")
            port = next_line([s_lines], deadline, "the server's port")[1]["port"]
            client = _spawn(_commands(impl, "client", params, floor, port), cpus[1], client_err)
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


def check(params: Any, marks: dict[str, Any], result: dict[str, Any], final: dict[str, Any]) -> list[str]:
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
    if params.workload != "w2" and marks.get("warm", {}).get("count") != params.warm_total:
        problems.append(
            f"server counted {marks.get('warm', {}).get('count')} at the warm mark, expected {params.warm_total}"
        )
    return problems


def metrics(params: Any, marks: dict[str, dict[str, float]], result: dict[str, Any]) -> dict[str, float]:
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


# -- the run ----------------------------------------------------------------------------------


def build_floor(tmp: str) -> tuple[str | None, str]:
    """Compile floor.c into ``tmp``; (path, "") or (None, why not)."""
    cc = shutil.which("gcc") or shutil.which("cc")
    if cc is None:
        return None, "no gcc or cc on PATH"
    exe = os.path.join(tmp, "floor")
    try:
        done = subprocess.run([cc, "-O2", "-pthread", "-o", exe, str(HERE / "peers" / "floor.c")],
                              capture_output=True, timeout=120, check=False)  # fmt: skip
    except (OSError, subprocess.TimeoutExpired) as e:
        return None, f"{cc} failed: {e}"
    if done.returncode != 0:
        return None, f"{cc} failed: {done.stderr.decode(errors='replace').strip()[-300:]}"
    return exe, ""


def placements(choice: str, workload: str) -> list[str]:
    if choice == "auto":
        return ["split", "same"] if workload == "w2" else ["split"]
    return ["split", "same"] if choice == "both" else [choice]


def machine() -> dict[str, Any]:
    model = "?"
    try:
        with open("/proc/cpuinfo") as f:
            model = next((ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")), "?")
    except OSError:
        pass
    return {
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "nproc": os.cpu_count(), "cpu_model": model, "python": f"{platform.python_version()} ({platform.python_implementation()})",
        "platform": platform.platform(), "loadavg_start": os.getloadavg(),
    }  # fmt: skip


def _fmt(value: float, unit: str) -> str:
    if math.isnan(value):
        return "—"
    if unit in ("msgs/s", "MB/s"):
        return f"{value:,.0f}"
    return f"{value:.1f}" if value < 1000 else f"{value:,.0f}"


def table(
    records: list[dict[str, Any]], cases: list[tuple[str, str]], peers: list[str], batch: int
) -> tuple[list[str], list[dict[str, Any]]]:
    """Markdown lines of the results table, and the same rows as data for the JSON file."""
    med = statistics.median
    by: dict[tuple[str, str, str, str], dict[int, dict[str, Any]]] = {}
    for rec in records:
        if rec["ok"]:
            by.setdefault((rec["workload"], rec["placement"], rec["impl"], rec["variant"]), {})[rec["round"]] = rec
    lines = [
        "| workload | metric | placement | links | " + " | ".join(peers) + " |",
        "|---|---|---|---:|" + "---:|" * len(peers),
    ]
    rows = []
    for workload, placement in cases:
        for variant in LINKS_VARIANTS[workload]:
            label = f"{workload.upper()} links {VARIANT_LABEL[variant].format(batch=batch)}"
            mine = by.get((workload, placement, "links", variant), {})
            for metric, unit, _higher in METRICS[workload]:
                row = {"workload": workload, "variant": variant, "placement": placement, "metric": metric, "unit": unit,
                       "links": med([r[metric] for r in mine.values()]) if mine else None, "peers": {}}  # fmt: skip
                cells = []
                for peer in peers:
                    theirs = by.get((workload, placement, peer, ""), {})
                    value = med([r[metric] for r in theirs.values()]) if theirs else None
                    pairs = [
                        mine[k][metric] / theirs[k][metric] for k in mine.keys() & theirs.keys() if theirs[k][metric]
                    ]
                    ratio = med(pairs) if pairs else None
                    row["peers"][peer] = {"value": value, "ratio": ratio, "rounds": len(pairs)}
                    cells.append(
                        "—" if value is None else _fmt(value, unit) + ("" if ratio is None else f" ({ratio:.2f})")
                    )
                links_cell = "FAILED" if row["links"] is None else _fmt(row["links"], unit)
                lines.append(f"| {label} | {unit} | {placement} | {links_cell} | " + " | ".join(cells) + " |")
                rows.append(row)
    return lines, rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--workloads", default=",".join(WORKLOADS), help="comma list of w1..w4 (default all)")
    parser.add_argument(
        "--peers",
        default=",".join(PEER_NAMES),
        help=f"comma list of {','.join(PEER_NAMES)} (default all; links always runs)",
    )
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds (default 5)")
    parser.add_argument("--scale", type=float, default=1.0, help="message counts x SCALE (e.g. 0.1 for a quick run)")
    parser.add_argument("--placement", choices=("auto", "split", "same", "both"), default="auto",
                        help="split: server CPU a, client CPU b; same: both on CPU a; auto (default): split, plus same for W2")  # fmt: skip
    parser.add_argument("--batch", type=int, default=64, help="links send_many batch size for W1 (default 64)")
    parser.add_argument("--timeout", type=float, default=None, help="seconds per measurement (default 20 + 30 x scale)")
    parser.add_argument(
        "--json", default=os.path.join(tempfile.gettempdir(), "bench_peers.json"), help="raw rounds go here"
    )
    args = parser.parse_args(argv)

    workloads = [w.strip().lower() for w in args.workloads.split(",") if w.strip()]
    wanted = [p.strip().lower() for p in args.peers.split(",") if p.strip() and p.strip().lower() != "links"]
    for name, known in (("workload", WORKLOADS), ("peer", PEER_NAMES)):
        for item in workloads if name == "workload" else wanted:
            if item not in known:
                parser.error(f"unknown {name} {item!r}; choose from {', '.join(known)}")
    timeout = args.timeout if args.timeout is not None else 20 + 30 * args.scale

    import peers

    cpus = sorted(os.sched_getaffinity(0))
    pins = {"split": ({cpus[0]}, {cpus[-1] if len(cpus) > 1 else cpus[0]}), "same": ({cpus[0]}, {cpus[0]})}
    notes = []
    if len(cpus) < 2:
        notes.append(f"only one CPU allowed ({cpus[0]}): 'split' runs both processes on it")
    skipped: dict[str, str] = {}
    tmp = tempfile.TemporaryDirectory(prefix="bench_peers-")
    floor = None
    if "c" in wanted:
        floor, why = build_floor(tmp.name)
        if floor is None:
            skipped["c"] = why
    for peer in wanted:
        if peer != "c":
            why = peers.missing(peer)
            if why is not None:
                skipped[peer] = why
    peer_list = [p for p in wanted if p not in skipped]
    for peer, why in skipped.items():
        print(f"skipping {peer}: {why}", file=sys.stderr)

    cases = [(w, pl) for w in workloads for pl in placements(args.placement, w)]
    meta = {
        "command": " ".join([os.path.basename(sys.executable), "benchmarks/bench_peers.py"] + (argv if argv is not None else sys.argv[1:])),
        "machine": machine(), "rounds": args.rounds, "scale": args.scale, "batch": args.batch, "timeout_s": timeout,
        "placements": {k: {"server_cpus": sorted(v[0]), "client_cpus": sorted(v[1])} for k, v in pins.items()},
        "params": {w: workload_params(w, args.scale, "", args.batch).__dict__ for w in workloads},
        "peers": peer_list, "skipped": skipped, "notes": notes,
    }  # fmt: skip
    records: list[dict[str, Any]] = []
    started = time.monotonic()
    try:
        for r in range(args.rounds):
            for workload, placement in cases:
                units = [("links", v) for v in LINKS_VARIANTS[workload]] + [(p, "") for p in peer_list]
                k = r % len(units)
                for impl, variant in units[k:] + units[:k]:  # a different implementation goes first each round
                    params = workload_params(workload, args.scale, variant, args.batch)
                    rec = measure(impl, params, pins[placement], floor, timeout)
                    rec.update(round=r, workload=workload, placement=placement)
                    records.append(rec)
                    _progress(rec, r, args.rounds)
    finally:
        tmp.cleanup()

    lines, rows = table(records, cases, peer_list, args.batch)
    meta["wall_s"] = round(time.monotonic() - started, 1)
    meta["machine"]["loadavg_end"] = os.getloadavg()
    print(f"\n{args.rounds} rounds, scale {args.scale}, {meta['wall_s']:.0f} s; placement split = server CPU "
          f"{cpus[0]}, client CPU {min(pins['split'][1])}; same = both on CPU {cpus[0]}.")  # fmt: skip
    print("Cells: median over rounds (links / peer ratio, median of per-round ratios). "
          "msgs/s, MB/s: ratio > 1 = links ahead; µs: ratio < 1 = links ahead.\n")  # fmt: skip
    print("\n".join(lines))
    failures = [rec for rec in records if not rec["ok"]]
    if skipped:
        print("\nSkipped: " + "; ".join(f"{p} ({why})" for p, why in skipped.items()))
    if failures:
        print(f"\n{len(failures)} failed measurement(s), left out of the medians:")
        for rec in failures:
            impl = rec["impl"] + (f"[{rec['variant']}]" if rec["variant"] else "")
            print(f"  round {rec['round'] + 1} {rec['workload'].upper()} {rec['placement']} {impl}: {rec['error']}")
    with open(args.json, "w") as f:
        json.dump({"meta": meta, "table": rows, "records": records}, f, indent=1)
    print(f"\nraw rounds: {args.json}")
    return 1 if any(rec["impl"] == "links" for rec in failures) else 0


def _progress(rec: dict[str, Any], r: int, rounds: int) -> None:
    impl = rec["impl"] + (f"[{rec['variant']}]" if rec["variant"] else "")
    head = f"round {r + 1}/{rounds} {rec['workload'].upper()} {rec['placement']:5} {impl:18}"
    if not rec["ok"]:
        print(f"{head} FAILED: {rec['error']}", file=sys.stderr)
        return
    if rec["workload"] == "w2":
        value = f"p50 {rec['p50']:.1f} µs p99 {rec['p99']:.1f} µs"
    elif rec["workload"] == "w3":
        value = f"{rec['mbps']:,.0f} MB/s"
    else:
        value = f"{rec['rate']:,.0f} msgs/s"
    print(f"{head} {value}, CPU {rec['cpu']:.2f} µs/msg ({rec['wall_s']:.1f} s)", file=sys.stderr)


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        import peers

        sys.exit(peers.child_main(sys.argv[2:]))
    sys.exit(main())
