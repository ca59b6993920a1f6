"""Request/response (``links.rpc``) against grpcio, pyzmq and Twisted AMP: one run, interleaved rounds.

The call is ``echo(data)`` with 16 bytes of data, on 127.0.0.1, both sides Python, each side
its own process, the server pinned to one CPU and the client to another (``split``; ``--placement
same`` puts both on one). Two figures:

* **Sequential call p50** (``seq``): one thread, one call at a time, 20,000 calls at scale 1
  (a tenth more before them as warm-up); p50 and p99 of the measured calls' round trips, in µs.
* **Pipelined calls/s** (``pipe``): 1,000 calls in flight (``--in-flight``), 50,000 measured at
  scale 1 after a warm-up that fills the pipe; calls answered per second over the window from
  the last warm-up reply to the last reply. links runs it twice: with one ``call_async`` per
  call (the like-for-like row, each call made as every peer makes it) and with the window
  refilled by ``call_many`` (the requests of a batch in one write: "links batched").

The implementations (``rpc_peers/`` beside this script; each the way a user of the library
writes it, kept small): links (a ``links.rpc`` server on a ``Svc``, ``call`` and ``call_async``
from a client), grpcio (generic handlers with msgpack serializers, a thread-pool server; the
blocking unary call and ``.future()``), grpcio-aio (the same service, both sides on
``grpc.aio``), pyzmq (REQ/REP for ``seq``, DEALER/ROUTER with msgids
for ``pipe``, msgpack bodies) and Twisted AMP (``callRemote``). Every reply is checked against
what was sent and the server counts every call: a measurement whose counts do not add up is a
failed one, never a number (the harness of ``links.bench``: ``measure``).

Rounds run every (figure, implementation) once, a different one first each round; cells are
medians over rounds and the ratio is links / peer, the median of the per-round ratios. The
issue's targets: links p50 <= 0.5x grpcio and <= 1.0x every other peer; pipelined >= 3x grpcio
and >= 1.0x every other peer (grpcio-aio is held to grpcio's).

Run: python benchmarks/system/rpc.py [--rounds 5] [--scale 1] [--peers grpcio,grpcio-aio,zmq,amp]
     [--figures seq,pipe] [--in-flight 1000] [--placement split|same] [--json PATH]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from typing import Any

import rpc_peers

from links import bench

FIGURES = ("seq", "pipe")
#: links' variants of each figure (the peers run the figure's one way): ``pipe`` is the
#: like-for-like figure (one ``call_async`` per call), ``pipe_many`` the same window refilled
#: with ``call_many`` (many requests, one write)
VARIANTS = {"seq": ("seq",), "pipe": ("pipe", "pipe_many")}
SIZE = 16
GRPC = {"grpcio": None, "grpcio-aio": None}
#: (figure, links variant, metric, label, unit, {peer: target} for the named peers, target for every other
#: peer or None: reported). Ratios are links / peer; "rate" is better higher, the rest lower.
ROWS = [
    ("seq", "seq", "p50", "Sequential call p50", "µs", dict.fromkeys(GRPC, 0.5), 1.0),
    ("seq", "seq", "p99", "Sequential call p99", "µs", {}, None),
    ("pipe", "pipe", "rate", "Pipelined calls/s, {in_flight:,} in flight, `call_async`", "calls/s", dict.fromkeys(GRPC, 3.0), 1.0),
    ("pipe", "pipe_many", "rate", "Pipelined calls/s, {in_flight:,} in flight, links batched (`call_many`)", "calls/s",
     dict.fromkeys(GRPC, 3.0), 1.0),
    ("seq", "seq", "cpu", "CPU per sequential call, both processes", "µs", {}, None),
    ("pipe", "pipe", "cpu", "CPU per pipelined call, both processes, `call_async`", "µs", {}, None),
    ("pipe", "pipe_many", "cpu", "CPU per pipelined call, both processes, links batched", "µs", {}, None),
]


def params(figure: str, variant: str, scale: float, in_flight: int) -> bench.Params:
    if figure == "seq":
        count = max(200, round(20_000 * scale))
        return bench.Params("w2", SIZE, max(100, count // 10), count, 1, variant)
    count = max(2 * in_flight, round(50_000 * scale))
    return bench.Params("w2", SIZE, max(in_flight, count // 10), count, 1, variant, batch=in_flight)


def value(rec: dict[str, Any], metric: str) -> float:
    return rec["result"]["rate"] if metric == "rate" else rec[metric]


def summarize(records: list[dict[str, Any]], names: list[str], in_flight: int) -> list[dict[str, Any]]:
    """One row per figure and links variant: links' median, each peer's median and the median
    of the per-round ratios links / peer (over the rounds where both succeeded)."""
    by: dict[tuple[str, str], dict[int, dict[str, Any]]] = {}
    for rec in records:
        if rec["ok"]:
            by.setdefault((rec["impl"], rec["variant"]), {})[rec["round"]] = rec
    measured = {rec["variant"] for rec in records if rec["impl"] == "links"}
    rows = []
    for figure, variant, metric, label, unit, special, others in ROWS:
        if variant not in measured:
            continue
        mine = by.get(("links", variant), {})
        row: dict[str, Any] = {"figure": figure, "variant": variant, "metric": metric, "label": label.format(in_flight=in_flight),
                               "unit": unit, "links": statistics.median(value(r, metric) for r in mine.values()) if mine else None,
                               "peers": {}}  # fmt: skip
        for name in names:
            theirs = by.get((name, figure), {})
            pairs = [value(mine[k], metric) / value(theirs[k], metric) for k in mine.keys() & theirs.keys() if value(theirs[k], metric)]
            target = None if others is None else special.get(name, others)
            row["peers"][name] = {"value": statistics.median(value(r, metric) for r in theirs.values()) if theirs else None,
                                  "ratio": statistics.median(pairs) if pairs else None, "target": target}  # fmt: skip
        rows.append(row)
    return rows


def _num(x: float | None) -> str:
    if x is None:
        return "FAILED"
    return f"{x:,.0f}" if x >= 1000 else f"{x:.1f}"


def _verdict(row: dict[str, Any]) -> str:
    """Which of the row's targets are met: "met" or "not met: grpcio 0.62 (<= 0.5)"."""
    higher = row["metric"] == "rate"
    missed = []
    for name, cell in row["peers"].items():
        target, r = cell["target"], cell["ratio"]
        if target is None or cell["value"] is None:
            continue
        if r is None or (r < target if higher else r > target):
            shown = "FAILED" if r is None else f"{r:.3f}" if round(r, 2) == target else f"{r:.2f}"  # 1.004 is over 1
            missed.append(f"{name} {shown} ({'>=' if higher else '<='} {target:g})")
    if all(c["target"] is None for c in row["peers"].values()):
        return "reported"
    return "met" if not missed and row["links"] is not None else "not met: " + ", ".join(missed or ["links FAILED"])


