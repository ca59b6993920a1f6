"""Every example runs by itself, finishes, and shows what it says it shows."""

from __future__ import annotations

import pathlib
import re
import subprocess
import sys

import pytest

EXAMPLES = pathlib.Path(__file__).resolve().parent.parent / "examples"

# Lines (or fragments) each example must print: the point it demonstrates.
EXPECTED = {
    "aio_chat.py": [
        "ann heard: ['ann', 'bob', 'cy']",
        "cy heard: ['ann', 'bob', 'cy']",
        "bob heard: bye cy",
    ],
    "spawned_recver.py": [
        "on thread 'links-poll'",  # messages reach the callback on the poll thread
        "echoes in order: [0, 1, 2]",
    ],
    "shared_refs.py": [
        "service received 3000 messages from 3 threads over one connection",
        "t0: 1000 messages, in order: True",
        "t2: 1000 messages, in order: True",
        "other clone connected = False",
        "other clone's send raises ClosedError",
    ],
    "inspect_logs.py": [
        "svc.accepted",
        "'reason': 'peer_closed'",
        "clt.disconnected       6",
        "svc.accepted           3",
    ],
    "rpc_calls.py": [
        "add(2, 3) = 5",
        "100 sums in flight, in order: True",
        "16 slow squares: [169, 196, 225]",
        "slow_square(7) with a 10 ms deadline: CallTimeout",
        "the server asks its client whoami: a client on links-poll",
    ],
    "aio_rpc.py": [
        "symbols: ['ACME', 'INIT']",
        "20 quotes at once: {101.5}, awaiting the backend side by side: True",
        "quote('NOPE'): KeyError 'NOPE'",
        "gave up on a quote: retired, 0 call(s) in flight",
        "the service asks its client whoami: a desk, answering from a coroutine",
    ],
    "handshake_heartbeat.py": [
        "alice: connected and logged in: True",
        "alice: received login_ok, then ['hb', 'hb', 'hb']",
        "mallory: login rejected: bad user or password",
        "(peer_closed)",
    ],
}


def test_every_example_is_covered():
    assert sorted(p.name for p in EXAMPLES.glob("*.py")) == sorted(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_example_runs_and_prints_what_it_shows(name):
    done = subprocess.run(
        [sys.executable, str(EXAMPLES / name)],
        capture_output=True,
        text=True,
        encoding="utf-8",
        timeout=30,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    for expected in EXPECTED[name]:
        assert expected in done.stdout, f"{name} did not print {expected!r}:\n{done.stdout}"
    assert done.stdout.rstrip().endswith("done")
    assert "Traceback" not in done.stderr


def test_handshake_deadline_closes_the_silent_client_no_earlier_than_the_deadline():
    done = subprocess.run(
        [sys.executable, str(EXAMPLES / "handshake_heartbeat.py")],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    m = re.search(r"silent: disconnected by the server after ([\d.]+)s", done.stdout)
    assert m and 0.29 <= float(m[1]) < 5.0, done.stdout
    # The rejected client's deadline was cancelled: only the silent client hit it.
    assert done.stdout.count("server: no login from") == 1
