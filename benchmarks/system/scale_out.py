"""W4 scale-out: one links server process against N on one port (``SO_REUSEPORT``).

Servers: each worker is a process pinned to its own CPU, bound with
``Svc.bind(..., reuse_port=True)`` to the same port (what ``links serve soupbintcp --workers
N`` does), its receivers spawned into its poll thread, counting into a callback. The kernel
spreads the connections across the workers.

Load: generator processes, each pinned to its own CPU, each driving its share of the clients
(100 by default), connection after connection, ``--batch`` frames per write. By default the
generator is ``loadgen.c``, built at run time with gcc: it writes pre-built frames with one
syscall per batch, a few percent of a core, so that it can share a CPU with a worker and still
not set the pace (the verdict weighs what it took). ``--generator links`` drives the clients
with ``Clt.send_many`` instead, which costs as much per message as a worker does. The same
generators, on the same CPUs, load 1 worker and N workers, alternately, every round.

Timing: the window opens when the generators start sending (after a warm-up that every
worker has counted, so the pipes start empty) and closes when the last worker counts the
last message; ``time.perf_counter`` is one clock for all processes on Linux.

Is the load generator the bottleneck? Each process's CPU time over the window (psutil) is
printed as a share of one core. A generator near 100 % set the pace itself, and the ratio
then says nothing about the servers: the verdict column says so. Where a generator shares a
worker's CPU (two CPUs, two workers) it slows that worker by what it takes, so the N-worker
rate is an underestimate; the verdict accepts it as a lower bound while the generator stays
under 20 % of that CPU.

Run: python benchmarks/system/scale_out.py [--workers 2] [--generators G] [--generator c|links] [--rounds 5]
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import select
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import psutil

import links
from links import bench

HOST = "127.0.0.1"
SATURATED = 0.9  # a generator busy this share of its core (or more) is the bottleneck
LIGHT = 0.2  # a generator this light may share a worker's CPU (it slows that worker, never helps)
WAIT = 60.0


class Tally(links.Callback):
    """Runs on the worker's poll thread: a count, and when the last message came."""

    def __init__(self) -> None:
        self.count = 0
        self.last = 0.0

    def on_recv(self, con_id: Any, msg: Any) -> None:
        self.count += 1
        self.last = time.perf_counter()


def worker(ctl: Connection, cpu: int, port: int, clients: int) -> None:
    """One server process: bind (sharing the port), count, answer the parent's commands."""
    os.sched_setaffinity(0, {cpu})
    bench.quiet_logs()
    tally = Tally()
    svc = links.Svc.bind(f"{HOST}:{port}", protocol=bench.Raw, callback=tally, reuse_port=True, max_connections=clients + 16)
    svc.into_sender_with_spawned_recver()
    ctl.send(svc.local_addr[1])
    while (command := ctl.recv()) != "stop":
        if command == "mark":  # nothing is in flight now: count the measured window from zero
            tally.count = 0
        ctl.send((tally.count, tally.last))
    svc.close()
    links.shutdown()


def generator(ctl: Connection, cpu: int, port: int, connections: int, warm: int, count: int, batch: int) -> None:
    """One load process: ``connections`` clients, each sent ``warm`` then ``count`` messages."""
    os.sched_setaffinity(0, {cpu})
    bench.quiet_logs()
    clts = [links.Clt.connect(f"{HOST}:{port}", protocol=bench.Raw, timeout=10) for _ in range(connections)]
    data = b"x" * 100
    bench.round_robin(clts, data, warm, batch)
    ctl.send("warmed")
    ctl.recv()  # go
    t0 = time.perf_counter()
    bench.round_robin(clts, data, count, batch)
    ctl.send((t0, time.perf_counter()))
    ctl.recv()  # exit (the parent reads this process's CPU time first)
    for clt in clts:
        clt.close()
    links.shutdown()


