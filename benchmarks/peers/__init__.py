"""Peer implementations of workloads W1-W4, one module per library, run as child processes.

Every implementation has a ``serve(ctl, params)`` and a ``client(ctl, params, port)``; the
harness (``benchmarks/bench_peers.py``) starts each in its own pinned process and talks to it
over stdin/stdout (see ``_common``). The C floor is a separate program, ``floor.c``, built at
run time.

A peer whose library is not installed is skipped by the harness, which says so; nothing here
imports an optional library until its process runs it.
"""

from __future__ import annotations

import importlib
import sys
from typing import Any

__all__ = ["PEERS", "REQUIRES", "child_main", "missing"]

#: implementation -> (module, keyword arguments for its serve/client)
PEERS: dict[str, tuple[str, dict[str, Any]]] = {
    "links": ("links_peer", {}),
    "plain": ("plain", {}),
    "asyncio": ("aio", {}),
    "uvloop": ("aio", {"flavor": "uvloop"}),
    "zmq": ("zmq_peer", {}),
    "twisted": ("twisted_peer", {}),
}

#: implementation -> the modules it imports beyond the standard library and links
REQUIRES: dict[str, tuple[str, ...]] = {"uvloop": ("uvloop",), "zmq": ("zmq",), "twisted": ("twisted",)}


def missing(impl: str) -> str | None:
    """Why ``impl`` cannot run here (an import error), or None."""
    for name in REQUIRES.get(impl, ()):
        try:
            importlib.import_module(name)
        except Exception as e:  # noqa: BLE001 - ImportError, or a broken install failing its own way
            return f"import {name} failed: {e}"
    return None


def child_main(argv: list[str]) -> int:
    """``server IMPL PARAMS_JSON`` or ``client IMPL PARAMS_JSON PORT``."""
    from ._common import Control, Params

    role, impl, params_json, *rest = argv
    ctl = Control()  # first: stdout belongs to the control channel from here on
    params = Params.from_json(params_json)
    module_name, kwargs = PEERS[impl]
    module = importlib.import_module(f"{__name__}.{module_name}")
    if role == "server":
        module.serve(ctl, params, **kwargs)
    else:
        module.client(ctl, params, int(rest[0]), **kwargs)
    sys.stderr.flush()
    return 0
