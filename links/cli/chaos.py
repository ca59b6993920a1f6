"""``links chaos``: resumable sessions under random cuts, with a progress bar and a final tally.

Runs ``links.testing.run_chaos``: a service and a client with ``session=`` and ``reconnect=``
stream numbered messages both ways through a ``FaultProxy`` that cuts the connection
(RST, FIN, or after a random number of bytes: mid-frame) ``--cuts`` times. The tally counts
lost, duplicated, reordered and unexpected messages; the exit code is 0 only when all four
are zero, every cut fired and every cut was resumed. The seed is printed first, so a failing
run can be repeated with ``--seed``.
"""

from __future__ import annotations

import argparse

from ._args import at_least, positive
from ._logging import LEVELS, configure_logging
from ._progress import ProgressLine, bar, print_table

__all__ = ["register"]


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "chaos",
        help="cut a resumable session at random; count lost/duplicated messages",
        description=(
            "Streams numbered messages both ways over a resumable session while a fault proxy cuts "
            "the connection (RST, FIN or mid-frame) --cuts times, then prints a tally of lost, "
            "duplicated, reordered and unexpected messages. Exit code 0 only if all are zero and "
            "every cut was resumed; the seed is printed first, so a run can be repeated."
        ),
    )
    parser.add_argument("--cuts", type=positive(int), default=1000, help="connection cuts (default 1000)")
    parser.add_argument(
        "--messages", type=positive(int), default=100_000, help="messages in each direction (default 100000)"
    )
    parser.add_argument(
        "--seed", type=at_least(0), default=None, help="the seed of the cut schedule (default: a random one, printed)"
    )
    parser.add_argument(
        "--heartbeat", type=positive(float), default=0.05, help="session heartbeat interval, s (default 0.05)"
    )
    parser.add_argument(
        "--log-level", choices=LEVELS, default="error", help="lowest log level on stderr (default error)"
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import random

    from ..testing import run_chaos

    configure_logging(args.log_level)
    seed = random.randrange(1 << 32) if args.seed is None else args.seed
    print(f"seed {seed}: {args.cuts} cuts, {args.messages} messages each way", flush=True)
    with ProgressLine() as line:

        def progress(cuts_done: int, cuts: int, to_server: int, to_client: int) -> None:
            line.update(f"{bar(cuts_done, cuts)} cuts {cuts_done}/{cuts}  delivered c->s {to_server}  s->c {to_client}")

        result = run_chaos(cuts=args.cuts, messages=args.messages, seed=seed, heartbeat_interval=args.heartbeat, progress=progress)
    print_table(
        [
            ("seed", result.seed),
            ("cuts fired", f"{result.cuts_fired}/{result.cuts} " + str(result.cuts_by_kind)),
            ("resumes", f"client {result.resumes_client}, server {result.resumes_server}"),
            ("delivered", f"client->server {result.received_by_server}, server->client {result.received_by_client}"),
            ("lost", result.lost),
            ("duplicated", result.duplicated),
            ("reordered", result.reordered),
            ("unexpected", result.unexpected),
            ("seconds", f"{result.seconds:.1f}"),
            ("verdict", "OK" if result.ok else "FAILED " + "; ".join(result.errors)),
        ],
        title="chaos tally",
    )
    return 0 if result.ok else 1


