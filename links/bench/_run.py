"""A whole run: interleaved rounds over workloads, placements and implementations; medians and ratios.

Rounds and ratios
    Each round measures every implementation once per workload and placement, in an order
    that rotates from round to round, so a noisy phase of the machine hits everyone alike.
    The table shows medians over rounds; the ratio is links / peer, the median of the
    per-round ratios (only rounds where both succeeded). msgs/s and MB/s: above 1 means
    links is ahead. µs (latency, CPU): below 1 means links is ahead. Failed measurements are
    left out of the medians, and listed.

Placement
    ``split`` puts the server on the first allowed CPU and the client on the last; ``same``
    puts both on the first. ``auto`` runs W2 both ways and the rest split: where the two
    processes run changes results 2-4x on a small VM (a wake-up across CPUs is expensive),
    so every row says which placement it used.

Channels
    ``run(..., mux=True)`` measures links with every connection a channel, all of a client's
    over one TCP connection (``links.mux``), in ``MUX_VARIANTS``, against the same variants
    over TCP connections of their own (the peer ``tcp``, ``LINKS_TCP``): the ratio of each
    row is channel / TCP, for the same client code, in the same rounds.

Both ``links bench`` and ``benchmarks/system/vs_peers.py`` call ``run`` and print what it returns;
they differ only in which peers they pass and how they show progress. ``benchmarks/system/mux.py``
runs it with ``mux=True``.
"""

from __future__ import annotations

import datetime
import json
import math
import os
import platform
import statistics
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ._measure import (
    LINKS,
    LINKS_TCP,
    LINKS_VARIANTS,
    METRICS,
    MUX_VARIANTS,
    TLS_VARIANTS,
    VARIANT_LABEL,
    Impl,
    measure,
    workload_params,
)
from ._tls import TLS_CIPHER, TLS_VERSION

__all__ = [
    "CELLS_NOTE", "Results", "Step", "describe_pins", "describe_record", "machine", "pinning", "placements",
    "render_table", "run", "summarize",
]  # fmt: skip

CELLS_NOTE = (
    "Cells: median over rounds (links / peer ratio, median of per-round ratios). "
    "msgs/s, MB/s: ratio > 1 = links ahead; µs: ratio < 1 = links ahead."
)

Pins = dict[str, tuple[set[int], set[int]]]


def placements(choice: str, workload: str) -> list[str]:
    if choice == "auto":
        return ["split", "same"] if workload == "w2" else ["split"]
    return ["split", "same"] if choice == "both" else [choice]


def pinning() -> tuple[Pins, list[str]]:
    """(server CPUs, client CPUs) per placement, from the CPUs this process may use; and notes."""
    cpus = sorted(os.sched_getaffinity(0))
    pins = {"split": ({cpus[0]}, {cpus[-1]}), "same": ({cpus[0]}, {cpus[0]})}
    notes = [] if len(cpus) > 1 else [f"only one CPU allowed ({cpus[0]}): 'split' runs both processes on it"]
    return pins, notes


def describe_pins(pins: Pins) -> str:
    (server,), (client,) = pins["split"]
    return f"placement split = server CPU {server}, client CPU {client}; same = both on CPU {min(pins['same'][0])}"


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


@dataclass(frozen=True)
class Step:
    """Where a run is: measurement ``index`` (from 0) of ``total``, and what it measures."""

    index: int
    total: int
    round: int  # from 0
    rounds: int
    workload: str
    placement: str
    impl: str
    variant: str


