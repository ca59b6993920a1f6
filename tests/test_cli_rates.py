"""Rates shown by ``links connect soupbintcp``: over a window of time, never one message's gap,
and at the end the count over the elapsed time."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys

import pytest
from helpers_pty import read_until, terminal

from links.cli._progress import Rate
from links.testing import FakeClock

LINKS = shutil.which("links", path=os.path.dirname(sys.executable))
CREDENTIALS = ["--username", "user", "--password", "secret"]
TIMEOUT = 30
PROGRESS = re.compile(r"sent ([\d,]+) \(([\d,]+|…)/s\)  received ([\d,]+) \(([\d,]+|…)/s\)")
FINAL = re.compile(r"sent (\d+) in ([\d.]+)s \(([\d,]+)/s\), received (\d+) in ([\d.]+)s \(([\d,]+)/s\)")


def number(text: str) -> int:
    return int(text.replace(",", ""))


@pytest.mark.timeout(60)
def test_connect_shows_rates_over_a_window_and_ends_with_count_over_elapsed():
    count = 150_000
    server = subprocess.Popen(
        [LINKS, "serve", "soupbintcp", "--port", "0", *CREDENTIALS, "--log-level", "error"],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
    )  # fmt: skip
    try:
        addr = re.fullmatch(r"listening on (\S+)\n", server.stdout.readline())[1]
        with terminal() as (tty, master):
            client = subprocess.Popen(
                [LINKS, "connect", "soupbintcp", addr, *CREDENTIALS, "--count", str(count), "--quiet",
                 "--log-level", "error"],
                stdout=subprocess.DEVNULL, stderr=tty,
            )  # fmt: skip
            text = read_until(master, FINAL, TIMEOUT)
            assert client.wait(TIMEOUT) == 0, text
    finally:
        server.send_signal(signal.SIGINT)
        server.wait(TIMEOUT)
        server.stdout.close()

    sent, sending, sent_rate, received, receiving, received_rate = FINAL.search(text).groups()
    assert (int(sent), int(received)) == (count, count)
    send_average = count / float(sending)
    assert number(sent_rate) == pytest.approx(send_average, rel=0.05)
    assert number(received_rate) == pytest.approx(count / float(receiving), rel=0.05)
    progress = [m.groups() for m in PROGRESS.finditer(text)]
    assert progress, text  # drawn on a terminal
    shown = [number(rate) for _, rate, _, _ in progress if rate != "…"]
    assert shown, progress  # a rate once enough time was seen
    for rate in shown:
        # Over a window of the sending, so near its average: never one message's gap blown
        # up to a rate (the old bug: 168,407/s against 207/s), nor 0/s while the count grew.
        assert send_average / 5 <= rate <= send_average * 5, (rate, send_average, progress)
    first_sent, first_rate, _, _ = progress[0]
    assert first_rate == "…" or number(first_sent) > 1  # no rate from the first message alone


def test_rate_spans_a_window_not_the_gap_between_two_readings():
    clock = FakeClock()
    rate = Rate(window=2.0, clock=clock.monotonic)
    for _ in range(600):  # 1,000 a second, read at every message
        clock.advance(0.001)
        rate.count += 1
        rate.per_second()
    assert rate.per_second() == pytest.approx(1_000, rel=0.01)
    for _ in range(30):  # then 100 a second for 3 s: after the window, only the new pace counts
        clock.advance(0.1)
        rate.count += 10
        rate.per_second()
    assert rate.per_second() == pytest.approx(100, rel=0.1)
    assert rate.average() == pytest.approx((600 + 300) / 3.6)


def test_rate_without_time_passing_is_zero_not_a_division_error():
    clock = FakeClock()
    rate = Rate(clock=clock.monotonic)
    rate.count = 5
    assert rate.per_second() is None  # no time seen: no rate, rather than a made-up one
    assert rate.shown() == "…/s"
    assert rate.average() == 0.0
