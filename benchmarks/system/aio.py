"""links.aio against asyncio streams and uvloop streams, from asyncio code on both ends.

One run, side by side, interleaved rounds (a different implementation first each round),
medians, and the median of the per-round ratios links.aio / peer:

* W1 one-way, 100 B: links.aio ``await send()`` per message and ``await send_many(64)``;
  asyncio and uvloop streams ``write`` + ``await drain()`` per message. msgs/s (target >= 1.0x
  asyncio streams).
* W2 round trip, 100 B: ``await send`` + ``await recv`` against ``write`` + ``readexactly``;
  p50 and p99 µs (target p50 <= 1.0x asyncio streams), split (server and client on two CPUs)
  and same (one CPU).
* W4 fan-in: 100 connections as 100 tasks of one loop, 1,000 x 100 B each, ``await send()``
  per message against ``write`` + ``drain``; msgs/s (target >= 1.0x asyncio streams).

Every measurement is a server and a client process, pinned and checked end to end by the
harness of ``links bench`` (``links.bench.measure``: every message counted, every reply
whole). The peers are ``peers/aio.py`` (asyncio streams, the stdlib loop or uvloop) and
``peers/links_aio.py`` (links.aio, on the stdlib loop; ``--aio-uvloop`` adds it on uvloop).

Run: python benchmarks/system/aio.py [--rounds 3] [--scale 0.5] [--workloads w1,w2,w4] [--aio-uvloop] [--json PATH]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import statistics
import sys
import tempfile
import time
from typing import Any

import peers as registry

from links import bench

AIO = registry.AIO_SUBJECT
AIO_UVLOOP = dataclasses.replace(AIO, name="links.aio/uvloop", kwargs={"flavor": "uvloop"}, requires=("uvloop",))
ASYNCIO = registry.EXTRA["asyncio"]
UVLOOP = registry.EXTRA["uvloop"]
SUBJECT_VARIANTS = {"w1": ("send", "send_many"), "w2": ("recv",), "w4": ("send",)}
LABEL = {"send": "await send()", "send_many": "await send_many({batch})", "recv": "await send+recv", "": "write+drain"}
PEERS = ("asyncio", "uvloop")


def units(workload: str, subjects: list[bench.Impl], peers: list[bench.Impl]) -> list[tuple[bench.Impl, str]]:
    return [(s, v) for s in subjects for v in SUBJECT_VARIANTS[workload]] + [(p, "") for p in peers]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workloads", default="w1,w2,w4")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--scale", type=float, default=0.5)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--aio-uvloop", action="store_true", help="also links.aio on uvloop")
    parser.add_argument("--json", default=os.path.join(tempfile.gettempdir(), "aio_bench.json"))
    args = parser.parse_args(argv)
    workloads = [w.strip() for w in args.workloads.split(",") if w.strip()]
    subjects = [AIO] + ([AIO_UVLOOP] if args.aio_uvloop else [])
    peers = [p for p in (ASYNCIO, UVLOOP) if not p.missing()]
    subjects = [s for s in subjects if not s.missing()]
    pins, notes = bench.pinning()
    timeout = 20 + 30 * args.scale
    records: list[dict[str, Any]] = []
    started = time.monotonic()
    for r in range(args.rounds):
        for workload in workloads:
            for where in bench.placements("auto", workload):
                todo = units(workload, subjects, peers)
                k = r % len(todo)
                for impl, variant in todo[k:] + todo[:k]:
                    params = bench.workload_params(workload, args.scale, variant, args.batch)
                    rec = bench.measure(impl, params, pins[where], timeout)
                    rec.update(round=r, workload=workload, placement=where)
                    records.append(rec)
                    print(f"round {r + 1}/{args.rounds} {workload} {where} {impl.name} {variant or '-'}: "
                          + (_short(rec) if rec["ok"] else f"FAILED {rec.get('error')}"), file=sys.stderr)  # fmt: skip
    wall = time.monotonic() - started
    print(f"\n{args.rounds} rounds, scale {args.scale}, {wall:.0f} s; {bench.describe_pins(pins)}. {' '.join(notes)}")
    print(f"Machine: {json.dumps(bench.machine())}")
    print("Cells: median over rounds; × peer: median of per-round ratios links.aio / peer "
          "(msgs/s: > 1 = links.aio ahead; µs: < 1 = links.aio ahead).\n")  # fmt: skip
    print("\n".join(table(records, workloads, subjects, peers, args.batch)))
    failed = [rec for rec in records if not rec["ok"]]
    if failed:
        print("\nFailed: " + "; ".join(f"{r['workload']} {r['impl']} {r['variant']}: {r.get('error')}" for r in failed))
    with open(args.json, "w", encoding="utf-8") as f:
        json.dump({"records": records, "argv": sys.argv, "wall_s": wall}, f, indent=1, default=str)
    print(f"\nraw rounds: {args.json}")
    return 1 if any(r["impl"].startswith("links") for r in failed) else 0


def _short(rec: dict[str, Any]) -> str:
    if "p50" in rec:
        return f"p50 {rec['p50']:.1f} µs, p99 {rec['p99']:.1f} µs"
    return f"{rec['rate']:,.0f} msgs/s"


def table(records: list[dict[str, Any]], workloads: list[str], subjects: list[bench.Impl], peers: list[bench.Impl],
          batch: int) -> list[str]:  # fmt: skip
    heads = " | ".join(f"× {p.name}" for p in peers)
    lines = [f"| workload | placement | implementation | variant | figure | {heads} |",
             "|---|---|---|---|---:|" + "---:|" * len(peers)]  # fmt: skip
    for workload in workloads:
        metric = "p50" if workload == "w2" else "rate"
        for where in bench.placements("auto", workload):
            mine = [r for r in records if r["ok"] and r["workload"] == workload and r["placement"] == where]
            for impl, variant in units(workload, subjects, peers):
                rows = [r for r in mine if r["impl"] == impl.name and r["variant"] == variant]
                if not rows:
                    continue
                cells = [_figure(rows, workload)]
                for peer in peers:
                    base = {r["round"]: r[metric] for r in mine if r["impl"] == peer.name}
                    ratios = [r[metric] / base[r["round"]] for r in rows if r["round"] in base]
                    cells.append(f"{statistics.median(ratios):.2f}" if ratios and impl in subjects else "")
                label = LABEL[variant].format(batch=batch)
                lines.append(f"| {workload.upper()} | {where} | {impl.name} | {label} | " + " | ".join(cells) + " |")
    return lines


def _figure(rows: list[dict[str, Any]], workload: str) -> str:
    if workload == "w2":
        p50 = statistics.median(r["p50"] for r in rows)
        p99 = statistics.median(r["p99"] for r in rows)
        return f"p50 {p50:.1f} µs, p99 {p99:.1f} µs"
    return f"{statistics.median(r['rate'] for r in rows):,.0f} msgs/s"


if __name__ == "__main__":
    sys.exit(main())