@dataclass
class Results:
    """What ``run`` measured: every record (ok or failed) and the run's description."""

    records: list[dict[str, Any]]
    cases: list[tuple[str, str]]  # (workload, placement), in table order
    peers: list[str]
    batch: int
    meta: dict[str, Any]
    variants: Mapping[str, Sequence[str]] = field(default_factory=lambda: LINKS_VARIANTS)  # links', per workload

    @property
    def failures(self) -> list[dict[str, Any]]:
        return [rec for rec in self.records if not rec["ok"]]

    def rows(self) -> list[dict[str, Any]]:
        return summarize(self.records, self.cases, self.peers, self.batch, self.variants)

    def table(self) -> list[str]:
        return render_table(self.rows(), self.peers)

    def failure_lines(self) -> list[str]:
        lines = []
        if self.failures:
            lines.append(f"{len(self.failures)} failed measurement(s), left out of the medians:")
        for rec in self.failures:
            impl = rec["impl"] + (f"[{rec['variant']}]" if rec["variant"] else "")
            lines.append(
                f"  round {rec['round'] + 1} {rec['workload'].upper()} {rec['placement']} {impl}: {rec['error']}"
            )
        return lines

    def write_json(self, path: str) -> None:
        with open(path, "w") as f:
            json.dump({"meta": self.meta, "table": self.rows(), "records": self.records}, f, indent=1)


def run(
    workloads: Sequence[str],
    peers: Sequence[Impl],
    *,
    rounds: int,
    scale: float,
    placement: str = "auto",
    batch: int = 64,
    timeout: float | None = None,
    progress: Callable[[Step, dict[str, Any] | None], None] | None = None,
    tls: str = "",
    mux: bool = False,
) -> Results:
    """Measure links (every variant) and each of ``peers`` on ``workloads``, ``rounds`` times.

    ``progress(step, None)`` is called before each measurement and ``progress(step, record)``
    after it. ``timeout`` bounds each measurement (default 20 + 30 x scale seconds). ``tls``
    (a directory from ``make_certificates``): every connection over TLS, links in its
    ``TLS_VARIANTS``, on W1-W3 only; every peer must then speak TLS (see ``_tls``). ``mux``:
    links over channels in its ``MUX_VARIANTS``, and the peer ``tcp`` (links over TCP) in each
    of them, before ``peers`` (see the module docstring).
    """
    if tls and mux:
        raise ValueError("channels over TLS are not measured here: tls= or mux=, not both")
    variants = TLS_VARIANTS if tls else MUX_VARIANTS if mux else LINKS_VARIANTS
    unknown = [w for w in workloads if w not in variants]
    if unknown:
        raise ValueError(f"no {'TLS ' if tls else 'channel ' if mux else ''}variants for {', '.join(unknown)}")
    paired = [LINKS_TCP] if mux else []  # peers run in the subject's variant
    timeout = timeout if timeout is not None else 20 + 30 * scale
    pins, notes = pinning()
    cases = [(w, pl) for w in workloads for pl in placements(placement, w)]
    units_per_round = sum(len(variants[w]) * (1 + len(paired)) + len(peers) for w, _ in cases)
    meta = {
        "machine": machine(), "rounds": rounds, "scale": scale, "batch": batch, "timeout_s": timeout,
        "placements": {k: {"server_cpus": sorted(v[0]), "client_cpus": sorted(v[1])} for k, v in pins.items()},
        "params": {w: workload_params(w, scale, "", batch).__dict__ for w in workloads},
        "peers": [p.name for p in paired + list(peers)], "notes": notes,
        "tls": {"version": TLS_VERSION, "cipher": TLS_CIPHER} if tls else None, "mux": mux,
    }  # fmt: skip
    records: list[dict[str, Any]] = []
    started = time.monotonic()
    for r in range(rounds):
        for workload, where in cases:
            units = [(LINKS, v) for v in variants[workload]] + [(p, v) for v in variants[workload] for p in paired]
            units += [(p, "") for p in peers]
            k = r % len(units)
            for impl, variant in units[k:] + units[:k]:  # a different implementation goes first each round
                step = Step(len(records), rounds * units_per_round, r, rounds, workload, where, impl.name, variant)
                if progress is not None:
                    progress(step, None)
                params = workload_params(workload, scale, variant, batch, tls, mux and impl is LINKS)
                rec = measure(impl, params, pins[where], timeout)
                rec.update(round=r, workload=workload, placement=where)
                records.append(rec)
                if progress is not None:
                    progress(step, rec)
    meta["wall_s"] = round(time.monotonic() - started, 1)
    meta["machine"]["loadavg_end"] = os.getloadavg()
    return Results(records, cases, [p.name for p in paired + list(peers)], batch, meta, variants)