class CLoad:
    """``loadgen`` (C) as one process, speaking the same words as ``generator`` over its
    stdin/stdout; it stands for both the process and its pipe."""

    def __init__(self, exe: str, cpu: int, port: int, connections: int, args: argparse.Namespace) -> None:
        argv = [exe, HOST, str(port), str(connections), str(args.warm), str(args.count), str(args.batch), "100"]
        self._proc = subprocess.Popen(
            argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, bufsize=1,
            preexec_fn=lambda: os.sched_setaffinity(0, {cpu}),
        )  # fmt: skip
        self.pid = self._proc.pid

    def send(self, word: str) -> None:
        assert self._proc.stdin is not None
        self._proc.stdin.write(word + "\n")

    def poll(self, timeout: float) -> bool:
        return bool(select.select([self._proc.stdout], [], [], timeout)[0])

    def recv(self) -> Any:
        assert self._proc.stdout is not None
        line = self._proc.stdout.readline().strip()
        if not line:
            raise SystemExit(f"loadgen ended early (exit code {self._proc.poll()})")
        return line if line == "warmed" else tuple(float(x) for x in line.split())

    def join(self, timeout: float) -> None:
        try:
            self._proc.wait(timeout)
        except subprocess.TimeoutExpired:
            pass

    def is_alive(self) -> bool:
        return self._proc.poll() is None

    def kill(self) -> None:
        self._proc.kill()


def build_loadgen(tmp: str) -> str | None:
    """Compile loadgen.c into ``tmp``; the executable, or None (and why, on stderr)."""
    cc = shutil.which("gcc") or shutil.which("cc")
    exe = os.path.join(tmp, "loadgen")
    if cc is not None:
        done = subprocess.run([cc, "-O2", "-o", exe, str(Path(__file__).with_name("loadgen.c"))], capture_output=True)
        if done.returncode == 0:
            return exe
        print(f"loadgen.c did not build: {done.stderr.decode(errors='replace')[-300:]}", file=sys.stderr)
    else:
        print("no gcc or cc on PATH", file=sys.stderr)
    return None


def measure(workers: int, worker_cpus: list[int], generator_cpus: list[int], args: argparse.Namespace) -> dict[str, Any]:
    ctx = mp.get_context("spawn")
    procs: list[tuple[Any, Any, str]] = []  # process, its pipe, the word that ends it

    def start(target: Any, farewell: str, *a: Any) -> Connection:
        parent, child = ctx.Pipe()
        proc = ctx.Process(target=target, args=(child, *a), daemon=True)
        proc.start()
        procs.append((proc, parent, farewell))
        return parent

    def start_load(cpu: int, port: int, n: int) -> Any:
        if args.loadgen is None:
            return start(generator, "exit", cpu, port, n, args.warm, args.count, args.batch)
        load = CLoad(args.loadgen, cpu, port, n, args)
        procs.append((load, load, "exit"))
        return load

    try:
        port, servers = 0, []
        for cpu in worker_cpus[:workers]:
            servers.append(start(worker, "stop", cpu, port, args.clients))
            port = _recv(servers[-1])
        shares = [len(range(i, args.clients, len(generator_cpus))) for i in range(len(generator_cpus))]
        loads = [start_load(cpu, port, n) for cpu, n in zip(generator_cpus, shares)]
        for g in loads:
            _recv(g)  # warmed
        _wait_for_count(servers, args.clients * args.warm)
        for s in servers:
            s.send("mark")
            _recv(s)
        pids = [p.pid for p, _, _ in procs]
        cpu0 = {pid: _cpu(pid) for pid in pids}
        for g in loads:
            g.send("go")
        windows = [_recv(g) for g in loads]
        reports = _wait_for_count(servers, args.clients * args.count)
        cpu1 = {pid: _cpu(pid) for pid in pids}
        start_t, end_t = min(t0 for t0, _ in windows), max(last for _, last in reports)
        busy = {pid: (cpu1[pid] - cpu0[pid]) / (end_t - start_t) for pid in pids}
        server_pids, load_pids = pids[:workers], pids[workers:]
        return {
            "rate": args.clients * args.count / (end_t - start_t),
            "server_busy": [busy[p] for p in server_pids],
            "generator_busy": [busy[p] for p in load_pids],
            "split": [c for c, _ in reports],
        }
    finally:
        for _, pipe, farewell in procs:
            try:
                pipe.send(farewell)
            except OSError:
                pass
        for proc, _, _ in procs:
            proc.join(10)
            if proc.is_alive():
                proc.kill()


def _recv(pipe: Connection) -> Any:
    if not pipe.poll(WAIT):
        raise SystemExit("a benchmark process did not answer in time")
    return pipe.recv()


