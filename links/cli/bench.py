"""``links bench``: the links side of workloads W1-W4 against plain Python sockets, on this machine.

It runs the harness of ``links.bench`` (the one ``benchmarks/system/vs_peers.py`` runs with every
peer), with plain blocking sockets as the only peer: two pinned processes per measurement,
interleaved rounds, a completion check on each, medians and links / plain ratios. stdout
gets a header naming the machine and the pinning, then the table; stderr gets a progress bar
(on a terminal only). The exit code is 0 only when every measurement passed its completion
check, so a script can tell a broken stack from a slow one.

``--scale`` multiplies the message counts of the full benchmark (W1 200,000 x 100 B, W2
20,000 round trips, W3 200 x 1 MiB, W4 100 clients x 1,000). The default 0.25 with 3 rounds
(51 measurements) finishes in under a minute on a two-vCPU VM (about 35 s when idle): short
enough to run on a whim, long enough that each window holds thousands of messages. Use
``--scale 1`` and more rounds for numbers worth recording; ratios, not absolute numbers, are
what carry from run to run.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from typing import Any

from ._args import positive, writable_file
from ._progress import ProgressLine, bar

__all__ = ["register"]


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "bench",
        help="measure links against plain Python sockets on this machine (W1-W4, pinned processes)",
        description=(
            "Measures links against plain Python blocking sockets on workloads W1-W4 (one-way, "
            "ping-pong, 1 MiB frames, 100 clients), each measurement a server and a client process "
            "pinned to CPUs, in interleaved rounds; prints medians and links / plain ratios. Exit "
            "code 0 only if every measurement passed its completion check. Linux only."
        ),
    )
    parser.add_argument(
        "--workloads", type=_workloads, default="w1,w2,w3,w4", help="comma list of w1..w4 (default w1,w2,w3,w4)"
    )
    parser.add_argument(
        "--rounds", type=positive(int), default=3, help="interleaved rounds; the table shows medians (default 3)"
    )
    parser.add_argument(
        "--scale", type=positive(float), default=0.25,
        help="message counts x SCALE; 1 is the full benchmark (default 0.25: under a minute on two CPUs)",
    )  # fmt: skip
    parser.add_argument(
        "--placement", choices=("auto", "split", "same", "both"), default="auto",
        help="split: server and client on different CPUs; same: one CPU; auto (default): split, plus same for W2",
    )  # fmt: skip
    parser.add_argument(
        "--json", metavar="PATH", type=writable_file, default=None,
        help="also write every measurement here as JSON (default: none); checked before the run",
    )  # fmt: skip
    parser.set_defaults(func=run)


def _workloads(text: str) -> list[str]:
    from ..bench import WORKLOADS

    names = [w.strip().lower() for w in text.split(",") if w.strip()]
    unknown = [w for w in names if w not in WORKLOADS]
    if unknown or not names:
        raise argparse.ArgumentTypeError(f"{text!r}: choose from {','.join(WORKLOADS)}")
    return names


def run(args: argparse.Namespace) -> int:
    from .. import bench

    if not hasattr(os, "sched_setaffinity"):
        print("links bench pins its processes to CPUs, which needs Linux (os.sched_setaffinity)", file=sys.stderr)
        return 2
    workloads = args.workloads  # a list: argparse runs the type on the string default too
    pins, notes = bench.pinning()
    print(_header(bench.machine(), bench.describe_pins(pins), notes), flush=True)
    started = time.monotonic()
    with ProgressLine() as line:

        def progress(step: bench.Step, record: dict[str, Any] | None) -> None:
            done = step.index + (record is not None)
            impl = step.impl + (f"[{step.variant}]" if step.variant else "")
            line.update(
                f"{bar(done, step.total)} round {step.round + 1}/{step.rounds}  measurement {step.index + 1}/"
                f"{step.total}  {step.workload.upper()} {step.placement} {impl}  {time.monotonic() - started:.0f} s",
                force=True,
            )

        results = bench.run(workloads, [bench.PLAIN], rounds=args.rounds, scale=args.scale,
                            placement=args.placement, progress=progress)  # fmt: skip
    results.meta["command"] = (
        f"links bench --workloads {','.join(workloads)} --rounds {args.rounds} --scale {args.scale}"
        f" --placement {args.placement}"
    )
    print(f"\n{args.rounds} round(s), scale {args.scale}, {results.meta['wall_s']:.0f} s. {bench.CELLS_NOTE}\n")
    print("\n".join(results.table()))
    failures = results.failure_lines()
    if failures:
        print("\n" + "\n".join(failures))
    if args.json:
        try:
            results.write_json(args.json)
        except OSError as e:  # checked before the run, but the disk may have filled since
            print(f"links bench: cannot write --json {args.json}: {e.strerror or e}", file=sys.stderr)
            return 1
        print(f"\nraw rounds: {args.json}")
    if results.failures:
        print(f"\nresult: FAILED, {len(results.failures)} measurement(s) failed (above)")
        return 1
    print("\nresult: OK, every measurement passed its completion check")
    return 0


def _header(m: dict[str, Any], pinning: str, notes: list[str]) -> str:
    """One line naming the machine and where the two processes of each measurement run."""
    return (
        f"links bench, {m['date']}: {m['nproc']} CPUs ({m['cpu_model']}), Python {m['python']}, {m['platform']}; "
        f"links vs plain Python blocking sockets; {pinning}" + "".join(f"; {n}" for n in notes)
    )
