"""The public surface is pinned: adding or removing a name in ``links`` or ``links.lowlevel``
is a deliberate edit here.

``links`` is the API an application uses; ``links.lowlevel`` holds the engine's own pieces
for those who build layers. The names that moved to ``links.lowlevel`` stay importable from
``links`` (compatibility) without being listed in its ``__all__``. The layers
``links.session``, ``links.soupbintcp``, ``links.mux`` and ``links.rpc`` are imported on first use, not by
``import links``.

``links.testing`` is still growing, so for it only consistency is checked (``__all__`` and the
module's public attributes agree), not a fixed list.
"""

from __future__ import annotations

import subprocess
import sys
import types

import pytest

import links
import links.lowlevel
import links.testing

PUBLIC_API = [
    "Backoff", "BrokenError", "BusyError", "Callback", "ChainCallback", "Clock", "ClosedError", "Clt", "CltRecver",
    "CltSender", "ConId", "ConnectTimeout", "ConnectionGate", "CounterCallback", "DecodeError", "DelimiterFramer",
    "DevNullCallback", "DispatchCallback", "FixedSizeFramer", "FrameTooLarge", "Framer", "Handle", "JsonMessenger",
    "LengthPrefixFramer", "LinksError", "LoggerCallback", "Messenger", "MonotonicClock", "PollHandler", "Protocol",
    "ProtocolError", "RawMessenger", "Ref", "RetryAfter", "Role", "SendStatus", "StoreCallback", "Svc", "SvcSender",
    "TLSError", "TaskStatus", "Timer", "default_poll_handler", "default_timer", "shutdown",
]  # fmt: skip

LOWLEVEL_API = [
    "AcceptStatus", "Link", "NEED_DATA", "Permit", "ReceiveBuffer", "Record", "SpinParkLock", "TimerHandle",
    "format_addr", "parse_addr", "split_payloads",
]  # fmt: skip
# Names that moved from ``links`` to ``links.lowlevel`` and stay importable from ``links``.
MOVED = [name for name in LOWLEVEL_API if name not in ("format_addr", "parse_addr")]

# Layers reachable as attributes of ``links`` but imported lazily (PEP 562 ``__getattr__``).
LAZY_SUBMODULES = ["aio", "mux", "rpc", "session", "soupbintcp"]

RPC_API = [
    "BadEnvelope", "CallIndeterminate", "CallTable", "CallTimeout", "Correlator", "DuplicateId", "InFlightLimit",
    "MsgpackError", "MsgpackFramer", "MsgpackMessenger", "Notification", "Peer", "RemoteError", "Request", "Response",
    "RpcError", "RpcProtocol", "Server", "TableFull", "Undecodable", "connect", "decode", "serve",
]  # fmt: skip

MODULES = [links, links.lowlevel, links.testing]


def test_the_rpc_api_is_pinned():
    import links.rpc

    assert sorted(links.rpc.__all__) == RPC_API
    assert public_attributes(links.rpc) - set(links.rpc.__all__) == set()


def public_attributes(module: types.ModuleType) -> set[str]:
    """Names a user would take for API: not underscored, not a submodule (``links.testing``)."""
    return {
        name
        for name, value in vars(module).items()
        if not name.startswith("_") and not isinstance(value, types.ModuleType)
    }


@pytest.mark.parametrize(("module", "pinned"), [(links, PUBLIC_API), (links.lowlevel, LOWLEVEL_API)],
                         ids=["links", "links.lowlevel"])  # fmt: skip
def test_public_api_is_pinned(module, pinned):
    assert pinned == sorted(pinned)  # keep the list reviewable
    assert sorted(module.__all__) == pinned
    assert len(set(module.__all__)) == len(module.__all__)


def test_links_and_lowlevel_do_not_overlap():
    assert set(PUBLIC_API) & set(LOWLEVEL_API) == set()


@pytest.mark.parametrize("module", MODULES, ids=lambda m: m.__name__)
def test_every_name_in_all_exists(module):
    missing = [name for name in module.__all__ if not hasattr(module, name)]
    assert not missing


@pytest.mark.parametrize("module", [links.lowlevel, links.testing], ids=lambda m: m.__name__)
def test_no_public_attribute_is_missing_from_all(module):
    assert public_attributes(module) - set(module.__all__) == set()


def test_links_public_attributes_are_its_all_plus_the_compatibility_names():
    # Nothing else leaks into ``links``' namespace (a helper import, ``Any``, ``TYPE_CHECKING``...).
    assert public_attributes(links) - set(links.__all__) == set(MOVED)


@pytest.mark.parametrize("name", MOVED)
def test_moved_names_are_still_importable_from_links(name):
    # Compatibility: ``from links import Link`` keeps working, and it is the very same object.
    assert getattr(links, name) is getattr(links.lowlevel, name)


def test_star_import_gives_the_public_api_only():
    namespace: dict[str, object] = {}
    exec("from links import *", namespace)
    assert sorted(name for name in namespace if name != "__builtins__") == PUBLIC_API


@pytest.mark.parametrize("name", LAZY_SUBMODULES)
def test_layers_are_reachable_from_links(name):
    module = getattr(links, name)
    assert isinstance(module, types.ModuleType)
    assert module.__name__ == f"links.{name}"
    assert name in dir(links)


def test_unknown_attribute_still_raises_attribute_error():
    with pytest.raises(AttributeError, match="no_such_name"):
        links.no_such_name  # noqa: B018


def test_import_links_does_not_import_the_layers():
    # A fresh interpreter: this one may have imported the layers already. After a plain
    # ``import links`` neither layer is loaded, yet ``links.soupbintcp`` works and loads it.
    code = (
        "import sys, links\n"
        "assert 'links.soupbintcp' not in sys.modules, 'soupbintcp imported eagerly'\n"
        "assert 'links.session' not in sys.modules, 'session imported eagerly'\n"
        "assert 'links.mux' not in sys.modules, 'mux imported eagerly'\n"
        "assert links.soupbintcp.CltProtocol.__name__ == 'CltProtocol'\n"
        "assert 'links.soupbintcp' in sys.modules\n"
        "assert links.session.Resumable.__name__ == 'Resumable'\n"
        "assert 'links.mux' not in sys.modules, 'mux imported eagerly'\n"
        "assert links.mux.connect.__module__ == 'links.mux._mux'\n"
        "assert 'links.rpc' not in sys.modules, 'rpc imported eagerly'\n"
        "assert links.rpc.connect.__module__ == 'links.rpc._peer'\n"
        "from links import Link, NEED_DATA\n"
        "from links.lowlevel import Link as L2\n"
        "assert Link is L2\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=30)