def summarize(
    records: list[dict[str, Any]],
    cases: list[tuple[str, str]],
    peers: list[str],
    batch: int,
    variants: Mapping[str, Sequence[str]] = LINKS_VARIANTS,
) -> list[dict[str, Any]]:
    """One row per (workload, placement, links variant, metric): medians and links / peer ratios.

    A value is the median over the rounds that succeeded; a ratio is the median of the
    per-round ratios, over rounds where links and that peer both succeeded (so a peer that
    failed one round does not shift links' number). ``links`` is None when every links
    measurement of the row failed; a peer's ``value`` likewise. A peer measured in links'
    variants (``tcp``) is compared in the row's variant.
    """
    med = statistics.median
    by: dict[tuple[str, str, str, str], dict[int, dict[str, Any]]] = {}
    for rec in records:
        if rec["ok"]:
            by.setdefault((rec["workload"], rec["placement"], rec["impl"], rec["variant"]), {})[rec["round"]] = rec
    rows = []
    for workload, placement in cases:
        for variant in variants[workload]:
            label = f"{workload.upper()} links {VARIANT_LABEL[variant].format(batch=batch)}"
            mine = by.get((workload, placement, "links", variant), {})
            for metric, unit, _higher in METRICS[workload]:
                row = {"workload": workload, "variant": variant, "placement": placement, "metric": metric, "unit": unit,
                       "label": label, "links": med([r[metric] for r in mine.values()]) if mine else None, "peers": {}}  # fmt: skip
                for peer in peers:
                    theirs = by.get((workload, placement, peer, variant)) or by.get((workload, placement, peer, ""), {})
                    value = med([r[metric] for r in theirs.values()]) if theirs else None
                    pairs = [
                        mine[k][metric] / theirs[k][metric] for k in mine.keys() & theirs.keys() if theirs[k][metric]
                    ]
                    row["peers"][peer] = {"value": value, "ratio": med(pairs) if pairs else None, "rounds": len(pairs)}
                rows.append(row)
    return rows


def _fmt(value: float, unit: str) -> str:
    if math.isnan(value):
        return "—"
    if unit in ("msgs/s", "MB/s"):
        return f"{value:,.0f}"
    return f"{value:.1f}" if value < 1000 else f"{value:,.0f}"


def render_table(rows: list[dict[str, Any]], peers: list[str]) -> list[str]:
    """The rows of ``summarize`` as a Markdown table: ``value (ratio)`` per peer."""
    lines = [
        "| workload | metric | placement | links | " + " | ".join(peers) + " |",
        "|---|---|---|---:|" + "---:|" * len(peers),
    ]
    for row in rows:
        unit, cells = row["unit"], []
        for peer in peers:
            cell = row["peers"][peer]
            if cell["value"] is None:
                cells.append("—")
            else:
                cells.append(_fmt(cell["value"], unit) + ("" if cell["ratio"] is None else f" ({cell['ratio']:.2f})"))
        links_cell = "FAILED" if row["links"] is None else _fmt(row["links"], unit)
        lines.append(f"| {row['label']} | {unit} | {row['placement']} | {links_cell} | " + " | ".join(cells) + " |")
    return lines


def describe_record(rec: dict[str, Any], rounds: int) -> str:
    """One line per finished measurement, for a log on stderr."""
    impl = rec["impl"] + (f"[{rec['variant']}]" if rec["variant"] else "")
    head = f"round {rec['round'] + 1}/{rounds} {rec['workload'].upper()} {rec['placement']:5} {impl:18}"
    if not rec["ok"]:
        return f"{head} FAILED: {rec['error']}"
    if rec["workload"] == "w2":
        value = f"p50 {rec['p50']:.1f} µs p99 {rec['p99']:.1f} µs"
    elif rec["workload"] == "w3":
        value = f"{rec['mbps']:,.0f} MB/s"
    else:
        value = f"{rec['rate']:,.0f} msgs/s"
    return f"{head} {value}, CPU {rec['cpu']:.2f} µs/msg ({rec['wall_s']:.1f} s)"
