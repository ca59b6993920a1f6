"""``links demo`` as a user runs it (a subprocess), and the CLI helpers it shares with other commands."""

from __future__ import annotations

import io
import re
import subprocess
import sys

import pytest
import structlog

from links.cli._logging import configure_logging
from links.cli._progress import ProgressLine, format_table


def run_links(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "links", *args],
        capture_output=True,
        text=True,
        encoding="utf-8",
        timeout=30,
        check=False,
    )


def summary(stdout: str) -> dict[str, str]:
    """The ``label  value`` lines of the summary table."""
    rows = {}
    for line in stdout.splitlines():
        m = re.match(r"^  (\S.*?)\s{2,}(\S.*)$", line)
        if m:
            rows[m[1]] = m[2]
    return rows


def test_demo_accounts_for_every_message_and_logs_connection_events():
    done = run_links("demo", "--messages", "2000")
    assert done.returncode == 0, done.stdout + done.stderr
    rows = summary(done.stdout)
    # 2000 ticks + 2000 requests + 2000 answers + "done" to both clients.
    assert rows["messages sent"] == rows["messages received"] == "6002"
    assert rows["result"].startswith("OK")
    assert re.fullmatch(r"[\d,]+ msgs/s", rows["one-way rate"])
    assert rows["round trips"] == "2000"
    for label in ("round trip p50", "round trip p99"):
        assert re.fullmatch(r"\d+ µs", rows[label]), rows[label]
    assert int(rows["heartbeats received"]) >= 4  # at least one on each of the four connection ends
    assert re.fullmatch(r"\d+\.\d\d", rows["cpu seconds"])
    assert re.fullmatch(r"[\d.]+ MiB", rows["rss"])

    err = done.stderr
    assert err.count("svc.accepted") == 2
    assert err.count("clt.connected") == 4  # two clients, two accepted ends
    assert err.count("clt.disconnected") == 4
    assert "reason=peer_closed" in err  # the service saw its clients leave
    # Info level, and nothing per message: a few dozen lines for 6000 messages.
    assert "debug" not in err
    assert len(err.splitlines()) < 60, err
    assert done.stdout.startswith("links demo")  # stdout holds the summary only


def test_demo_says_when_the_seconds_cap_cut_it_short():
    done = run_links("demo", "--messages", "1000000", "--seconds", "1", "--log-level", "error")
    assert done.returncode == 0, done.stdout + done.stderr  # what was sent was all accounted for
    rows = summary(done.stdout)
    sent = int(rows["one-way ticks"].split()[0])
    assert sent < 1_000_000
    # (and, on a slow machine, before every round trip was made)
    assert rows["cut short"].startswith(f"the 1 s cap (--seconds) stopped it at {sent:,} of 1,000,000 one-way messages")
    assert rows["result"] == "OK: every message accounted for, but cut short (above)"
    assert "cut short" not in summary(run_links("demo", "--messages", "200", "--log-level", "error").stdout)


@pytest.mark.parametrize(("option", "value"), [("--messages", "0"), ("--seconds", "nan"), ("--heartbeat", "-1")])
def test_demo_rejects_a_bad_option_with_usage_error(option, value):
    done = run_links("demo", option, value)
    assert done.returncode == 2
    assert "must be positive" in done.stderr


def test_links_without_a_command_prints_help_and_fails():
    done = run_links()
    assert done.returncode == 2
    assert "demo" in done.stderr


def test_configure_logging_writes_console_lines_at_the_level_and_above():
    out = io.StringIO()
    saved = structlog.get_config()
    configure_logging("info", out)
    try:
        log = structlog.get_logger("links.test")
        log.debug("hidden.event")
        log.info("svc.accepted", con_id="Acceptor(x)")
    finally:
        structlog.configure(**saved)  # leave the process as other tests expect it
    text = out.getvalue()
    assert "hidden.event" not in text
    assert "svc.accepted" in text and "con_id=Acceptor(x)" in text
    assert "\x1b[" not in text  # no colours on a stream that is not a terminal


def test_summary_table_aligns_values_in_one_column():
    text = format_table([("messages sent", 10), ("rss", "1.0 MiB")], title="links demo")
    assert text.splitlines() == ["links demo", "  messages sent  10", "  rss            1.0 MiB"]


def test_progress_line_rewrites_in_place_and_clears():
    out = io.StringIO()
    line = ProgressLine(out, enabled=True, interval=0)
    line.update("sent 1000")
    line.update("sent 10")
    line.clear()
    assert out.getvalue() == "\rsent 1000" + "\rsent 10  " + "\r" + " " * 7 + "\r"


def test_progress_line_is_silent_when_not_a_terminal():
    out = io.StringIO()
    with ProgressLine(out) as line:
        line.update("sent 1000", force=True)
    assert out.getvalue() == ""
