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
PROGRESS = re.compile(r"sent ([\d,]+) \(([\d,]+)/s\)  received ([\d,]+) \(([\d,]+)/s\)")
FINAL = re.compile(r"sent (\d+), received (\d+) in ([\d.]+)s \(([\d,]+)/s sent, ([\d,]+)/s received\)")


def number(text: str) -> int:
    return int(text.replace(",", ""))


@pytest.mark.timeout(60)
def test_connect_shows_rates_over_a_window_and_ends_with_count_over_elapsed():
    count = 30_000
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

    sent, received, seconds, sent_rate, received_rate = FINAL.search(text).groups()
    assert (int(sent), int(received)) == (count, count)
    # The final rates are the counts over the elapsed time (printed to 10 ms).
    for shown in (number(sent_rate), number(received_rate)):
        assert shown == pytest.approx(count / float(seconds), rel=0.05) or float(seconds) < 0.2
    progress = [tuple(map(number, m.groups())) for m in PROGRESS.finditer(text)]
    assert progress, text  # drawn on a terminal
    for sent_n, sent_per_s, received_n, received_per_s in progress:
        # Over a window, a count that grew shows a rate: never 0/s because one message's gap
        # had nothing in it, nor one message's gap blown up to a rate.
        if received_n:
            assert received_per_s > 0, progress
        # (loose: the final rate also counts the wait for the last replies)
        assert sent_per_s <= 5 * number(sent_rate) + 20_000, progress


def test_rate_spans_a_window_not_the_gap_between_two_readings():
    clock = FakeClock()
    rate = Rate(window=2.0, clock=clock.monotonic)
    for _ in range(400):  # 1,000 a second, read at every message
        clock.advance(0.001)
        rate.count += 1
        rate.per_second()
    assert rate.per_second() == pytest.approx(1_000, rel=0.01)
    for _ in range(30):  # then 100 a second for 3 s: after the window, only the new pace counts
        clock.advance(0.1)
        rate.count += 10
        rate.per_second()
    assert rate.per_second() == pytest.approx(100, rel=0.1)
    assert rate.average() == pytest.approx((400 + 300) / 3.4)


def test_rate_without_time_passing_is_zero_not_a_division_error():
    clock = FakeClock()
    rate = Rate(clock=clock.monotonic)
    rate.count = 5
    assert rate.per_second() == 0.0
    assert rate.average() == 0.0
