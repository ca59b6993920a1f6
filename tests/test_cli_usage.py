"""User mistakes in the ``links`` command, run as a user types it (the installed command).

Every usage mistake ends in one line on stderr that names the option and the rule, with exit
status 2, before the command starts anything (no server, no benchmark run). Failures that
are not usage mistakes (a port in use, a server that breaks the connection) also end in one
line, with status 1. Never a traceback.
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import struct
import subprocess
import sys
import threading

import pytest

from links.cli import build_parser

LINKS = shutil.which("links", path=os.path.dirname(sys.executable))
CREDENTIALS = ["--username", "user", "--password", "secret"]
TIMEOUT = 20


def links(*args: str, **kwargs) -> subprocess.CompletedProcess[str]:
    assert LINKS, "the links command is not installed next to this interpreter"
    return subprocess.run([LINKS, *args], capture_output=True, text=True, timeout=TIMEOUT, **kwargs)


SERVE = ["serve", "soupbintcp", *CREDENTIALS]
CONNECT = ["connect", "soupbintcp", "127.0.0.1:9", *CREDENTIALS]


@pytest.mark.parametrize(
    ("args", "says"),
    [
        ([*SERVE, "--port", "70000"], "argument --port: port out of range 0-65535: 70000"),
        ([*SERVE, "--port", "-1"], "argument --port: port out of range 0-65535: -1"),
        ([*SERVE, "--port", "http"], "argument --port: not a port number"),
        (["connect", "soupbintcp", "notanaddress", *CREDENTIALS], "argument HOST:PORT: expected HOST:PORT"),
        (["connect", "soupbintcp", "localhost", *CREDENTIALS], "argument HOST:PORT: expected HOST:PORT"),
        (["connect", "soupbintcp", "localhost:70000", *CREDENTIALS], "argument HOST:PORT: port out of range 1-65535"),
        (["connect", "soupbintcp", "localhost:0", *CREDENTIALS], "argument HOST:PORT: port out of range 1-65535"),
        (["connect", "soupbintcp", "127.0.0.1:8_0", *CREDENTIALS], "argument HOST:PORT: expected HOST:PORT"),
        (["connect", "soupbintcp", "127.0.0.1:+80", *CREDENTIALS], "argument HOST:PORT: expected HOST:PORT"),
        ([*SERVE, "--port", "8_0"], "argument --port: not a port number: 8_0"),
        (["demo", "--seconds", "inf"], "argument --seconds: must be finite: inf"),
        (["chaos", "--cuts", "abc"], "argument --cuts: not a whole number: abc"),
        (["chaos", "--heartbeat", "0"], "argument --heartbeat: must be positive"),
        (["chaos", "--heartbeat", "nan"], "argument --heartbeat: must be positive"),
        (["chaos", "--cuts", "0"], "argument --cuts: must be positive"),
        (["chaos", "--messages", "-3"], "argument --messages: must be positive"),
        (["bench", "--json", "/nonexistent/dir/x.json"], "argument --json: no such directory: /nonexistent/dir"),
        (["bench", "--json", "/"], "argument --json: is a directory"),
        (["serve", "soupbintcp", "--username", "toolongname", "--password", "p"],
         "argument --username: at most 6 ASCII characters"),
        (["serve", "soupbintcp", "--username", "u", "--password", "elevenchars"],
         "argument --password: at most 10 ASCII characters"),
        ([*SERVE, "--session", "elevenchars"], "argument --session: at most 10 ASCII characters"),
        (["connect", "soupbintcp", "127.0.0.1:9", "--username", "toolongname", "--password", "p"],
         "argument --username: at most 6 ASCII characters"),
        ([*CONNECT, "--count", "-5"], "argument --count: must be at least 0"),
        ([*CONNECT, "--size", "-5"], "argument --size: must be 0-65534"),
        ([*CONNECT, "--size", "70000"], "argument --size: must be 0-65534"),
        ([*CONNECT, "--sequence", "-1"], "argument --sequence: must be at least 0"),
        (["demo", "--messages", "0"], "argument --messages: must be positive"),
        (["serve", "soupbintcp", "--port", "0"], "the following arguments are required: --username, --password"),
        (["mux"], "links mux: a subcommand is needed: echo, probe"),
        (["mux", "probe", "nohost"], "argument HOST:PORT: expected HOST:PORT, got 'nohost'"),
        (["mux", "probe", "127.0.0.1:0"], "argument HOST:PORT: port out of range 1-65535"),
        (["mux", "probe", "127.0.0.1:9", "--streams", "0"], "argument --streams: must be positive: 0"),
        (["mux", "probe", "127.0.0.1:9", "--messages", "-1"], "argument --messages: must be positive"),
        (["mux", "probe", "127.0.0.1:9", "--max-size", "0"], "argument --max-size:"),
        (["mux", "probe", "127.0.0.1:9", "--timeout", "nan"], "argument --timeout: must be positive"),
        (["mux", "probe", "127.0.0.1:9", "--tls-ca", "/nonexistent.pem"], "no readable file: /nonexistent.pem"),
        (["mux", "echo", "--port", "70000"], "argument --port: port out of range 0-65535: 70000"),
        (["mux", "echo", "--max-channels", "0"], "argument --max-channels: must be positive"),
        (["mux", "echo", "--tls-cert", "/nonexistent.pem"], "argument --tls-cert: no readable file: /nonexistent.pem"),
        (["rpc"], "links rpc: a subcommand is needed: call, serve"),
        (["rpc", "call", "nohost", "echo"], "argument HOST:PORT: expected HOST:PORT, got 'nohost'"),
        (["rpc", "call"], "the following arguments are required: HOST:PORT, METHOD (see"),  # ARG_JSON is optional
        (["rpc", "call", "127.0.0.1:9"], "the following arguments are required: METHOD (see"),
        (["rpc", "call", "127.0.0.1:9", "add", "2", "three"], "links rpc call: argument 2 is not JSON"),
        (["rpc", "call", "127.0.0.1:9", "echo", "1", "--timeout", "0"], "argument --timeout: must be positive: 0"),
        (["rpc", "serve", "--port", "70000"], "argument --port: port out of range 0-65535: 70000"),
        (["rpc", "serve", "--max-connections", "0"], "argument --max-connections: must be positive"),
        ([], "links: a command is needed: bench, chaos, connect, demo, mux, rpc, serve"),
        (["demo", "--foo"], "links demo: unrecognized arguments: --foo"),
        ([*SERVE, "--worker", "3"], "links serve soupbintcp: unrecognized arguments: 3"),
    ],
)  # fmt: skip
def test_a_usage_mistake_is_one_line_naming_the_option_and_exit_status_2(args, says):
    done = links(*args)
    assert done.returncode == 2, done.stdout + done.stderr
    assert "Traceback" not in done.stderr
    lines = done.stderr.splitlines()
    assert len(lines) == 1, done.stderr
    assert says in lines[0], lines[0]
    assert lines[0].startswith(("links ", "links:"))  # the command it came from
    assert done.stdout == ""  # nothing started: no "listening on", no benchmark header


@pytest.mark.parametrize("command", [SERVE, ["mux", "echo"], ["rpc", "serve"]], ids=["serve", "mux-echo", "rpc-serve"])
def test_a_port_in_use_names_the_address(command):
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        done = links(*command, "--port", str(port), "--log-level", "error")
    assert done.returncode == 1
    said = f"links {' '.join(command[:2])}: cannot listen on 127.0.0.1:{port}: Address already in use"
    assert done.stderr.splitlines() == [said]
    assert done.stdout == ""


def _one_shot_server(reply: bytes, reset: bool) -> tuple[socket.socket, threading.Thread]:
    """A server that reads the login, answers ``reply`` and closes (with an RST if ``reset``)."""
    listener = socket.create_server(("127.0.0.1", 0))

    def serve() -> None:
        conn, _ = listener.accept()
        with conn:
            conn.recv(1024)
            conn.sendall(reply)
            if reset:
                conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))

    thread = threading.Thread(target=serve, name="one-shot-server")
    thread.start()
    return listener, thread


@pytest.mark.parametrize(
    ("reply", "reset"),
    [(b"HTTP/1.1 400 Bad Request\r\n\r\n", False), (b"HTTP/1.1 400 Bad Request\r\n\r\n", True),
     (b"\x00\x05Zxxxx", False), (b"\xff" * 100, True)],
)  # fmt: skip
def test_a_server_that_sends_garbage_gets_a_one_line_reason(reply, reset):
    listener, thread = _one_shot_server(reply, reset)
    with listener:
        addr = f"127.0.0.1:{listener.getsockname()[1]}"
        done = links("connect", "soupbintcp", addr, *CREDENTIALS, "--count", "3", "--log-level", "error")
        thread.join(TIMEOUT)
    assert done.returncode == 1
    assert "Traceback" not in done.stderr and "ConnectionResetError" not in done.stderr
    assert [line for line in done.stderr.splitlines() if line.startswith("links connect soupbintcp: ")], done.stderr
    assert len(done.stderr.splitlines()) <= 2, done.stderr  # the reason, and the count line if it got that far


# -- --help ---------------------------------------------------------------------------------------


def _commands(parser, prefix=("links",)):
    """(name, parser) of every command and subcommand below ``parser``."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield (*prefix, name), sub
                yield from _commands(sub, (*prefix, name))