def _wait_for_count(servers: list[Connection], total: int) -> list[tuple[int, float]]:
    """Ask the workers for their counts until they add up to ``total``; their reports."""
    deadline = time.monotonic() + WAIT
    while True:
        reports = []
        for s in servers:
            s.send("report")
            reports.append(_recv(s))
        if sum(c for c, _ in reports) >= total:
            return reports
        if time.monotonic() > deadline:
            raise SystemExit(f"the workers counted {sum(c for c, _ in reports)} of {total} messages")
        time.sleep(0.005)  # polling another process's count: nothing here to wait on


def _cpu(pid: int) -> float:
    t = psutil.Process(pid).cpu_times()
    return t.user + t.system


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workers", type=int, default=2, help="server processes to compare against one (default 2)")
    parser.add_argument("--generators", type=int, default=0, help="load processes (default: the CPUs left, at least 1)")
    parser.add_argument("--clients", type=int, default=100)
    parser.add_argument("--count", type=int, default=10000, help="messages per client in the window (default 10000)")
    parser.add_argument("--warm", type=int, default=200)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--generator", choices=["c", "links"], default="c",
                        help="c: loadgen.c, built now (default; links if it cannot be built); links: Clt.send_many")  # fmt: skip
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        args.loadgen = build_loadgen(tmp) if args.generator == "c" else None
        return run(args)


def run(args: argparse.Namespace) -> int:
    cpus = sorted(os.sched_getaffinity(0))
    generators = args.generators or max(1, len(cpus) - args.workers)
    needed = args.workers + generators
    # Workers take CPUs from the first, generators from the last, the same in every run. With
    # too few CPUs they meet, and the verdict weighs what the generator took from the worker.
    worker_cpus = [cpus[i % len(cpus)] for i in range(args.workers)]
    generator_cpus = [cpus[-1 - i % len(cpus)] for i in range(generators)]
    print(f"CPUs {cpus}; workers on {worker_cpus}, {'loadgen (C)' if args.loadgen else 'links'} generators on "
          f"{generator_cpus}" + (f" (only {len(cpus)} CPUs for {needed} processes: some share)" if needed > len(cpus) else ""))  # fmt: skip

    results: dict[int, list[dict[str, Any]]] = {1: [], args.workers: []}
    for r in range(args.rounds):
        for n in ([1, args.workers] if r % 2 == 0 else [args.workers, 1]):
            res = measure(n, worker_cpus, generator_cpus, args)
            results[n].append(res)
            print(f"round {r + 1}/{args.rounds} workers={n}: {res['rate']:,.0f} msgs/s, servers busy "
                  f"{_pct(res['server_busy'])}, generators busy {_pct(res['generator_busy'])}, split {res['split']}",
                  file=sys.stderr)  # fmt: skip

    med = statistics.median
    ratio = med(b["rate"] / a["rate"] for a, b in zip(results[1], results[args.workers]))
    how = "loadgen (C)" if args.loadgen else "Clt.send_many"
    print(f"\n{args.rounds} rounds, {args.clients} clients x {args.count} messages of 100 B, {args.batch} per write "
          f"({how}).\n")  # fmt: skip
    print("| workers | msgs/s | vs 1 worker | servers busy | generators busy | verdict |")
    print("|---:|---:|---:|---|---|---|")
    for n in (1, args.workers):
        runs = results[n]
        gen = med(max(r["generator_busy"]) for r in runs)
        print(f"| {n} | {med(r['rate'] for r in runs):,.0f} | {ratio if n > 1 else 1.0:.2f} | "
              f"{_pct([med(r['server_busy'][i] for r in runs) for i in range(n)])} | "
              f"{_pct([med(r['generator_busy'][i] for r in runs) for i in range(generators)])} | "
              f"{verdict(gen, sorted(set(worker_cpus[:n]) & set(generator_cpus)))} |")  # fmt: skip
    return 0


def verdict(generator_busy: float, shared: list[int]) -> str:
    """Who set the pace. A generator that shares a worker's CPU but stays light only slows
    that worker a little, so the N-worker rate is then an underestimate, never an overstatement."""
    if generator_busy >= SATURATED:
        return "generator-bound: not a measure of the servers"
    if not shared:
        return "servers-bound"
    if generator_busy <= LIGHT:
        return f"servers-bound (the generator took {generator_busy:.0%} of CPU {shared}: a lower bound)"
    return f"invalid: the generator took {generator_busy:.0%} of CPU {shared} from a worker"


def _pct(shares: list[float]) -> str:
    return ", ".join(f"{s:.0%}" for s in shares)


if __name__ == "__main__":
    sys.exit(main())
