"""Channels (``links.mux``) against links over TCP: throughput, round trip, fairness, memory.

Every figure compares channels with what an application would use without them, side by
side in one run (interleaved rounds, a different side first each round, medians, and the
median of the per-round ratios channel / TCP):

1. Throughput of one channel against one TCP connection: W1 ``send_many(64)`` of 100 B and
   W3 1 MiB ``send()`` (target >= 0.8x).
2. W4: 100 channels over one TCP connection against 100 TCP connections, total msgs/s; 100
   threads calling ``send()``, and one thread handing each a ``send_many(64)`` batch in turn
   (target >= 1.0x).
3. W2 round trip on a channel: the client's ``send`` + ``recv``, the service echoing from
   ``send_reply`` (target p50 <= 1.2x, client and service on CPUs of their own; on one CPU,
   reported).
4. Memory per idle channel: a client process opens ``--channels`` channels on one TCP
   connection to a service process and both report their RSS growth per channel; beside it
   the same count of idle TCP connections (target <= 2 KiB per channel, each side).
5. Fairness: p50 and p99 of 100 B round trips on channel B, alone and while channel A, on the
   same TCP connection, sends 1 MiB messages back to back for all of B's run; beside it the
   same with A and B on TCP connections of their own.

1-3 are the workloads of ``links.bench`` (``run(..., mux=True)``: every connection of the
links client a channel, all of them on one TCP connection, against the same client code over
TCP; the server ``Svc.bind(mux=True)`` or not, receivers spawned, a counting callback). Each
measurement is a server and a client process, pinned (``--placement``), checked end to end
(every message counted, and the channels on one TCP connection). 4 and 5 run in processes
of their own too, started by the same harness (``serve`` and ``client`` below); 5 is pinned
split (server CPU 0, client CPU 1) and checked as W2 is (every round trip whole), and A's
sender is a thread of B's process on both sides of the comparison, so both pay the same
contention for the interpreter.

Run: python benchmarks/system/mux.py [--rounds 5] [--scale 1] [--channels 2000]
     [--parts throughput,fairness,memory] [--workloads w1,w2,w3,w4] [--placement auto] [--json PATH]

Scale: W4 at ``--scale 0.5`` gives each of its 100 threads 500 messages, about one time slice
of the interpreter lock's worth, so the threads barely overlap; a steady state of 100 threads
sending at once needs ``--workloads w4 --scale 10`` (10,000 each, seconds per run). Judge W4
there (``benchmarks/RESULTS.md``, Channels, Run 13).
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import resource
import select
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from typing import Any

import psutil

import links
import links.mux
from links import bench

HERE = os.path.abspath(__file__)
PARTS = ("throughput", "fairness", "memory")
WORKLOADS = ("w1", "w2", "w3", "w4")
#: A's messages in the fairness runs
LOAD_SIZE = 1 << 20
WAIT_S = 30.0
KIB = 1024

# (workload, variant, metric) -> (label, comparison, target); a row without one is reported
TARGETS = {
    ("w1", "send_many", "rate"): ("1. W1 one channel, send_many({batch}) of 100 B", ">=", 0.8),
    ("w3", "send", "mbps"): ("1. W3 one channel, 1 MiB send()", ">=", 0.8),
    ("w4", "send", "rate"): ("2. W4 100 channels on one TCP connection, 100 threads send()", ">=", 1.0),
    ("w4", "one_thread", "rate"): ("2. W4 100 channels on one TCP connection, one thread send_many({batch})", ">=", 1.0),
    ("w2", "recv", "p50"): ("3. W2 round trip, send + recv, echo from send_reply", "<=", 1.2),
}
LABELS = {(w, v): label for (w, v, _), (label, _, _) in TARGETS.items()}
IDLE_TARGET_KIB = 2.0


# -- the child processes (started by the harness as ``links.bench --child ROLE THIS_FILE``) ----


class Pings(bench.Raw):
    """The fairness service: echoes B's pings, takes A's load without answering it."""

    def send_reply(self, msg: Any, con: Any) -> None:
        if len(msg) < LOAD_SIZE:
            con.send(msg)


class PingCount(links.Callback):
    def __init__(self, tally: bench.Tally, size: int) -> None:
        self.tally = tally
        self.size = size

    def on_recv(self, con_id: Any, msg: Any) -> None:
        if len(msg) == self.size:
            self.tally.add(1, len(msg))


def serve(ctl: bench.Control, params: bench.Params) -> None:
    bench.quiet_logs()
    if params.workload == "idle":
        return _idle_server(ctl, params)
    tally = bench.Tally(ctl, params)
    channels = {"mux": True, "max_channels": 16} if params.mux else {}
    svc = links.Svc.bind(f"{bench.HOST}:0", protocol=Pings, callback=PingCount(tally, params.size), max_connections=16, **channels)
    svc.into_sender_with_spawned_recver()
    ctl.send(port=svc.local_addr[1])
    ctl.wait_for("stop")
    tally.final()
    svc.close()
    links.shutdown()


def client(ctl: bench.Control, params: bench.Params, port: int) -> None:
    bench.quiet_logs()
    addr = f"{bench.HOST}:{port}"
    held = links.mux.connect(addr, timeout=10) if params.mux else None
    if params.workload == "idle":
        result = _idle_client(ctl, params, addr, held)
    else:
        result = _fairness_client(params, addr, held)
    if held is not None:
        bench.let_go(held)
    links.shutdown()
    ctl.send(result=result)
    ctl.wait_for("exit")


def _open(addr: str, held: links.mux.Mux | None) -> links.Clt:
    if held is not None:
        return held.open(protocol=bench.Raw, timeout=10)
    return links.Clt.connect(addr, protocol=bench.Raw, timeout=10)


def _fairness_client(params: bench.Params, addr: str, held: links.mux.Mux | None) -> dict[str, Any]:
    """B's round trips, with A sending 1 MiB messages meanwhile when ``params.variant`` is "loaded"."""
    b = _open(addr, held)
    a = _open(addr, held) if params.variant == "loaded" else None
    stop, sent = threading.Event(), [0]

    def load() -> None:
        data = bench.payload(LOAD_SIZE)
        while not stop.is_set():
            if a.send(data, timeout=1.0) is links.SendStatus.COMPLETED:  # type: ignore[union-attr]
                sent[0] += 1

    loader = threading.Thread(target=load, name="load") if a is not None else None
    if loader is not None:
        loader.start()
    data, rtts, received, completed = bench.payload(params.size), [], 0, 0
    clock, window = time.perf_counter_ns, [0, 0, 0, 0]  # t and A's count at B's warm-up end, at B's end
    try:
        for i in range(params.total):
            if i == params.warm:
                window[:2] = clock(), sent[0]
            t0 = clock()
            b.send(data)
            msg = b.recv(WAIT_S)
            t1 = clock()
            if msg is None:
                break
            completed += 1
            received += len(msg) == len(data)
            if i >= params.warm:
                rtts.append((t1 - t0) / 1000)
        window[2:] = clock(), sent[0]
    finally:
        stop.set()
        if loader is not None:
            loader.join()
    cons = [c for c in (a, b) if c is not None]
    carriers = len({c.con_id.local for c in cons})
    for c in cons:
        c.close()
    seconds = (window[2] - window[0]) / 1e9
    moved = (window[3] - window[1]) * LOAD_SIZE
    return {**bench.rtt_result(rtts or [float("nan")], completed, completed * params.size, received),
            "carriers": carriers, "load_mb": moved / 1e6, "load_mbps": moved / 1e6 / seconds if seconds > 0 else 0.0}  # fmt: skip


