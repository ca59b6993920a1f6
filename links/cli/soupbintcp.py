"""``links serve soupbintcp`` and ``links connect soupbintcp``: a SoupBinTCP echo server and client.

``serve`` runs a ``Svc`` whose receivers are spawned into the poll thread; its
``SvcProtocol`` answers every Unsequenced Data with the same payload as Sequenced Data
(``reply=``), on the poll thread. The first line on stdout is ``listening on HOST:PORT``
(so ``--port 0`` is usable from scripts); logs go to stderr. Ctrl-C (or SIGTERM) closes the
service, which sends End of Session to every client, and exits with 0.

``connect`` logs in, sends each line of stdin, or ``--count`` generated messages, as
Unsequenced Data, and prints every Sequenced Data that comes back as ``SEQUENCE PAYLOAD`` on
stdout. The receiver runs in the poll thread, so replies print while input is still being
read. When the input ends it waits until as many replies came back as messages went out (or
until none arrived for ``--linger`` seconds), logs out, and exits with 0; Ctrl-C logs out and
exits with 0 too (during the login it takes effect once the login is over, within
``--timeout``). It exits with 1, saying why on stderr, when the login is rejected or times
out, or when the server ends the session or the connection breaks.

Both draw a progress line with rates on stderr when it is a terminal.

``serve --workers N`` scales a server past one core: this process binds the port with
``SO_REUSEPORT`` and starts N-1 more processes bound to the same port, and the kernel spreads
new connections across all N. Each worker has its own poll thread and its own store of
Sequenced Data, so a client that reconnects may land on another worker and cannot replay
what the first one numbered: use one worker where replay across reconnects matters.
"listening on" comes once every worker listens; the progress line counts all of them. Ctrl-C
stops every worker (each sends End of Session to its clients). A worker that dies is
reported and stops the whole server with exit status 1 (see ``_workers``).

Usage mistakes (a port out of range, an address without a port, a username longer than a
Login Request carries, a negative count) end in one line and exit status 2 before anything
starts; a port in use, or a server that breaks the connection, in one line and status 1.

``serve`` and ``connect`` are shared commands: each protocol adds itself under them, so
this module creates them only if no other module did yet.
"""

from __future__ import annotations

import argparse
import os
import queue
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack
from typing import Any

import links
from links.lowlevel import format_addr
from links.soupbintcp import CltProtocol, EndOfSession, SequencedData, SvcProtocol, UnsequencedData

from ._args import address, ascii_text, at_least, port, positive
from ._logging import LEVELS, configure_logging
from ._progress import ProgressLine, Rate
from ._signals import interrupt_on_signals, signals_held
from ._tls import TlsSetupError, add_client_options, add_server_options, client_context, server_context
from ._workers import Workers, workers

__all__ = ["connect", "register", "serve"]

#: The largest payload of a packet: its 16-bit length counts the type byte too.
MAX_PAYLOAD = 0xFFFF - 1


