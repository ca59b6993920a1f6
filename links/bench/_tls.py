"""TLS for the benchmark's TLS runs: throwaway certificates and one pinned cipher suite.

``benchmarks/system/vs_peers.py --tls`` runs W1-W3 with every connection over TLS. The
harness makes a certificate authority and a certificate for ``localhost`` and 127.0.0.1 with
trustme when the run starts, in a temporary directory that goes when the run ends
(``make_certificates``), and hands that directory to every process as ``Params.tls``: no
private key is kept anywhere. Each implementation builds its contexts from those two files
(``tls_files``); the standard-library ones with ``tls_server_context`` and
``tls_client_context``.

Every context is held to one suite, ``TLS_CIPHER`` under TLS 1.2 (``TLS_VERSION``), so every
peer pays the same cryptography. TLS 1.2 because the standard library's ``ssl`` cannot pick
among TLS 1.3's suites (``set_ciphers`` covers TLS 1.2 and below), and every peer here but
Twisted uses it. Each client reports the suite its connection negotiated (``result["tls"]``)
and the completion check refuses a measurement that does not: a peer that ignored
``Params.tls`` cannot pass plaintext numbers off as TLS ones.
"""

from __future__ import annotations

import os
import ssl

from ._child import HOST

__all__ = ["TLS_CIPHER", "TLS_SERVER_NAME", "TLS_VERSION", "make_certificates", "tls_client_context",
           "tls_files", "tls_server_context"]  # fmt: skip

#: The one cipher suite of every TLS connection (OpenSSL's name; trustme's keys are ECDSA).
TLS_CIPHER = "ECDHE-ECDSA-AES128-GCM-SHA256"
TLS_VERSION = "TLSv1.2"
#: The name clients verify the server's certificate for.
TLS_SERVER_NAME = "localhost"


def tls_files(directory: str) -> tuple[str, str]:
    """(the CA certificate, the server's private key followed by its certificate), as PEM paths."""
    return os.path.join(directory, "ca.pem"), os.path.join(directory, "server.pem")


def make_certificates(directory: str) -> str:
    """Write a fresh CA and server certificate (trustme) into ``directory``; returns it."""
    import trustme  # a test dependency; only the process that makes the certificates needs it

    ca_file, server_file = tls_files(directory)
    ca = trustme.CA()
    ca.cert_pem.write_to_path(ca_file)
    ca.issue_cert(TLS_SERVER_NAME, HOST).private_key_and_cert_chain_pem.write_to_path(server_file)
    return directory


def tls_server_context(directory: str) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(tls_files(directory)[1])
    return _pinned(context)


def tls_client_context(directory: str) -> ssl.SSLContext:
    """Verifies the server's certificate against the run's CA, for ``TLS_SERVER_NAME``."""
    return _pinned(ssl.create_default_context(cafile=tls_files(directory)[0]))


def _pinned(context: ssl.SSLContext) -> ssl.SSLContext:
    context.minimum_version = context.maximum_version = ssl.TLSVersion.TLSv1_2
    context.set_ciphers(TLS_CIPHER)
    return context