def _rss() -> int:
    gc.collect()
    return psutil.Process().memory_info().rss


def _all_fds() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def _idle_server(ctl: bench.Control, params: bench.Params) -> None:
    """Serve ``params.count`` idle channels (or connections); report the RSS they added."""
    _all_fds()
    n = params.count
    channels = {"mux": True, "max_channels": n + 16} if params.mux else {}
    # Idle on purpose: no first-message deadline.
    svc = links.Svc.bind(f"{bench.HOST}:0", protocol=bench.Raw, max_connections=n + 16, handshake_timeout=None, backlog=4096, **channels)
    sender = svc.into_sender_with_spawned_recver()
    links.default_poll_handler().sync()
    base = _rss()
    ctl.send(port=svc.local_addr[1])
    ctl.wait_for("count")
    deadline = time.monotonic() + WAIT_S
    while len(sender) < n and time.monotonic() < deadline:
        time.sleep(0.02)  # the last ones are still being accepted: a benchmark, not a test
    links.default_poll_handler().sync()
    ctl.send(idle={"rss": _rss() - base, "count": len(sender)})
    ctl.wait_for("exit")
    svc.close()
    links.shutdown()


def _idle_client(ctl: bench.Control, params: bench.Params, addr: str, held: links.mux.Mux | None) -> dict[str, Any]:
    """Open ``params.count`` channels (or connections) and keep them idle; the RSS they added."""
    _all_fds()
    base = _rss()  # with channels: after the TCP connection they share was made
    cons = [_open(addr, held) for _ in range(params.count)]
    links.default_poll_handler().sync()
    grown = _rss() - base
    ctl.send(opened=len(cons))
    ctl.wait_for("measured")  # the service counts them while they are all open
    for con in cons:
        con.close()
    return {"rss": grown, "count": len(cons)}


