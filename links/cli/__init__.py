"""The ``links`` command."""

from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> int:
    print("links: command not implemented yet", file=sys.stderr)
    return 2
