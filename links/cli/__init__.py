"""The ``links`` command: ``links demo``, and more subcommands as modules of this package.

Each subcommand lives in its own module exposing ``register(subparsers)``, which adds its
parser and sets ``func`` (called with the parsed ``args``, returning an exit code). The
command configures structlog for humans on stderr; the library itself never does.

A usage mistake ends in one line on stderr, naming the option and the rule, and exit status
2, before the command starts anything: option types check what they can (``_args``), and the
parser prints the error alone, without the usage block (``--help`` shows that).
"""

from __future__ import annotations

import argparse
import importlib
from typing import Any, NoReturn

__all__ = ["main"]

#: Modules of this package that add subcommands, in help order.
SUBCOMMANDS = ["demo", "soupbintcp", "mux", "rpc", "chaos", "bench"]


class Parser(argparse.ArgumentParser):
    """An ``ArgumentParser`` whose errors are one line; subcommands' parsers are of this class too."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: {message} (see {self.prog} --help)\n")

    def parse_known_args(self, args: Any = None, namespace: Any = None) -> Any:
        # The innermost parser finishes first: it is the one a leftover word is reported by.
        namespace, extras = super().parse_known_args(args, namespace)
        if not hasattr(namespace, "_parser"):
            namespace._parser = self
        return namespace, extras


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="links", description="Message-oriented TCP connections.")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    parser.commands = subparsers  # type: ignore[attr-defined]
    for name in SUBCOMMANDS:
        importlib.import_module(f"{__name__}.{name}").register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, extras = parser.parse_known_args(argv)
    if extras:  # named by the subcommand they were given to, not by "links"
        args._parser.error(f"unrecognized arguments: {' '.join(extras)}")
    if not getattr(args, "func", None):
        args._parser.error("a command is needed: " + ", ".join(sorted(parser.commands.choices)))
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        return 130