# -- the parent: running the parts --------------------------------------------------------


class Child:
    """One child process and its JSON lines, read with a deadline."""

    def __init__(self, command: list[str]) -> None:
        self.err = tempfile.TemporaryFile()  # a file, not a pipe: a child that logs a lot never blocks on it
        self.proc = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.err)
        self.buf = b""

    def line(self, deadline: float) -> dict[str, Any]:
        fd = self.proc.stdout.fileno()  # type: ignore[union-attr]
        while b"\n" not in self.buf:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([fd], [], [], left)[0]:
                raise TimeoutError("no answer from a child process in time")
            chunk = os.read(fd, 65536)
            if not chunk:
                self.err.seek(0)
                raise RuntimeError(f"a child process exited early: {self.err.read().decode(errors='replace')[-1500:]}")
            self.buf += chunk
        line, self.buf = self.buf.split(b"\n", 1)
        return json.loads(line)

    def tell(self, word: str) -> None:
        try:
            self.proc.stdin.write(word.encode() + b"\n")  # type: ignore[union-attr]
            self.proc.stdin.flush()  # type: ignore[union-attr]
        except OSError:
            pass

    def end(self) -> None:
        self.tell("exit")
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        for pipe in (self.proc.stdin, self.proc.stdout, self.err):
            pipe.close()  # type: ignore[union-attr]


def idle_round(count: int, mux: bool, timeout: float) -> dict[str, Any]:
    """KiB per idle channel (``mux``) or connection, on each side; ``error`` if it failed."""
    params = bench.Params("idle", 0, 0, count, 1, "", mux=mux)
    impl = bench.Impl("idle", HERE)
    deadline = time.monotonic() + timeout
    server = Child(impl.command("server", params, None))
    children = [server]
    try:
        port = server.line(deadline)["port"]
        client_ = Child(impl.command("client", params, port))
        children.append(client_)
        opened = client_.line(deadline)["opened"]
        server.tell("count")
        served = server.line(deadline)["idle"]
        client_.tell("measured")
        grown = client_.line(deadline)["result"]
        if opened != count or served["count"] != count:
            raise RuntimeError(f"{opened} opened, {served['count']} served, of {count}")
        return {"mux": mux, "ok": True, "client_kib": grown["rss"] / count / KIB, "server_kib": served["rss"] / count / KIB}
    except (TimeoutError, RuntimeError, KeyError) as e:
        return {"mux": mux, "ok": False, "error": f"{type(e).__name__}: {e}"}
    finally:
        for child in children:
            child.end()


