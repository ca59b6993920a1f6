"""links' TLS against an independent TLS implementation: the JDK's own (JSSE, not OpenSSL).

``tests/interop/TlsPeer.java`` runs with the JDK's source launcher: as a server it echoes
length-prefixed frames, as a client it sends frames and checks each echo. Both directions
are tested with a throwaway CA from ``trustme``. Skipped where no ``java`` is installed.
"""

from __future__ import annotations

import shutil
import ssl
import subprocess
from pathlib import Path

import pytest

import links

trustme = pytest.importorskip("trustme")
serialization = pytest.importorskip("cryptography.hazmat.primitives.serialization")
pkcs12 = pytest.importorskip("cryptography.hazmat.primitives.serialization.pkcs12")
x509 = pytest.importorskip("cryptography.x509")

JAVA = shutil.which("java")
PEER = Path(__file__).resolve().parent / "interop" / "TlsPeer.java"
WAIT = 30.0  # the JVM compiles the peer first
pytestmark = [pytest.mark.skipif(JAVA is None, reason="no java here"), pytest.mark.timeout(90)]


class Frames(links.Protocol):
    framer = links.LengthPrefixFramer(header_size=4, max_frame_size=1 << 16)
    messenger = links.RawMessenger()


class Echo(Frames):
    def send_reply(self, msg, con):
        con.send(msg, timeout=0)


@pytest.fixture(scope="module")
def ca():
    return trustme.CA()


def keystore(ca, tmp_path: Path) -> Path:
    """The server's key and certificate chain as PKCS#12, which the JDK reads as it is."""
    cert = ca.issue_cert("localhost", "127.0.0.1")
    key = serialization.load_pem_private_key(cert.private_key_pem.bytes(), password=None)
    chain = [x509.load_pem_x509_certificate(blob.bytes()) for blob in cert.cert_chain_pems]
    path = tmp_path / "server.p12"
    path.write_bytes(pkcs12.serialize_key_and_certificates(
        b"server", key, chain[0], chain[1:], serialization.BestAvailableEncryption(b"secret"),
    ))  # fmt: skip
    return path


def test_a_links_client_and_a_jsse_server(ca, tmp_path, poll, timer):
    server = subprocess.Popen(
        [JAVA, str(PEER), "server", str(keystore(ca, tmp_path)), "secret"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        port = int(server.stdout.readline())
        ctx = ssl.create_default_context()
        ca.configure_trust(ctx)
        with links.Clt.connect(
            f"localhost:{port}", protocol=Frames, poll_handler=poll, timer=timer, timeout=WAIT, tls=ctx
        ) as clt:  # fmt: skip
            for i in range(100):
                clt.send(b"ping-%d" % i, timeout=WAIT)
            assert [clt.recv(timeout=WAIT) for _ in range(100)] == [b"ping-%d" % i for i in range(100)]
        assert server.wait(WAIT) == 0, server.stderr.read()
    finally:
        server.kill()
        server.communicate()


def test_a_jsse_client_and_a_links_server(ca, tmp_path, poll, timer):
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("localhost", "127.0.0.1").configure_cert(ctx)
    ca_pem = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_pem))
    with links.Svc.bind("127.0.0.1:0", protocol=Echo, poll_handler=poll, timer=timer, tls=ctx) as svc:
        svc.into_sender_with_spawned_recver()
        done = subprocess.run(
            [JAVA, str(PEER), "client", str(ca_pem), str(svc.local_addr[1]), "100"],
            capture_output=True, text=True, timeout=WAIT * 2,
        )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("ok TLSv1.")
