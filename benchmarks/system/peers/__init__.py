"""The peers beyond the two built into ``links.bench`` (links and plain sockets), registered here.

Each Python peer is a module of this directory with ``serve(ctl, params)`` and
``client(ctl, params, port)``, built on the helpers of ``links.bench``; the harness runs it in
its own pinned process by loading the file from its path (``links.bench.Impl``). The C floor
is a separate program, ``floor.c``, compiled at run time and run directly (``Floor``).

A peer whose library is not installed is skipped by the harness, which says so; nothing here
imports an optional library: only the peer's own process does.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from links.bench import Impl, Params

__all__ = ["AIO_SUBJECT", "EXTRA", "TLS_REQUIRES", "Floor", "build_floor"]

HERE = Path(__file__).resolve().parent

#: name -> implementation, for every peer that is a Python module of this directory
EXTRA: dict[str, Impl] = {
    "asyncio": Impl("asyncio", HERE / "aio.py"),
    "uvloop": Impl("uvloop", HERE / "aio.py", {"flavor": "uvloop"}, requires=("uvloop",)),
    "zmq": Impl("zmq", HERE / "zmq_peer.py", requires=("zmq",)),
    "twisted": Impl("twisted", HERE / "twisted_peer.py", requires=("twisted",)),
}
#: links.aio, the subject of ``benchmarks/system/aio.py`` (its peers there: asyncio and uvloop above)
AIO_SUBJECT = Impl("links.aio", HERE / "links_aio.py")
#: what a peer needs beyond its ``requires`` to speak TLS (``vs_peers.py --tls``): Twisted's TLS
#: is pyOpenSSL, and its client checks the server's name with service_identity
TLS_REQUIRES: dict[str, tuple[str, ...]] = {"twisted": ("OpenSSL", "service_identity")}


@dataclass(frozen=True)
class Floor(Impl):
    """The C floor: blocking sockets, its workload on the command line (see ``floor.c``)."""

    exe: str = ""

    def command(self, role: str, params: Params, port: int | None) -> list[str]:
        args = [self.exe, role, params.workload[1], params.size, params.warm, params.count, params.clients]
        return [str(a) for a in (args + ([port] if port is not None else []))]


def build_floor(tmp: str) -> tuple[Floor | None, str]:
    """Compile floor.c into ``tmp``; (the implementation, "") or (None, why not)."""
    cc = shutil.which("gcc") or shutil.which("cc")
    if cc is None:
        return None, "no gcc or cc on PATH"
    exe = os.path.join(tmp, "floor")
    try:
        done = subprocess.run([cc, "-O2", "-pthread", "-o", exe, str(HERE / "floor.c")],
                              capture_output=True, timeout=120, check=False)  # fmt: skip
    except (OSError, subprocess.TimeoutExpired) as e:
        return None, f"{cc} failed: {e}"
    if done.returncode != 0:
        return None, f"{cc} failed: {done.stderr.decode(errors='replace').strip()[-300:]}"
    return Floor("c", HERE / "floor.c", exe=exe), ""