def fairness_params(scale: float, mux: bool, loaded: bool) -> bench.Params:
    count = max(200, round(5_000 * scale))
    return bench.Params("w2", 100, max(20, count // 10), count, 1, "loaded" if loaded else "idle", mux=mux)


def run_rounds(cases: list[Any], rounds: int, measure: Any, progress: Any) -> list[dict[str, Any]]:
    """Every case once per round, a different one first each round."""
    records = []
    for r in range(rounds):
        k = r % len(cases)
        for case in cases[k:] + cases[:k]:
            rec = measure(case)
            rec["round"] = r
            records.append(rec)
            progress(rec)
    return records


def ratio(pairs: list[tuple[float, float]]) -> float | None:
    """The median of per-round ratios, over the rounds where both sides measured."""
    values = [a / b for a, b in pairs if b]
    return statistics.median(values) if values else None


def med(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


def _num(value: float | None, digits: int = 1) -> str:
    if value is None:
        return "FAILED"
    return f"{value:,.0f}" if value >= 1000 else f"{value:.{digits}f}"


def _status(value: float | None, how: str, target: float) -> str:
    if value is None:
        return "FAILED"
    return "met" if (value >= target if how == ">=" else value <= target) else "not met"


def throughput_table(rows: list[dict[str, Any]], batch: int) -> list[str]:
    lines = ["| figure | metric | placement | channel | TCP | channel / TCP | target | status |",
             "|---|---|---|---:|---:|---:|---|---|"]  # fmt: skip
    for row in rows:
        key = (row["workload"], row["variant"], row["metric"])
        label = LABELS[key[:2]].format(batch=batch)
        tcp = row["peers"]["tcp"]
        r = tcp["ratio"]
        # A target is judged with the processes on CPUs of their own, as every W2 target of
        # this project is (vs_peers.py, aio.py): on one CPU a round trip is the sum of both
        # processes' CPU, reported.
        if key in TARGETS and row["placement"] == "split":
            _, how, target = TARGETS[key]
            goal, status = f"{how} {target}", _status(r, how, target)
        else:
            goal, status = "reported", "reported" if r is not None else "no ratio (0 CPU ticks in a window)"
        cells = [label, row["unit"], row["placement"], _num(row["links"]), _num(tcp["value"]),
                 "FAILED" if row["links"] is None or tcp["value"] is None else (f"{r:.2f}" if r is not None else "n/a"), goal, status]  # fmt: skip
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def fairness_table(records: list[dict[str, Any]]) -> list[str]:
    lines = ["| B's 100 B round trips | p50 µs, A idle | p50 µs, A loading | p50 loading / idle | p99 µs, A idle | p99 µs, A loading "
             "| p99 loading / idle | A's load during B's run |",
             "|---|---:|---:|---:|---:|---:|---:|---:|"]  # fmt: skip
    for mux, name in ((True, "5. channels A and B on one TCP connection"), (False, "two TCP connections (reference)")):
        by = {(rec["round"], rec["variant"]): rec for rec in records if rec["ok"] and rec["mux"] == mux}
        cells = [name]
        for metric in ("p50", "p99"):
            idle = [rec[metric] for (_, v), rec in by.items() if v == "idle"]
            loaded = [rec[metric] for (_, v), rec in by.items() if v == "loaded"]
            pairs = [(by[(r, "loaded")][metric], by[(r, "idle")][metric]) for r, v in by if v == "idle" and (r, "loaded") in by]
            x = ratio(pairs)
            cells += [_num(med(idle)), _num(med(loaded)), "FAILED" if x is None else f"{x:.2f}"]
        load = med([rec["result"]["load_mbps"] for (_, v), rec in by.items() if v == "loaded"])
        moved = med([rec["result"]["load_mb"] for (_, v), rec in by.items() if v == "loaded"])
        cells.append("FAILED" if load is None else f"{load:,.0f} MB/s ({moved:,.0f} MB)")
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def memory_table(records: list[dict[str, Any]], count: int) -> list[str]:
    lines = [f"| {count:,} idle, one process each side | KiB per channel | KiB per TCP connection (reference) | channel / TCP | target | status |",
             "|---|---:|---:|---:|---|---|"]  # fmt: skip
    for side in ("client", "server"):
        key = f"{side}_kib"
        chan = [rec[key] for rec in records if rec["ok"] and rec["mux"]]
        tcp = [rec[key] for rec in records if rec["ok"] and not rec["mux"]]
        by = {(rec["round"], rec["mux"]): rec[key] for rec in records if rec["ok"]}
        x = ratio([(by[(r, True)], by[(r, False)]) for r, m in by if m and (r, False) in by])
        c = med(chan)
        cells = [f"4. {side}", _num(c, 2), _num(med(tcp), 2), "FAILED" if x is None else f"{x:.2f}",
                 f"<= {IDLE_TARGET_KIB:g} KiB", _status(c, "<=", IDLE_TARGET_KIB)]  # fmt: skip
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds (default 5)")
    parser.add_argument("--scale", type=float, default=1.0, help="message counts x SCALE (as links.bench; fairness: 5,000 round trips at 1)")
    parser.add_argument("--channels", type=int, default=2000, help="idle channels (and TCP connections) for the memory figure (default 2000)")
    parser.add_argument("--parts", default=",".join(PARTS), help=f"comma list of {','.join(PARTS)} (default all)")
    parser.add_argument("--placement", choices=("auto", "split", "same", "both"), default="auto",
                        help="throughput and round trip: as vs_peers.py (auto: split, plus same for W2); fairness runs split")  # fmt: skip
    parser.add_argument("--workloads", default=",".join(WORKLOADS), help="throughput part: comma list of w1,w2,w3,w4 (default all)")
    parser.add_argument("--batch", type=int, default=64, help="send_many batch size (default 64)")
    parser.add_argument("--timeout", type=float, default=None, help="seconds per measurement (default 20 + 30 x scale)")
    parser.add_argument("--json", default=os.path.join(tempfile.gettempdir(), "mux.json"), help="raw rounds go here")
    args = parser.parse_args(argv)
    parts = [p.strip() for p in args.parts.split(",") if p.strip()]
    for part in parts:
        if part not in PARTS:
            parser.error(f"unknown part {part!r}; choose from {', '.join(PARTS)}")
    timeout = args.timeout if args.timeout is not None else 20 + 30 * args.scale
    pins, notes = bench.pinning()
    machine = bench.machine()
    started = time.monotonic()

    def progress(rec: dict[str, Any]) -> None:
        print(f"round {rec['round'] + 1}/{args.rounds} {rec.get('what', '')}: "
              + ("ok" if rec["ok"] else f"FAILED {rec.get('error')}"), file=sys.stderr)  # fmt: skip

    out: dict[str, Any] = {"machine": machine, "args": vars(args), "notes": notes}
    tables: list[tuple[str, list[str]]] = []
    failed = False
    if "throughput" in parts:
        workloads = [w.strip() for w in args.workloads.split(",") if w.strip() in WORKLOADS]
        results = bench.run(workloads, [], rounds=args.rounds, scale=args.scale, placement=args.placement,
                            batch=args.batch, timeout=timeout, mux=True,
                            progress=lambda step, rec: rec is not None and print(bench.describe_record(rec, step.rounds), file=sys.stderr))  # fmt: skip
        out["throughput"] = {"table": results.rows(), "records": results.records}
        tables.append(("Throughput and round trip: links over channels against links over TCP", throughput_table(results.rows(), args.batch)))
        failed |= any(rec["impl"] == "links" for rec in results.failures)
        tables[-1][1].extend(["", *results.failure_lines()] if results.failures else [])
    if "fairness" in parts:

        def fair(case: tuple[bool, bool]) -> dict[str, Any]:
            mux, loaded = case
            rec = bench.measure(bench.Impl("fairness", HERE), fairness_params(args.scale, mux, loaded), pins["split"], timeout)
            rec.update(mux=mux, what=f"fairness {'channels' if mux else 'TCP'} {'A loading' if loaded else 'A idle'}")
            return rec

        records = run_rounds([(m, lo) for m in (True, False) for lo in (False, True)], args.rounds, fair, progress)
        out["fairness"] = records
        tables.append(("Fairness: B's round trips while A sends 1 MiB messages (split placement)", fairness_table(records)))
        failed |= not all(rec["ok"] for rec in records)
    if "memory" in parts:

        def idle(mux: bool) -> dict[str, Any]:
            rec = idle_round(args.channels, mux, timeout)
            rec["what"] = f"{args.channels} idle {'channels' if mux else 'TCP connections'}"
            return rec

        records = run_rounds([True, False], args.rounds, idle, progress)
        out["memory"] = records
        tables.append(("Memory per idle channel (RSS growth / count)", memory_table(records, args.channels)))
        failed |= not all(rec["ok"] for rec in records)

    out["wall_s"] = round(time.monotonic() - started, 1)
    print(f"{args.rounds} rounds, scale {args.scale}, {out['wall_s']:.0f} s; {machine['date']}; {machine['nproc']} CPUs "
          f"({machine['cpu_model']}), Python {machine['python']}; {bench.describe_pins(pins)}.")  # fmt: skip
    print("Cells: medians over rounds; ratios channel / TCP, the median of per-round ratios (msgs/s, MB/s: > 1 = channels ahead; µs: < 1).")
    for note in notes:
        print(note)
    for title, lines in tables:
        print(f"\n{title}\n")
        print("\n".join(lines))
    with open(args.json, "w") as f:
        json.dump(out, f, indent=1)
    print(f"\nraw rounds: {args.json}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
