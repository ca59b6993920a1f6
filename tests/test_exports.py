"""The public surface is pinned: adding or removing a name in ``links`` is a deliberate edit here.

``links.testing`` is still growing, so for it only consistency is checked (``__all__`` and the
module's public attributes agree), not a fixed list.
"""

from __future__ import annotations

import types

import pytest

import links
import links.testing

PUBLIC_API = [
    "AcceptStatus", "Backoff", "BrokenError", "BusyError", "Callback", "ChainCallback", "Clock", "ClosedError", "Clt",
    "CltRecver", "CltSender", "ConId", "ConnectTimeout", "ConnectionGate", "CounterCallback", "DecodeError",
    "DelimiterFramer", "DevNullCallback", "DispatchCallback", "FixedSizeFramer", "FrameTooLarge", "Framer",
    "JsonMessenger", "LengthPrefixFramer", "Link", "LinksError", "LoggerCallback", "Messenger", "MonotonicClock",
    "NEED_DATA", "Permit", "PollHandler", "Protocol", "ProtocolError", "RawMessenger", "ReceiveBuffer", "Record",
    "Ref", "RetryAfter", "Role", "SendStatus", "SpinParkLock", "StoreCallback", "Svc", "SvcSender", "TaskStatus",
    "Timer", "TimerHandle", "default_poll_handler", "default_timer", "shutdown", "split_payloads",
]  # fmt: skip


def public_attributes(module: types.ModuleType) -> set[str]:
    """Names a user would take for API: not underscored, not a submodule (``links.testing``)."""
    return {
        name
        for name, value in vars(module).items()
        if not name.startswith("_") and not isinstance(value, types.ModuleType)
    }


def test_public_api_is_pinned():
    assert PUBLIC_API == sorted(PUBLIC_API)  # keep the list reviewable
    assert sorted(links.__all__) == PUBLIC_API
    assert len(set(links.__all__)) == len(links.__all__)


@pytest.mark.parametrize("module", [links, links.testing], ids=lambda m: m.__name__)
def test_every_name_in_all_exists(module):
    missing = [name for name in module.__all__ if not hasattr(module, name)]
    assert not missing


@pytest.mark.parametrize("module", [links, links.testing], ids=lambda m: m.__name__)
def test_no_public_attribute_is_missing_from_all(module):
    assert public_attributes(module) - set(module.__all__) == set()
