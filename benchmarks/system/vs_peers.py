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
spawned with the client waiting on its callback; W3 ``send()``; W4 ``send()`` from 100 threads,
and ``send_many`` batches from one thread driving all 100 clients. The server is always a
``Svc`` with its acceptor and receivers spawned into the poll thread and a counting callback.

``--tls`` runs W1-W3 with every connection over TLS: links (``tls=``), plain blocking sockets
wrapped with ``SSLContext.wrap_socket``, asyncio and uvloop (``ssl=``) and Twisted
(``listenSSL``/``connectSSL``), all held to one version and suite (TLS 1.2,
ECDHE-ECDSA-AES128-GCM-SHA256: the standard library cannot pin a TLS 1.3 suite), and links in
its ``send()`` and ``send_many`` (W1), ``send+recv`` and callback (W2) and ``send()`` (W3)
variants. The certificates are made at run time with trustme (a test dependency) in a
temporary directory and deleted with it; each client reports the suite it negotiated, and a
measurement whose client did not is a failed one. The C floor and pyzmq have no TLS here.

The harness itself (pinned processes, the timed window, completion checks, interleaved
rounds, medians and ratios) is ``links.bench``, shared with the ``links bench`` command; its
module docstrings (``_measure``, ``_run``) describe how a measurement runs. links and plain
sockets are built into it; this script registers the other peers (``peers.EXTRA`` in ``peers/`` beside this script: a name
and the path of a module; the C floor as ``peers.Floor``) and prints the table.

Run: python benchmarks/system/vs_peers.py [--workloads w1,w2,w3,w4] [--peers c,plain,asyncio,uvloop,zmq,twisted]
     [--rounds 5] [--scale 1.0] [--placement auto|split|same|both] [--json PATH] [--tls]
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import os
import sys
import tempfile

import peers

from links import bench

PEER_NAMES = ("c", "plain", *peers.EXTRA)  # c, plain, asyncio, uvloop, zmq, twisted
TLS_PEER_NAMES = ("plain", "asyncio", "uvloop", "twisted")  # the peers that speak TLS
TLS_WORKLOADS = ("w1", "w2", "w3")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--workloads", help="comma list of w1..w4 (default all; with --tls w1,w2,w3)")
    parser.add_argument(
        "--peers",
        help=f"comma list of {','.join(PEER_NAMES)} (default all; with --tls {','.join(TLS_PEER_NAMES)}; links always runs)",
    )
    parser.add_argument("--tls", action="store_true", help="every connection over TLS (W1-W3; certificates made with trustme)")
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds (default 5)")
    parser.add_argument("--scale", type=float, default=1.0, help="message counts x SCALE (e.g. 0.1 for a quick run)")
    parser.add_argument("--placement", choices=("auto", "split", "same", "both"), default="auto",
                        help="split: server CPU a, client CPU b; same: both on CPU a; auto (default): split, plus same for W2")  # fmt: skip
    parser.add_argument("--batch", type=int, default=64, help="links send_many batch size for W1 (default 64)")
    parser.add_argument("--timeout", type=float, default=None, help="seconds per measurement (default 20 + 30 x scale)")
    parser.add_argument(
        "--json", default=os.path.join(tempfile.gettempdir(), "vs_peers.json"), help="raw rounds go here"
    )
    args = parser.parse_args(argv)

    known_workloads, known_peers = (TLS_WORKLOADS, TLS_PEER_NAMES) if args.tls else (bench.WORKLOADS, PEER_NAMES)
    workloads = [w.strip().lower() for w in (args.workloads or ",".join(known_workloads)).split(",") if w.strip()]
    wanted = [p.strip().lower() for p in (args.peers or ",".join(known_peers)).split(",")
              if p.strip() and p.strip().lower() != "links"]  # fmt: skip
    over = " over --tls" if args.tls else ""
    for name, known in (("workload", known_workloads), ("peer", known_peers)):
        for item in workloads if name == "workload" else wanted:
            if item not in known:
                parser.error(f"unknown {name} {item!r}{over}; choose from {', '.join(known)}")
    if args.tls and importlib.util.find_spec("trustme") is None:
        parser.error("--tls makes its certificates with trustme: pip install trustme")

    skipped: dict[str, str] = {}
    impls: list[bench.Impl] = []
    with tempfile.TemporaryDirectory(prefix="vs_peers-") as tmp:
        for name in wanted:
            if name == "c":
                impl, why = peers.build_floor(tmp)
            else:
                impl = bench.PLAIN if name == "plain" else peers.EXTRA[name]
                if args.tls:
                    impl = dataclasses.replace(impl, requires=impl.requires + peers.TLS_REQUIRES.get(name, ()))
                why = impl.missing()
            if impl is None or why:
                skipped[name] = why
            else:
                impls.append(impl)
        for name, why in skipped.items():
            print(f"skipping {name}: {why}", file=sys.stderr)

        def progress(step: bench.Step, rec: dict | None) -> None:
            if rec is not None:
                print(bench.describe_record(rec, step.rounds), file=sys.stderr)

        tls = bench.make_certificates(tmp) if args.tls else ""  # deleted with tmp, at the end of the run
        results = bench.run(workloads, impls, rounds=args.rounds, scale=args.scale, placement=args.placement,
                            batch=args.batch, timeout=args.timeout, progress=progress, tls=tls)  # fmt: skip

    results.meta.update(
        command=" ".join([os.path.basename(sys.executable), "benchmarks/system/vs_peers.py"] + (argv if argv is not None else sys.argv[1:])),
        skipped=skipped,
    )  # fmt: skip
    pins, _ = bench.pinning()
    print(f"\n{args.rounds} rounds, scale {args.scale}, {results.meta['wall_s']:.0f} s; {bench.describe_pins(pins)}.")
    if args.tls:
        print(f"Every connection over TLS: {bench.TLS_VERSION}, {bench.TLS_CIPHER}, certificates made at run time.")
    print(bench.CELLS_NOTE + "\n")
    print("\n".join(results.table()))
    if skipped:
        print("\nSkipped: " + "; ".join(f"{p} ({why})" for p, why in skipped.items()))
    if results.failures:
        print("\n" + "\n".join(results.failure_lines()))
    results.write_json(args.json)
    print(f"\nraw rounds: {args.json}")
    return 1 if any(rec["impl"] == "links" for rec in results.failures) else 0


if __name__ == "__main__":
    sys.exit(main())
