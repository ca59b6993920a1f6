"""Argument types shared by the subcommands.

Each is an argparse ``type``: it turns the text into a value or raises
``ArgumentTypeError`` with the rule, so a mistake ends in one usage line naming the option
(exit status 2) before the command does anything.
"""

from __future__ import annotations

import argparse
import math
import os
from collections.abc import Callable
from typing import Any

from ..lowlevel import parse_addr

__all__ = ["address", "ascii_text", "at_least", "port", "positive", "writable_file"]


def positive(kind: Callable[[str], Any]) -> Callable[[str], Any]:
    """An argparse ``type``: ``kind(text)``, refused unless it is above zero (so never nan,
    which compares false with everything: a wait of nan seconds would never end)."""

    def parse(text: str) -> Any:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a {'whole ' if kind is int else ''}number: {text}") from None
        if not value > 0:
            raise argparse.ArgumentTypeError(f"must be positive: {text}")
        if not math.isfinite(value):
            raise argparse.ArgumentTypeError(f"must be finite: {text}")
        return value

    return parse


def at_least(least: int, most: int | None = None) -> Callable[[str], int]:
    """An argparse ``type``: a whole number in ``least..most`` (no upper bound when None)."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a whole number: {text}") from None
        if value < least or (most is not None and value > most):
            rule = f"must be at least {least}" if most is None else f"must be {least}-{most}"
            raise argparse.ArgumentTypeError(f"{rule}: {text}")
        return value

    return parse


def port(text: str) -> int:
    """A port to listen on: 0-65535 (0 picks a free one)."""
    if not text.removeprefix("-").isdecimal() or not text.isascii():  # int() also takes "8_0", " 80"
        raise argparse.ArgumentTypeError(f"not a port number: {text}")
    value = int(text)
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"port out of range 0-65535: {text}")
    return value


def address(text: str) -> str:
    """``HOST:PORT`` to connect to, with a port in 1-65535 (``[::1]:PORT`` for IPv6): the
    library's own rule (``parse_addr``), so what passes here is what ``Clt.connect`` takes."""
    if not text.rpartition(":")[0].strip("[]"):
        raise argparse.ArgumentTypeError(f"expected HOST:PORT, got {text!r}")
    try:
        parse_addr(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e).replace("'host:port'", "HOST:PORT")) from None
    return text


def ascii_text(most: int) -> Callable[[str], str]:
    """An argparse ``type``: ASCII text of at most ``most`` characters (a fixed-width field)."""

    def parse(text: str) -> str:
        if not text.isascii() or len(text) > most:
            raise argparse.ArgumentTypeError(f"at most {most} ASCII characters: {text!r}")
        return text

    return parse


def writable_file(text: str) -> str:
    """A file the command will write at the end: its folder must exist and be writable now,
    so a typo does not cost a whole run."""
    folder = os.path.dirname(os.path.abspath(text))
    if os.path.isdir(text):
        raise argparse.ArgumentTypeError(f"is a directory: {text}")
    if not os.path.isdir(folder):
        raise argparse.ArgumentTypeError(f"no such directory: {folder}")
    if not os.access(folder, os.W_OK) or (os.path.exists(text) and not os.access(text, os.W_OK)):
        raise argparse.ArgumentTypeError(f"cannot write: {text}")
    return text
