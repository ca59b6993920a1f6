"""``links rpc call`` and ``links rpc serve``: msgpack-rpc requests from the command line.

``links rpc call HOST:PORT METHOD [ARG_JSON ...]`` sends one request (each argument a JSON
value, in order) and prints the result as JSON on stdout; an error reply goes to stderr and
the exit status is 1. ``links rpc serve --host H --port P`` answers ``echo(x) -> x``,
``add(a, b) -> a + b``, ``sleep(seconds) -> seconds`` and ``fail(message)`` (an error reply
carrying ``message``) on every connection it accepts, until Ctrl-C or SIGTERM. Both speak
msgpack-rpc as its specification defines it (``links.rpc``), so either works against any
other program that does.

``sleep`` replies after its delay without holding other calls back: its handler returns a
future that a task on the links timer completes, so the poll thread (where every handler
here runs) never waits.

``links.rpc`` (and so msgpack) is imported on first use, by the two commands only: every other
``links`` command starts without it.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from concurrent.futures import Future
from typing import Any

import links
from links.lowlevel import format_addr

from ._args import address, port, positive
from ._logging import LEVELS, configure_logging
from ._startup import serve_until_interrupted, start, tls_context, tls_options
from ._tls import add_client_options, add_server_options, client_context, server_context

__all__ = ["register", "methods"]

#: The longest ``sleep`` served: a longer one would only hold a timer task past any client's wait.
MAX_SLEEP_S = 3600.0


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "rpc",
        help="request/response over msgpack-rpc: call a method, or serve a few",
        description="Call a method of a msgpack-rpc server, or serve echo, add, sleep and fail.",
    )
    commands = parser.add_subparsers(dest="rpc_command", metavar="SUBCOMMAND")
    call = commands.add_parser(
        "call",
        help="send one request and print the result as JSON",
        description=(
            "Sends one msgpack-rpc request, METHOD with the arguments given (each a JSON value), "
            "and prints the result as JSON. An error reply is printed on stderr, exit status 1."
        ),
    )
    call.add_argument("addr", type=address, metavar="HOST:PORT", help="the server")
    call.add_argument("method", metavar="METHOD", help="the method to call")
    call.add_argument("params", nargs="*", default=[], metavar="ARG_JSON", help='its arguments, each a JSON value (2, "text", [1, 2])')
    call.add_argument("--timeout", type=positive(float), default=10.0, help="seconds to connect and for the reply (default 10)")
    add_client_options(call)
    call.add_argument("--log-level", choices=LEVELS, default="warning", help="lowest log level on stderr (default warning)")
    call.set_defaults(func=run_call)

    serve = commands.add_parser(
        "serve",
        help="serve echo, add, sleep and fail",
        description=(
            "Serves msgpack-rpc on every TCP connection accepted: echo(x) -> x, add(a, b) -> a + b, "
            "sleep(seconds) -> seconds (after the delay, other calls going on meanwhile) and "
            "fail(message), an error reply carrying message; until Ctrl-C or SIGTERM."
        ),
    )
    serve.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    serve.add_argument("--port", type=port, default=0, help="port to listen on (default 0: any free one, printed)")
    serve.add_argument("--max-connections", type=positive(int), default=128, help="connections at once (default 128)")
    add_server_options(serve)
    serve.add_argument("--log-level", choices=LEVELS, default="info", help="lowest log level on stderr (default info)")
    serve.set_defaults(func=run_serve)
    parser.set_defaults(func=lambda args: args._parser.error("a subcommand is needed: call, serve"))


# -- serve --------------------------------------------------------------------------------------


class Failed(Exception):
    """The error ``fail(message)`` replies with."""


def methods(timer: links.Timer | None = None) -> links.rpc.Server:
    """The methods ``links rpc serve`` answers, on a server (``timer``: where ``sleep`` waits)."""
    import links.rpc

    server = links.rpc.Server()
    clock = links.default_timer() if timer is None else timer

    @server.method
    def echo(x: Any) -> Any:
        return x

    @server.method
    def add(a: Any, b: Any) -> Any:
        return a + b

    @server.method
    def sleep(seconds: float) -> Future[float]:
        if isinstance(seconds, bool) or not isinstance(seconds, (int, float)) or not 0 <= seconds <= MAX_SLEEP_S:
            raise ValueError(f"seconds must be a number from 0 to {MAX_SLEEP_S:g}, not {seconds!r}")
        done: Future[float] = Future()

        def wake() -> links.TaskStatus:
            if done.set_running_or_notify_cancel():
                done.set_result(seconds)
            return links.TaskStatus.TERMINATE

        clock.schedule("rpc-sleep", 1.0, wake, delay=seconds)
        return done

    @server.method
    def fail(message: Any) -> None:
        raise Failed(message if isinstance(message, str) else json.dumps(_jsonable(message)))

    return server


def run_serve(args: argparse.Namespace) -> int:
    import links.rpc

    tls = start(args, server_context)
    try:
        svc = links.rpc.serve(f"{args.host}:{args.port}", methods(), max_connections=args.max_connections, tls=tls, name="rpc-serve")
    except OSError as e:
        print(f"links rpc serve: cannot listen on {args.host}:{args.port}: {e.strerror or e}", file=sys.stderr)
        return 1
    with svc:
        print(f"rpc serve listening on {format_addr(svc.local_addr)}", flush=True)
        serve_until_interrupted()
    return 0


# -- call ---------------------------------------------------------------------------------------


def _params(args: argparse.Namespace) -> list[Any]:
    values = []
    for i, text in enumerate(args.params, 1):
        try:
            values.append(json.loads(text))
        except ValueError as e:
            args._parser.error(f"argument {i} is not JSON ({e}): {text}")
    return values


def run_call(args: argparse.Namespace) -> int:
    params = _params(args)  # a usage mistake first, before anything is loaded or dialled
    import links.rpc

    configure_logging(args.log_level)
    tls = tls_context(args, client_context)
    try:
        rpc = links.rpc.connect(args.addr, timeout=args.timeout, name="rpc-call", **tls_options(args, tls))
    except (links.LinksError, OSError) as e:
        print(f"links rpc call: cannot connect to {args.addr}: {e}", file=sys.stderr)
        return 1
    with rpc:
        try:
            result = rpc.call(args.method, *params, timeout=args.timeout)
        except links.rpc.RemoteError as e:
            print(f"links rpc call: error reply: {_describe(e)}", file=sys.stderr)
            return 1
        except links.rpc.CallTimeout:
            print(f"links rpc call: no reply from {args.addr} within {args.timeout:g} s", file=sys.stderr)
            return 1
        except links.LinksError as e:
            print(f"links rpc call: {args.addr}: {e}", file=sys.stderr)
            return 1
    print(json.dumps(_jsonable(result), ensure_ascii=False))
    return 0


def _describe(e: links.rpc.RemoteError) -> str:
    """``Type: message`` for links' error replies; another server's error as it sent it."""
    if e.type:
        return f"{e.type}: {e.message}"
    return e.message if isinstance(e.error, str) else json.dumps(_jsonable(e.error), ensure_ascii=False)


def _jsonable(value: Any) -> Any:
    """A msgpack value as JSON can hold it: bytes as text (UTF-8, bad bytes escaped), map keys
    as strings, nan and infinities as strings."""
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value).decode("utf-8", "backslashreplace")
    if isinstance(value, dict):
        return {k if isinstance(k, str) else json.dumps(_jsonable(k)): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return value