def register(subparsers: Any) -> None:
    serve_parser = _protocols(subparsers, "serve", "run a server for a built-in protocol")
    parser = serve_parser.add_parser(
        "soupbintcp",
        help="a SoupBinTCP 4.0 echo server",
        description=(
            "A SoupBinTCP 4.0 server that answers every Unsequenced Data with the same payload as "
            "Sequenced Data. Prints 'listening on HOST:PORT' first; logs go to stderr; Ctrl-C ends "
            "the session for every client and exits."
        ),
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    parser.add_argument("--port", type=port, default=0, help="port, 0-65535; 0 picks a free one (default 0)")
    _credentials(parser)
    parser.add_argument("--login-timeout", type=positive(float), default=5.0, help="seconds to log in (default 5)")
    parser.add_argument(
        "--login-throttle", type=positive(float), default=1.0,
        help="seconds after a failed login during which that address's logins are refused unchecked (default 1)",
    )  # fmt: skip
    parser.add_argument(
        "--max-connections", type=positive(int), default=128, help="connections admitted at once (default 128)"
    )
    parser.add_argument(
        "--max-messages", type=positive(int), default=100_000, help="messages kept per user for replay (default 100000)"
    )
    parser.add_argument(
        "--workers", type=positive(int), default=1,
        help="processes sharing the port (SO_REUSEPORT; the kernel spreads connections; default 1)",
    )  # fmt: skip
    parser.add_argument(
        "--reuse-port", action="store_true", help="bind with SO_REUSEPORT (default off; implied by --workers > 1)"
    )
    add_server_options(parser)
    # A worker started by --workers: reports to the first process on stdout (see _workers).
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.set_defaults(func=serve)

    connect_parser = _protocols(subparsers, "connect", "connect to a server of a built-in protocol")
    parser = connect_parser.add_parser(
        "soupbintcp",
        help="log in to a SoupBinTCP 4.0 server, send lines or generated messages, print the replies",
        description=(
            "Logs in, sends each line of stdin (or --count generated messages) as Unsequenced Data and "
            "prints each Sequenced Data received as 'SEQUENCE PAYLOAD'. Logs out on end of input or Ctrl-C."
        ),
    )
    parser.add_argument("addr", metavar="HOST:PORT", type=address, help="the server (port 1-65535)")
    _credentials(parser)
    parser.add_argument(
        "--sequence", type=at_least(0), default=0, help="first sequence number wanted; 0 (default): from now on"
    )
    parser.add_argument(
        "--count", type=at_least(0), help="send this many generated messages instead of stdin lines (default: stdin)"
    )
    parser.add_argument(
        "--size", type=at_least(0, MAX_PAYLOAD), default=0,
        help=f"pad generated messages to this many bytes, up to {MAX_PAYLOAD} (default 0: no padding)",
    )  # fmt: skip
    parser.add_argument("--timeout", type=positive(float), default=5.0, help="seconds to connect and log in (default 5)")
    parser.add_argument(
        "--linger", type=positive(float), default=1.0, help="seconds of quiet to wait for replies (default 1)"
    )
    parser.add_argument("--quiet", action="store_true", help="print no replies, only the final count (default off)")
    add_client_options(parser)
    parser.set_defaults(func=connect)


def _protocols(subparsers: Any, command: str, help: str) -> Any:
    """The sub-subcommands of ``links serve`` / ``links connect``, created on first use."""
    parser = subparsers.choices.get(command)
    if parser is None:
        parser = subparsers.add_parser(command, help=help, description=help)
        parser.links_protocols = parser.add_subparsers(dest="protocol", metavar="PROTOCOL", required=True)
    return parser.links_protocols


def _credentials(parser: argparse.ArgumentParser) -> None:
    # The widths of the Login Request's fields: a longer name could never log in.
    parser.add_argument("--username", type=ascii_text(6), required=True, help="login username (up to 6 characters)")
    parser.add_argument("--password", type=ascii_text(10), required=True, help="login password (up to 10 characters)")
    parser.add_argument(
        "--session", type=ascii_text(10), default="", help="session name (up to 10 characters; default blank)"
    )
    parser.add_argument("--heartbeat", type=positive(float), default=1.0, help="heartbeat interval, s (default 1)")
    parser.add_argument("--idle-timeout", type=positive(float), default=15.0, help="peer silence allowed, s (default 15)")
    parser.add_argument("--log-level", choices=LEVELS, default="info", help="lowest log level on stderr (default info)")


def _worker_command(args: argparse.Namespace, bound: int) -> list[str]:
    """The command line of one worker: this server's settings, on the port ``bound``."""
    from ..bench import python_command  # noqa: PLC0415 - only --workers needs it

    return python_command(
        "links", "serve", "soupbintcp", "--worker", "--host", args.host, "--port", str(bound),
        "--username", args.username, "--password", args.password, "--session", args.session,
        "--heartbeat", str(args.heartbeat), "--idle-timeout", str(args.idle_timeout),
        "--login-timeout", str(args.login_timeout), "--login-throttle", str(args.login_throttle),
        "--max-connections", str(args.max_connections),
        "--max-messages", str(args.max_messages), "--log-level", args.log_level,
        *(item for option in ("tls_cert", "tls_key", "tls_client_ca") if getattr(args, option)
          for item in ("--" + option.replace("_", "-"), getattr(args, option))),
    )  # fmt: skip


# -- serve ----------------------------------------------------------------------------------------


class _ServerTally(links.Callback):
    """Unsequenced Data in, Sequenced Data out. Both happen on the poll thread only."""

    def __init__(self) -> None:
        self.received = 0
        self.sent = 0

    def on_recv(self, con_id: Any, msg: Any) -> None:
        if type(msg) is UnsequencedData:
            self.received += 1

    def on_sent(self, con_id: Any, msg: Any) -> None:
        if type(msg) is SequencedData:
            self.sent += 1


def serve(args: argparse.Namespace) -> int:
    configure_logging(args.log_level)
    interrupt_on_signals()
    where = f"{args.host}:{args.port}"
    tally = _ServerTally()
    try:
        config = SvcProtocol(
            username=args.username, password=args.password, session=args.session, heartbeat_interval=args.heartbeat,
            idle_timeout=args.idle_timeout, login_timeout=args.login_timeout, max_messages=args.max_messages,
            reply=lambda payload: payload, login_throttle=args.login_throttle,
        )  # fmt: skip
        svc = links.Svc.bind(
            where, protocol=config, callback=tally, max_connections=args.max_connections,
            name="soupbintcp", reuse_port=args.reuse_port or args.worker or args.workers > 1, tls=server_context(args),
        )  # fmt: skip
    except ValueError as e:
        print(f"links serve soupbintcp: {e}", file=sys.stderr)
        return 2
    except OSError as e:  # the port is taken, the host is not ours, ...
        print(f"links serve soupbintcp: cannot listen on {where}: {e.strerror or e}", file=sys.stderr)
        return 1
    with svc:
        sender = svc.into_sender_with_spawned_recver()
        if args.worker:
            return _report_to_first_process(tally, sender)  # the first process prints the total
        host, bound = svc.local_addr
        command = _worker_command(args, bound) if args.workers > 1 else []
        with workers(command, args.workers - 1, args.workers) as crew:
            problem = crew.wait_ready()
            if problem is None:
                print(f"listening on {format_addr((host, bound))}", flush=True)
                problem = _show_until_interrupted(tally, sender, crew)
            if problem is not None:
                print(f"links serve soupbintcp: {problem}; stopping the server", file=sys.stderr)
            code = 0 if problem is None else 1
    # The workers' last tallies came as they stopped (Workers.stop waits for them).
    _, received, sent = (ours + theirs for ours, theirs in zip((0, tally.received, tally.sent), crew.totals()))
    every = f" ({args.workers} workers)" if args.workers > 1 else ""
    print(f"served {received} messages, sent {sent}{every}", file=sys.stderr)
    return code


def _show_until_interrupted(tally: _ServerTally, sender: links.SvcSender, crew: Workers) -> str | None:
    """Draw one progress line for the whole server until Ctrl-C (None) or a worker dies (why)."""
    received, sent = Rate(), Rate()
    label = f"{crew.total} workers  " if crew.total > 1 else ""
    idle = threading.Event()  # never set: waits are interrupted by Ctrl-C
    try:
        with ProgressLine(interval=0.5) as progress:
            while True:
                idle.wait(0.5)
                problem = crew.dead()
                if problem is not None:
                    return problem
                connections, received.count, sent.count = (
                    ours + theirs for ours, theirs in zip((len(sender), tally.received, tally.sent), crew.totals())
                )
                progress.update(
                    lambda: f"{label}{connections} connections  {received.count:,} in ({received.shown()})"
                    f"  {sent.count:,} out ({sent.shown()})"
                )
    except KeyboardInterrupt:
        return None


def _report_to_first_process(tally: _ServerTally, sender: links.SvcSender) -> int:
    """A worker's loop: ``ready``, then a tally line every half second, until Ctrl-C (as the
    first process stops its workers) or until the pipe to the first process breaks."""
    idle = threading.Event()  # never set: waits are interrupted by Ctrl-C
    try:
        print("ready", flush=True)
        try:
            while True:
                print(f"tally {len(sender)} {tally.received} {tally.sent}", flush=True)
                idle.wait(0.5)
        except KeyboardInterrupt:
            print(f"tally 0 {tally.received} {tally.sent}", flush=True)  # the last word, for the total
            return 0
    except BrokenPipeError:  # the first process is gone: nobody watches this worker any more
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # so the exit's flush does not fail
        return 1


# -- connect --------------------------------------------------------------------------------------


class _Printer(links.Callback):
    """Prints Sequenced Data as it arrives (poll thread) and lets the main thread wait for replies."""

    def __init__(self, quiet: bool) -> None:
        self.quiet = quiet
        self.received = Rate()
        self.last_at = time.monotonic()
        self.ended = False  # the server sent End of Session
        self._cond = threading.Condition()
        self._flush = sys.stdout.isatty()

    def on_recv(self, con_id: Any, msg: Any) -> None:
        if type(msg) is EndOfSession:
            self.ended = True
        if type(msg) is not SequencedData:
            return
        if not self.quiet:
            sys.stdout.write(f"{msg.sequence} {msg.payload.decode('utf-8', errors='replace')}\n")
            if self._flush:
                sys.stdout.flush()
        with self._cond:
            self.received.count += 1
            self.last_at = time.monotonic()
            self._cond.notify_all()

    def wait(self, count: int, linger: float, sender: links.CltSender) -> None:
        """Until ``count`` replies arrived, none came for ``linger`` seconds, or the connection ended."""
        with self._cond:
            while self.received.count < count and sender.is_connected():
                quiet_for = time.monotonic() - self.last_at
                if quiet_for >= linger:
                    return
                self._cond.wait(min(linger - quiet_for, _TICK))


#: How often a command waiting on stdin checks that its connection is still up.
_TICK = 0.25
_EOF = object()


def _messages(args: argparse.Namespace) -> Iterator[bytes | None]:
    """Payloads to send; None now and then while stdin has nothing, so the caller can look
    at the connection (the server may end the session while nobody types)."""
    if args.count is not None:
        for i in range(1, args.count + 1):
            yield f"msg {i}".encode().ljust(args.size, b".")
        return
    lines: queue.SimpleQueue[Any] = queue.SimpleQueue()

    def read() -> None:  # a daemon thread: a blocking read must not keep the process alive
        for line in sys.stdin:
            lines.put(line)
        lines.put(_EOF)

    threading.Thread(target=read, name="stdin", daemon=True).start()
    while True:
        try:
            line = lines.get(timeout=_TICK)
        except queue.Empty:
            yield None
            continue
        if line is _EOF:
            return
        yield line.rstrip("\r\n").encode()


def connect(args: argparse.Namespace) -> int:
    configure_logging(args.log_level)
    interrupt_on_signals()
    try:
        config = CltProtocol(
            username=args.username, password=args.password, session=args.session, sequence=args.sequence,
            heartbeat_interval=args.heartbeat, idle_timeout=args.idle_timeout,
        )  # fmt: skip
    except ValueError as e:
        print(f"links connect soupbintcp: {e}", file=sys.stderr)
        return 1
    try:
        args.tls_context = client_context(args)
    except TlsSetupError as e:
        print(f"links connect soupbintcp: {e}", file=sys.stderr)
        return 2
    try:
        return _session(args, config)
    except KeyboardInterrupt:
        return 0


def _why(error: BaseException) -> str:
    """One line on why the connection ended, in the user's words where the library's are an
    exception's name."""
    cause = error if isinstance(error, OSError) else error.__cause__
    if isinstance(cause, ConnectionResetError):
        return "the server reset the connection"
    if isinstance(error, OSError):  # from the name lookup, before the library's own errors
        return error.strerror or str(error)
    return str(error)


def _session(args: argparse.Namespace, config: CltProtocol) -> int:
    printer = _Printer(args.quiet)
    error: str | None = None
    with ExitStack() as stack:
        # Ctrl-C waits until the login is over and the connection is in the stack, which then
        # closes it (logging out) however we leave.
        with signals_held():
            try:
                clt = links.Clt.connect(
                    args.addr, protocol=config, callback=printer, timeout=args.timeout, tls=args.tls_context,
                    tls_server_name=args.tls_server_name,
                )  # fmt: skip
            except (links.LinksError, OSError) as e:  # LoginRejectedError, ConnectTimeout, ...
                where = f"{args.addr}: " if isinstance(e, OSError) else ""
                print(f"links connect soupbintcp: {where}{_why(e)}", file=sys.stderr)
                return 1
            stack.enter_context(clt)
        sender = clt.into_sender_with_spawned_recver()
        sent = Rate()  # from here: the rates are over the sending, not the login
        sending_done: float | None = None
        with sender, ProgressLine() as progress:
            try:
                for payload in _messages(args):
                    if payload is None:
                        if not sender.is_connected():
                            error = "the connection ended"
                            break
                        continue
                    sender.send(UnsequencedData(payload))
                    sent.count += 1
                    progress.update(  # the rates are read only when the line is redrawn
                        lambda: f"sent {sent.count:,} ({sent.shown()})  "
                        f"received {printer.received.count:,} ({printer.received.shown()})"
                    )
                sending_done = time.monotonic()
                progress.clear()
                printer.wait(sent.count, args.linger, sender)
            except KeyboardInterrupt:
                pass
            except links.LinksError as e:  # the link broke, or the server ended the session mid-send
                error = _why(e)
            if not sender.is_connected():
                # The poll thread may still be inside the dispatch that ended the connection:
                # let it finish, so the printer knows whether End of Session was the cause.
                links.default_poll_handler().sync(1.0)
                if printer.ended:
                    error = "the server ended the session"
                elif error is None and printer.received.count < sent.count:
                    error = "the connection ended before every reply came back"
    sys.stdout.flush()
    # Each rate over its own time: the sending until the last send, the replies until the
    # last reply (the wait for more after it, --linger, is no part of either).
    sending = (sending_done or time.monotonic()) - sent.started
    receiving = max(printer.last_at - sent.started, 0.0) if printer.received.count else 0.0
    print(
        f"sent {sent.count} in {sending:.2f}s ({sent.count / max(sending, 1e-9):,.0f}/s), "
        f"received {printer.received.count} in {receiving:.2f}s ({printer.received.count / max(receiving, 1e-9):,.0f}/s)",
        file=sys.stderr,
    )
    if error is not None:
        print(f"links connect soupbintcp: {error}", file=sys.stderr)
        return 1
    return 0