def _options(parser):
    return [a for a in parser._actions if not isinstance(a, (argparse._HelpAction, argparse._SubParsersAction))]


def test_every_command_has_a_description_and_every_option_a_help_with_its_default():
    commands = dict(_commands(build_parser()))
    assert ("links", "bench") in commands and ("links", "serve", "soupbintcp") in commands
    missing = []
    for name, parser in commands.items():
        if not parser.description:
            missing.append(f"{' '.join(name)}: no description")
        for action in _options(parser):
            if action.help == argparse.SUPPRESS:
                continue  # internal (serve's --worker)
            label = f"{' '.join(name)} {'/'.join(action.option_strings) or action.dest}"
            if not action.help:
                missing.append(f"{label}: no help")
            elif action.option_strings and not action.required and "default" not in action.help:
                missing.append(f"{label}: help does not give the default")
    assert not missing, "\n".join(missing)


@pytest.mark.parametrize(
    "command",
    [["bench"], ["chaos"], ["demo"], ["serve", "soupbintcp"], ["connect", "soupbintcp"],
     ["mux", "echo"], ["mux", "probe"], ["rpc", "call"], ["rpc", "serve"]],
)  # fmt: skip
def test_help_describes_the_command(command):
    done = links(*command, "--help")
    assert done.returncode == 0
    usage, description = done.stdout.split("\n\n")[:2]
    assert usage.startswith(f"usage: links {' '.join(command)}")
    assert not description.startswith(("options:", "positional arguments:")), done.stdout  # not the option list
    assert len(description.split()) > 10, done.stdout
