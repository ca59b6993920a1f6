"""The TLS options of ``links serve soupbintcp`` and ``links connect soupbintcp``, typed as a
user types them (real subprocesses, real handshakes, certificate files from ``trustme``)."""

from __future__ import annotations

import subprocess

import pytest
from helpers_tls import pki_files
from test_soupbintcp_cli import CREDENTIALS, LINKS, TIMEOUT, run_connect, server, stop

pytest.importorskip("trustme")  # every test here needs certificates
pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def pki(tmp_path):
    """A CA, a server certificate for localhost, and a client certificate: file paths."""
    return pki_files(tmp_path, client="desk-7@example.com")


def test_serve_and_connect_over_tls(tmp_path, pki):
    with server(tmp_path, "--tls-cert", pki["cert"], "--tls-key", pki["key"]) as (proc, addr, err):
        done = run_connect(addr, *CREDENTIALS, "--count", "20", "--tls", "--tls-ca", pki["ca"], "--tls-server-name", "localhost")
        assert done.returncode == 0, done.stderr
        assert done.stdout.splitlines() == [f"{i} msg {i}" for i in range(1, 21)]
        plain = run_connect(addr, *CREDENTIALS, "--count", "1", "--timeout", "2")  # no TLS: it cannot log in
        assert plain.returncode == 1
        assert len(plain.stderr.strip().splitlines()[-1]) < 200
        assert stop(proc) == 0
    assert "tls.handshake_failed" in err.read_text()


def test_mutual_tls_from_the_command_line(tmp_path, pki):
    tls = ["--tls-ca", pki["ca"], "--tls-server-name", "localhost"]
    with server(tmp_path, "--tls-cert", pki["cert"], "--tls-key", pki["key"], "--tls-client-ca", pki["ca"]) as (proc, addr, err):
        anonymous = run_connect(addr, *CREDENTIALS, "--count", "1", "--timeout", "2", *tls)
        assert anonymous.returncode == 1
        known = run_connect(addr, *CREDENTIALS, "--count", "3", *tls, "--tls-cert", pki["client_cert"], "--tls-key", pki["client_key"])
        assert known.returncode == 0, known.stderr
        assert known.stdout.splitlines() == ["1 msg 1", "2 msg 2", "3 msg 3"]
        assert stop(proc) == 0
    assert "peer_names=email:desk-7@example.com" in err.read_text()


@pytest.mark.parametrize(
    ("command", "message"),
    [
        (["serve", "soupbintcp", *CREDENTIALS, "--tls-cert", "/nonexistent.pem"], "no readable file: /nonexistent.pem"),
        (["serve", "soupbintcp", *CREDENTIALS, "--tls-key", "{key}"], "--tls-key and --tls-client-ca need --tls-cert"),
        (["serve", "soupbintcp", *CREDENTIALS, "--tls-cert", "{ca}"], "cannot load"),  # a certificate with no key
        (["connect", "soupbintcp", "127.0.0.1:9", *CREDENTIALS, "--tls-ca", "/nonexistent.pem"], "no readable file"),
        (["connect", "soupbintcp", "127.0.0.1:9", *CREDENTIALS, "--tls-key", "{key}"], "--tls-key needs --tls-cert"),
    ],
    ids=["missing-cert", "key-alone", "cert-without-key", "missing-ca", "client-key-alone"],
)
def test_tls_option_mistakes_are_one_line_and_status_2(pki, command, message):
    argv = [part.format(**pki) for part in command]
    done = subprocess.run([*LINKS, *argv], capture_output=True, text=True, timeout=TIMEOUT)
    assert done.returncode == 2, (done.stdout, done.stderr)
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], lines
