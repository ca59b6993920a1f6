"""The ``links`` command: ``links demo``, and more subcommands as modules of this package.

Each subcommand lives in its own module exposing ``register(subparsers)``, which adds its
parser and sets ``func`` (called with the parsed ``args``, returning an exit code). The
command configures structlog for humans on stderr; the library itself never does.
"""

from __future__ import annotations

import argparse
import importlib
import sys

__all__ = ["main"]

#: Modules of this package that add subcommands, in help order.
SUBCOMMANDS = ["demo", "soupbintcp", "chaos", "bench"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="links", description="Message-oriented TCP connections.")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in SUBCOMMANDS:
        importlib.import_module(f"{__name__}.{name}").register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help(sys.stderr)
        return 2
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        return 130
