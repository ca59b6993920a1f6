"""What the ``links`` subcommands do before their work: logging, signals, the TLS context; and
the wait of a server that serves until Ctrl-C or SIGTERM."""

from __future__ import annotations

import argparse
import ssl
import threading
from collections.abc import Callable
from typing import Any

from ._logging import configure_logging
from ._signals import interrupt_on_signals
from ._tls import TlsSetupError

__all__ = ["start", "tls_context", "tls_options", "serve_until_interrupted"]


def tls_context(args: argparse.Namespace, context: Callable[[Any], ssl.SSLContext | None]) -> ssl.SSLContext | None:
    """The TLS context asked for (``server_context`` or ``client_context``); a bad certificate
    file is a usage mistake: one line, status 2."""
    try:
        return context(args)
    except TlsSetupError as e:
        args._parser.error(str(e))


def start(args: argparse.Namespace, context: Callable[[Any], ssl.SSLContext | None]) -> ssl.SSLContext | None:
    """Logging and signals as every long-running command has them, then ``tls_context``."""
    configure_logging(args.log_level)
    interrupt_on_signals()
    return tls_context(args, context)


def tls_options(args: argparse.Namespace, tls: ssl.SSLContext | None) -> dict[str, Any]:
    """A client's TLS keywords for ``connect``: none without TLS."""
    return {"tls": tls, "tls_server_name": args.tls_server_name} if tls is not None else {}


def serve_until_interrupted() -> None:
    """Wait until Ctrl-C or SIGTERM (``interrupt_on_signals``) while the poll thread serves."""
    idle = threading.Event()  # never set: the wait ends with Ctrl-C or SIGTERM
    try:
        while True:
            idle.wait(1.0)
    except KeyboardInterrupt:
        pass
