"""TLS options of the ``links`` command, and the ``ssl.SSLContext`` each side makes of them.

Server: ``--tls-cert CERT --tls-key KEY`` serve TLS; ``--tls-client-ca CA`` also requires
every client to show a certificate from that CA (mutual TLS). Client: ``--tls`` speaks TLS,
trusting the system's CAs or ``--tls-ca CA``; ``--tls-cert``/``--tls-key`` offer a client
certificate; ``--tls-server-name`` checks the server's certificate for that name instead of
the host of the address. A file that cannot be read, or a key that does not match, is a
usage error (one line, status 2) before anything listens or dials.
"""

from __future__ import annotations

import argparse
import os
import ssl
from typing import Any

__all__ = ["add_server_options", "add_client_options", "server_context", "client_context", "TlsSetupError"]


class TlsSetupError(ValueError):
    """The TLS options name files that do not make a context (the message says which)."""


def _readable(text: str) -> str:
    if not os.path.isfile(text) or not os.access(text, os.R_OK):
        raise argparse.ArgumentTypeError(f"no readable file: {text}")
    return text


def add_server_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--tls-cert", type=_readable, metavar="CERT", help="serve TLS with this certificate chain, PEM (default: no TLS)")
    parser.add_argument("--tls-key", type=_readable, metavar="KEY", help="the private key of --tls-cert, PEM (default: in CERT)")
    parser.add_argument(
        "--tls-client-ca", type=_readable, metavar="CA",
        help="require client certificates from this CA, PEM: mutual TLS (default: none asked)",
    )  # fmt: skip


def add_client_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--tls", action="store_true", help="speak TLS (default off; implied by the other --tls options)")
    parser.add_argument("--tls-ca", type=_readable, metavar="CA", help="trust this CA, PEM (default: the system's)")
    parser.add_argument("--tls-cert", type=_readable, metavar="CERT", help="offer this client certificate, PEM (default none)")
    parser.add_argument("--tls-key", type=_readable, metavar="KEY", help="the private key of --tls-cert, PEM (default: in CERT)")
    parser.add_argument(
        "--tls-server-name", metavar="NAME", help="check the server's certificate for this name (default: the host)"
    )


def server_context(args: Any) -> ssl.SSLContext | None:
    """The server's context, or None without ``--tls-cert``.

    Raises:
        TlsSetupError: the options are inconsistent, or the files do not load.
    """
    if args.tls_cert is None:
        if args.tls_key or args.tls_client_ca:
            raise TlsSetupError("--tls-key and --tls-client-ca need --tls-cert")
        return None
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    _load(ctx.load_cert_chain, "--tls-cert/--tls-key", args.tls_cert, args.tls_key)
    if args.tls_client_ca:
        _load(ctx.load_verify_locations, "--tls-client-ca", args.tls_client_ca)
        ctx.verify_mode = ssl.CERT_REQUIRED
    return ctx


def client_context(args: Any) -> ssl.SSLContext | None:
    """The client's context, or None when no TLS option was given.

    Raises:
        TlsSetupError: the options are inconsistent, or the files do not load.
    """
    if not (args.tls or args.tls_ca or args.tls_cert or args.tls_key or args.tls_server_name):
        return None
    if args.tls_key and not args.tls_cert:
        raise TlsSetupError("--tls-key needs --tls-cert")
    ctx = ssl.create_default_context()
    if args.tls_ca:
        _load(ctx.load_verify_locations, "--tls-ca", args.tls_ca)
    if args.tls_cert:
        _load(ctx.load_cert_chain, "--tls-cert/--tls-key", args.tls_cert, args.tls_key)
    return ctx


def _load(load: Any, option: str, *files: str | None) -> None:
    try:
        load(*files)
    except (ssl.SSLError, OSError, ValueError) as e:
        raise TlsSetupError(f"argument {option}: cannot load {', '.join(f for f in files if f)}: {e}") from None
