"""links is quiet until the application asks for its events (``links._log``).

Each program runs in a subprocess, as a user's would, with whatever logging it configures
(or none): structlog's own default would print every info event on stdout, so only a fresh
interpreter shows what a user sees.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

README = Path(__file__).resolve().parent.parent / "README.md"

ROUND_TRIP = textwrap.dedent(
    """
    import links

    class Json(links.Protocol):
        framer = links.LengthPrefixFramer(header_size=4, max_frame_size=1 << 16)
        messenger = links.JsonMessenger()

    with links.Svc.bind("127.0.0.1:0", protocol=Json) as svc:
        svc_sender = svc.into_sender_with_spawned_recver()
        with links.Clt.connect(f"127.0.0.1:{svc.local_addr[1]}", protocol=Json, timeout=5) as clt:
            clt.send({"hello": 1})
            svc_sender.send({"reply": 2}, timeout=5)
            print(clt.recv(timeout=5))
    """
)


def run(program: str, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    script = tmp_path / "program.py"
    script.write_text(program)
    done = subprocess.run([sys.executable, str(script)], cwd=tmp_path, capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    return done


@pytest.mark.timeout(60)
def test_a_program_that_configures_nothing_prints_only_its_own_output(tmp_path):
    done = run(ROUND_TRIP, tmp_path)
    assert done.stdout == "{'reply': 2}\n"
    assert done.stderr == ""


@pytest.mark.timeout(60)
def test_the_readme_tour_prints_its_one_line_and_nothing_else(tmp_path):
    tour = re.findall(r"```python\n(.*?)```", README.read_text(), re.S)[0]
    done = run(tour, tmp_path)
    assert done.stdout == "{'hi': 'back'}\n"
    assert done.stderr == ""


@pytest.mark.timeout(60)
def test_warnings_still_reach_stderr_unconfigured(tmp_path):
    done = run(
        ROUND_TRIP
        + textwrap.dedent(
            """
            import socket, struct
            svc = links.Svc.bind("127.0.0.1:0", protocol=Json)
            svc.into_sender_with_spawned_recver()
            with socket.create_connection(svc.local_addr) as peer:
                peer.sendall(struct.pack("!I", 1 << 30))  # a frame far over max_frame_size
                peer.settimeout(5)
                assert peer.recv(1) == b""  # cut for it
            svc.close()
            """
        ),
        tmp_path,
    )
    assert done.stdout == "{'reply': 2}\n"
    assert done.stderr.startswith("frame.too_large con_id=Acceptor(svc@127.0.0.1:")
    assert "max_frame_size=65536" in done.stderr and len(done.stderr.splitlines()) == 1


@pytest.mark.timeout(60)
def test_stdlib_logging_gets_every_event_with_its_fields(tmp_path):
    done = run(
        textwrap.dedent(
            """
            import json, logging, sys

            class Fields(logging.Handler):  # what a structured handler can read off each record
                def emit(self, record):
                    sys.stderr.write(json.dumps({"logger": record.name, "event": record.event, "fields": record.fields,
                                                 "line": record.getMessage()}, default=str) + "\\n")

            logging.basicConfig(level=logging.INFO, handlers=[Fields()])
            """
        )
        + ROUND_TRIP,
        tmp_path,
    )
    assert done.stdout == "{'reply': 2}\n"
    records = [json.loads(line) for line in done.stderr.splitlines()]
    events = [r["event"] for r in records]
    for event in ("svc.bound", "svc.accepted", "clt.connected", "clt.disconnected", "svc.closed"):
        assert event in events
    bound = next(r for r in records if r["event"] == "svc.bound")
    assert bound["logger"] == "links.svc" and bound["fields"]["max_connections"] == 128
    assert bound["line"].startswith("svc.bound svc=svc addr=127.0.0.1:")


@pytest.mark.timeout(60)
def test_an_application_that_configures_structlog_gets_every_event_in_its_format(tmp_path):
    done = run(
        textwrap.dedent(
            """
            import sys, structlog
            structlog.configure(
                processors=[structlog.processors.add_log_level, structlog.processors.JSONRenderer()],
                logger_factory=structlog.PrintLoggerFactory(sys.stderr),
            )
            """
        )
        + ROUND_TRIP,
        tmp_path,
    )
    assert done.stdout == "{'reply': 2}\n"
    entries = [json.loads(line) for line in done.stderr.splitlines()]
    accepted = next(e for e in entries if e["event"] == "svc.accepted")
    assert accepted["level"] == "info" and accepted["in_use"] == 1 and accepted["con_id"].startswith("Acceptor(")


@pytest.mark.timeout(60)
def test_still_quiet_after_a_test_captured_the_logs(tmp_path):
    """``capture_logs`` leaves structlog "configured" with its defaults when it ends; that is
    no request for info lines on stdout."""
    done = run(
        textwrap.dedent(
            """
            import links, structlog.testing
            with structlog.testing.capture_logs() as captured:
                links.Svc.bind("127.0.0.1:0", protocol=links.Protocol).close()
            assert [e["event"] for e in captured] == ["svc.bound", "svc.closed"]
            """
        )
        + ROUND_TRIP,
        tmp_path,
    )
    assert done.stdout == "{'reply': 2}\n"


@pytest.mark.timeout(60)
def test_stdlib_records_name_the_code_that_logged(tmp_path):
    done = run(
        textwrap.dedent(
            """
            import logging, sys
            logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(module)s %(funcName)s %(message)s")
            """
        )
        + ROUND_TRIP,
        tmp_path,
    )
    bound = next(line for line in done.stderr.splitlines() if " svc.bound " in line)
    assert bound.startswith("_svc bind svc.bound")
