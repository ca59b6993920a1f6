"""Argument types shared by the subcommands."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any

__all__ = ["positive"]


def positive(kind: Callable[[str], Any]) -> Callable[[str], Any]:
    """An argparse ``type``: ``kind(text)``, refused unless it is above zero (so never nan,
    which compares false with everything: a wait of nan seconds would never end)."""

    def parse(text: str) -> Any:
        value = kind(text)
        if not value > 0:
            raise argparse.ArgumentTypeError(f"must be positive: {text}")
        return value

    return parse
