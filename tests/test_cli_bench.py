"""``links bench`` as a user runs it, and the harness underneath: registered peers, medians and ratios.

The runs are tiny (``--scale 0.01``: a few thousand messages per measurement) so they check
that every measurement completes and the table is whole, not how fast anything is.
"""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

from links import bench

ROW = re.compile(r"^\| (W\d .+?) \| (.+?) \| (split|same) \| (.+?) \| (.+?) \|$")


def test_links_bench_prints_the_machine_and_a_table_of_links_against_plain_sockets():
    done = subprocess.run(
        [sys.executable, "-m", "links", "bench", "--workloads", "w1,w2", "--rounds", "1", "--scale", "0.01"],
        capture_output=True, text=True, encoding="utf-8", timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    out = done.stdout
    header = out.splitlines()[0]
    assert re.match(r"links bench, .+: \d+ CPUs \(.+\), Python 3\.\d+", header), header
    assert re.search(r"placement split = server CPU \d+, client CPU \d+; same = both on CPU \d+", header)
    assert "| workload | metric | placement | links | plain |" in out
    rows = [m.groups() for m in map(ROW.match, out.splitlines()) if m]
    # W1: send(), send_many and send() to a busy-polling server, 2 metrics each; W2 (split and
    # same): recv, callback and recv from a busy-polling server, 3 metrics each.
    assert len(rows) == 3 * 2 + 2 * 3 * 3, out
    labels = {label for label, *_ in rows}
    assert {"W1 links send(), server busy-polls 50 µs", "W2 links send+recv, server busy-polls 50 µs"} <= labels
    cases = {(label.split()[0], place) for label, _, place, _, _ in rows}
    assert cases == {("W1", "split"), ("W2", "split"), ("W2", "same")}
    for label, unit, _, mine, plain in rows:
        assert re.fullmatch(r"[\d,.]+", mine), (label, unit, mine)
        if unit in ("msgs/s", "p50 µs", "p99 µs"):  # CPU cells can be 0 on windows this short: no ratio then
            assert re.fullmatch(r"[\d,.]+ \(\d+\.\d\d\)", plain), (label, unit, plain)
    assert "result: OK" in out


def test_links_bench_rejects_an_unknown_workload():
    done = subprocess.run(
        [sys.executable, "-m", "links", "bench", "--workloads", "w1,w9"],
        capture_output=True, text=True, timeout=30, check=False,
    )  # fmt: skip
    assert done.returncode == 2
    assert "choose from w1,w2,w3,w4" in done.stderr


def test_registered_peers_run_from_their_path_and_a_broken_one_is_reported_not_counted(tmp_path):
    good = tmp_path / "good_peer.py"
    good.write_text(
        "from links.bench import _plain\n"
        "def serve(ctl, params, tag):\n"
        "    assert tag == 'kw', tag\n"
        "    _plain.serve(ctl, params)\n"
        "def client(ctl, params, port, tag):\n"
        "    _plain.client(ctl, params, port)\n"
    )
    broken = tmp_path / "broken_peer.py"
    broken.write_text("def serve(ctl, params):\n    raise RuntimeError('no server today')\n")
    peers = [bench.Impl("good", good, {"tag": "kw"}), bench.Impl("broken", str(broken))]
    steps = []

    results = bench.run(["w1"], peers, rounds=1, scale=0.01, placement="split",
                        progress=lambda step, rec: steps.append((step.index, step.total, rec is not None)))  # fmt: skip

    by_impl = {(r["impl"], r["variant"]): r for r in results.records}
    assert set(by_impl) == {("links", "send"), ("links", "send_many"), ("links", "send_busy"), ("good", ""), ("broken", "")}
    assert by_impl["good", ""]["ok"]
    assert by_impl["good", ""]["final"]["count"] == bench.workload_params("w1", 0.01, "", 64).total
    failed = by_impl["broken", ""]
    assert not failed["ok"] and failed["error"] == "server exited early"
    assert "RuntimeError: no server today" in failed["stderr_server"]
    assert results.failure_lines() == [
        "1 failed measurement(s), left out of the medians:",
        "  round 1 W1 split broken: server exited early",
    ]
    # Every measurement announced before and after it runs, counted out of the run's total.
    assert steps == [(i, 5, after) for i in range(5) for after in (False, True)]
    header, _, rate_row = results.table()[:3]
    assert header == "| workload | metric | placement | links | good | broken |"
    good_cell, broken_cell = rate_row.strip("| ").split(" | ")[-2:]
    assert re.fullmatch(r"[\d,]+ \(\d+\.\d\d\)", good_cell) and broken_cell == "—"


def _rec(rnd, impl, variant, rate, ok=True):
    return {"round": rnd, "workload": "w1", "placement": "split", "impl": impl, "variant": variant, "ok": ok,
            "rate": rate, "cpu": 2.0}  # fmt: skip


def test_medians_and_ratios_use_only_rounds_where_both_succeeded():
    records = [
        _rec(0, "links", "send", 100.0), _rec(0, "plain", "", 100.0),
        _rec(1, "links", "send", 200.0), _rec(1, "plain", "", 100.0),
        _rec(2, "links", "send", 300.0), _rec(2, "plain", "", 10.0, ok=False),  # a failed round: no number
        _rec(0, "links", "send_many", 500.0, ok=False),  # links failed every round of this variant
    ]  # fmt: skip
    rows = bench.summarize(records, [("w1", "split")], ["plain"], batch=64)

    send_rate, send_cpu, many_rate, _, busy_rate, _ = rows
    assert busy_rate["links"] is None  # the busy variant has no records here: an empty row, not an error
    assert (send_rate["label"], send_rate["metric"]) == ("W1 links send()", "rate")
    assert send_rate["links"] == 200.0  # median of 100, 200, 300
    # The plain value is the median of its two good rounds; the ratio the median of per-round
    # ratios (1.0 and 2.0), not links' median over plain's (which would be 2.0).
    assert send_rate["peers"]["plain"] == {"value": 100.0, "ratio": 1.5, "rounds": 2}
    assert send_cpu["peers"]["plain"]["ratio"] == 1.0
    assert many_rate["label"] == "W1 links send_many(64)" and many_rate["links"] is None
    assert many_rate["peers"]["plain"] == {"value": 100.0, "ratio": None, "rounds": 0}

    lines = bench.render_table(rows, ["plain"])
    assert lines[0] == "| workload | metric | placement | links | plain |"
    assert lines[2] == "| W1 links send() | msgs/s | split | 200 | 100 (1.50) |"
    assert lines[4] == "| W1 links send_many(64) | msgs/s | split | FAILED | 100 |"


def test_over_tls_a_measurement_whose_client_reports_no_tls_connection_fails(tmp_path):
    """A peer that ignored ``Params.tls`` (plaintext on both sides) cannot pass as TLS."""
    from links.bench._measure import check

    params = bench.workload_params("w2", 0.01, "recv", 64, tls=str(tmp_path))
    result = {"sent": params.total, "received": params.total}
    final = {"count": params.total, "bytes": params.total * params.size}
    assert check(params, {}, {**result, "tls": bench.TLS_CIPHER}, final) == []
    assert check(params, {}, {**result, "tls": ""}, final) == [
        f"the client reported no TLS connection with {bench.TLS_CIPHER} (it said '')"
    ]
    plaintext = bench.workload_params("w2", 0.01, "recv", 64)
    assert check(plaintext, {}, result, final) == []  # nothing asked of a plaintext run


def test_a_tls_run_has_no_w4(tmp_path):
    with pytest.raises(ValueError, match="no TLS variants for w4"):
        bench.run(["w1", "w4"], [], rounds=1, scale=0.01, tls=str(tmp_path))


def test_over_channels_each_row_compares_a_variant_with_the_same_variant_over_tcp():
    """``run(..., mux=True)``: the peer ``tcp`` runs every variant links runs, and each row's
    ratio pairs the two in the same variant (a peer of its own, plain, still in its one row)."""
    records = [
        {**_rec(0, "links", "send", 50.0), "workload": "w4"}, {**_rec(0, "tcp", "send", 100.0), "workload": "w4"},
        {**_rec(0, "links", "one_thread", 900.0), "workload": "w4"}, {**_rec(0, "tcp", "one_thread", 300.0), "workload": "w4"},
        {**_rec(0, "plain", "", 200.0), "workload": "w4"},
    ]  # fmt: skip
    rows = bench.summarize(records, [("w4", "split")], ["tcp", "plain"], batch=64, variants=bench.MUX_VARIANTS)
    send_rate, _, one_thread_rate, _ = rows
    assert send_rate["peers"]["tcp"] == {"value": 100.0, "ratio": 0.5, "rounds": 1}
    assert one_thread_rate["peers"]["tcp"] == {"value": 300.0, "ratio": 3.0, "rounds": 1}
    assert one_thread_rate["peers"]["plain"] == {"value": 200.0, "ratio": 4.5, "rounds": 1}


def test_over_channels_a_measurement_whose_channels_took_more_than_one_tcp_connection_fails():
    """The channels of a W4 run share one TCP connection, or its numbers are not the channels'."""
    from links.bench._measure import check

    params = bench.workload_params("w4", 0.01, "send", 64, mux=True)
    marks = {"warm": {"count": params.warm_total}}
    result = {"sent": params.total, "carriers": 1}
    final = {"count": params.total, "bytes": params.total * params.size}
    assert check(params, marks, result, final) == []
    assert check(params, marks, {**result, "carriers": 100}, final) == [
        "the client's channels travelled on 100 TCP connections, not one"
    ]
    over_tcp = bench.workload_params("w4", 0.01, "send", 64)
    assert check(over_tcp, marks, {**result, "carriers": 100}, final) == []  # nothing asked of a TCP run


def test_channels_are_not_measured_over_tls(tmp_path):
    with pytest.raises(ValueError, match="tls= or mux=, not both"):
        bench.run(["w1"], [], rounds=1, scale=0.01, tls=str(tmp_path), mux=True)
