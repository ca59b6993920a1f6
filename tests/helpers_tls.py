"""Certificates for tests, from a throwaway ``trustme`` CA (the test is skipped without it):
contexts for tests in the process, PEM files for the ``links`` command's options."""

from __future__ import annotations

import ssl
from pathlib import Path

import pytest


def tls_contexts() -> tuple[ssl.SSLContext, ssl.SSLContext]:
    """A server context with a certificate for localhost and 127.0.0.1, and a client context
    that trusts its CA."""
    trustme = pytest.importorskip("trustme")
    ca = trustme.CA()
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("localhost", "127.0.0.1").configure_cert(server_ctx)
    client_ctx = ssl.create_default_context()
    ca.configure_trust(client_ctx)
    return server_ctx, client_ctx


def pki_files(directory: Path, client: str | None = None) -> dict[str, str]:
    """A CA (``ca``) and a server certificate for localhost and 127.0.0.1 (``cert``, ``key``)
    written in ``directory``; with ``client``, a client certificate for that name too
    (``client_cert``, ``client_key``): file paths."""
    trustme = pytest.importorskip("trustme")
    ca = trustme.CA()
    files = {"ca": directory / "ca.pem", "cert": directory / "server.pem", "key": directory / "server.key"}
    ca.cert_pem.write_to_path(str(files["ca"]))
    issued = ca.issue_cert("localhost", "127.0.0.1")
    issued.private_key_pem.write_to_path(str(files["key"]))
    for i, blob in enumerate(issued.cert_chain_pems):
        blob.write_to_path(str(files["cert"]), append=i > 0)
    if client is not None:
        files.update(client_cert=directory / "client.pem", client_key=directory / "client.key")
        issued = ca.issue_cert(client)
        issued.private_key_pem.write_to_path(str(files["client_key"]))
        issued.cert_chain_pems[0].write_to_path(str(files["client_cert"]))
    return {name: str(path) for name, path in files.items()}