def table(rows: list[dict[str, Any]], names: list[str]) -> list[str]:
    header = ["figure", "unit", "links", *(f"{n} (links / {n})" for n in names), "targets"]
    lines = ["| " + " | ".join(header) + " |", "|---|---|---:|" + "---:|" * len(names) + "---|"]
    for row in rows:
        cells = []
        for name in names:
            cell = row["peers"][name]
            ratio = "" if cell["ratio"] is None else f" ({cell['ratio']:.2f})"
            cells.append("FAILED" if cell["value"] is None else _num(cell["value"]) + ratio)
        lines.append("| " + " | ".join([row["label"], row["unit"], _num(row["links"]), *cells, _verdict(row)]) + " |")
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds (default 5)")
    parser.add_argument("--scale", type=float, default=1.0, help="call counts x SCALE (e.g. 0.1 for a quick run)")
    parser.add_argument("--peers", default=",".join(rpc_peers.PEERS), help=f"comma list of {','.join(rpc_peers.PEERS)} (default all; links always runs)")
    parser.add_argument("--figures", default=",".join(FIGURES), help="comma list of seq,pipe (default both)")
    parser.add_argument("--in-flight", type=int, default=1000, help="calls in flight for the pipelined figure (default 1000)")
    parser.add_argument("--placement", choices=("split", "same"), default="split", help="split (default): server CPU a, client CPU b; same: both on CPU a")
    parser.add_argument("--timeout", type=float, default=None, help="seconds per measurement (default 20 + 40 x scale)")
    parser.add_argument("--json", default=os.path.join(tempfile.gettempdir(), "rpc.json"), help="raw rounds go here")
    args = parser.parse_args(argv)
    figures = [f.strip() for f in args.figures.split(",") if f.strip()]
    wanted = [p.strip() for p in args.peers.split(",") if p.strip() and p.strip() != "links"]
    for item, known in [(f, FIGURES) for f in figures] + [(p, tuple(rpc_peers.PEERS)) for p in wanted]:
        if item not in known:
            parser.error(f"unknown {'figure' if known is FIGURES else 'peer'} {item!r}; choose from {', '.join(known)}")
    if args.in_flight < 1:
        parser.error("--in-flight must be at least 1")
    why = rpc_peers.LINKS.missing()
    if why:
        parser.error(f"links.rpc cannot run here: {why}")
    skipped = {name: rpc_peers.PEERS[name].missing() for name in wanted}
    skipped = {name: why for name, why in skipped.items() if why}
    for name, why in skipped.items():
        print(f"skipping {name}: {why}", file=sys.stderr)
    impls = [rpc_peers.LINKS] + [rpc_peers.PEERS[n] for n in wanted if n not in skipped]
    names = [impl.name for impl in impls[1:]]
    timeout = args.timeout if args.timeout is not None else 20 + 40 * args.scale
    pins, notes = bench.pinning()
    machine = bench.machine()
    started = time.monotonic()
    units = [(f, impl, v) for f in figures for impl in impls for v in (VARIANTS[f] if impl is impls[0] else (f,))]
    records = []
    for r in range(args.rounds):
        k = r % len(units)
        for figure, impl, variant in units[k:] + units[:k]:  # a different one first each round
            rec = bench.measure(impl, params(figure, variant, args.scale, args.in_flight), pins[args.placement], timeout)
            rec.update(round=r, figure=figure)
            records.append(rec)
            print(_progress(rec, args.rounds), file=sys.stderr)
    machine["loadavg_end"] = os.getloadavg()
    wall = time.monotonic() - started
    rows = summarize(records, names, args.in_flight)
    command = " ".join(["python", "benchmarks/system/rpc.py", *(argv if argv is not None else sys.argv[1:])])
    (server,), (client,) = pins[args.placement]
    print(f"{command}\n{args.rounds} rounds, scale {args.scale}, {wall:.0f} s; {machine['date']}; {machine['nproc']} CPUs "
          f"({machine['cpu_model']}), Python {machine['python']}; load average {machine['loadavg_start'][0]:.2f} at the start, "
          f"{machine['loadavg_end'][0]:.2f} at the end; server CPU {server}, client CPU {client}.")  # fmt: skip
    print("Cells: medians over rounds; (ratio) links / peer, the median of per-round ratios (calls/s: > 1 = links ahead; µs: < 1).")
    for note in notes:
        print(note)
    print()
    print("\n".join(table(rows, names)))
    if skipped:
        print("\nSkipped: " + "; ".join(f"{p} ({why})" for p, why in skipped.items()))
    failures = [rec for rec in records if not rec["ok"]]
    if failures:
        print(f"\n{len(failures)} failed measurement(s), left out of the medians:")
        for rec in failures:
            print(f"  round {rec['round'] + 1} {rec['variant']} {rec['impl']}: {rec['error']}")
    with open(args.json, "w") as f:
        json.dump({"machine": machine, "args": vars(args), "command": command, "wall_s": wall, "rows": rows, "records": records}, f, indent=1)
    print(f"\nraw rounds: {args.json}")
    return 1 if any(rec["impl"] == "links" for rec in failures) else 0


def _progress(rec: dict[str, Any], rounds: int) -> str:
    head = f"round {rec['round'] + 1}/{rounds} {rec['variant']:9} {rec['impl']:10}"
    if not rec["ok"]:
        return f"{head} FAILED: {rec['error']}"
    shown = f"{rec['result']['rate']:,.0f} calls/s" if rec["figure"] == "pipe" else f"p50 {rec['p50']:.1f} µs p99 {rec['p99']:.1f} µs"
    return f"{head} {shown}, CPU {rec['cpu']:.1f} µs/call ({rec['wall_s']:.1f} s)"


if __name__ == "__main__":
    sys.exit(main())
