"""links: message-oriented TCP connections over nonblocking socket I/O.

One poll thread services every spawned receiver and acceptor, one timer thread runs
heartbeats, ``Ref`` handles share connection halves across threads, and a gate caps the live
connections of a service. See the README for a tour; every name in ``__all__`` is public API
(a test pins this list).

The engine's own pieces (``Link``, ``ReceiveBuffer``, ``NEED_DATA``, ...) live in
``links.lowlevel``, for those who build layers; they stay importable from here for
compatibility but are not listed in ``__all__``. The layers ``links.session``,
``links.soupbintcp``, ``links.mux``, ``links.rpc`` and ``links.aio`` are loaded on first use
(``links.mux.connect`` after a plain ``import links`` works), so importing ``links`` never imports a
layer built on it.
"""

import importlib as _importlib
import typing as _typing

from ._callbacks import (
    Callback as Callback,
    ChainCallback as ChainCallback,
    CounterCallback as CounterCallback,
    DevNullCallback as DevNullCallback,
    DispatchCallback as DispatchCallback,
    LoggerCallback as LoggerCallback,
    StoreCallback as StoreCallback,
)
from ._clock import Clock as Clock, MonotonicClock as MonotonicClock
from ._clt import Clt as Clt
from ._core._backoff import Backoff as Backoff
from ._core._conid import ConId as ConId, Role as Role
from ._core._framer import (
    DelimiterFramer as DelimiterFramer,
    FixedSizeFramer as FixedSizeFramer,
    Framer as Framer,
    LengthPrefixFramer as LengthPrefixFramer,
)
from ._core._messenger import JsonMessenger as JsonMessenger, Messenger as Messenger, RawMessenger as RawMessenger
from ._core._protocol import Handle as Handle, Protocol as Protocol
from ._core._status import RetryAfter as RetryAfter, SendStatus as SendStatus, TaskStatus as TaskStatus
from ._errors import (
    BrokenError as BrokenError,
    BusyError as BusyError,
    ClosedError as ClosedError,
    ConnectTimeout as ConnectTimeout,
    DecodeError as DecodeError,
    FrameTooLarge as FrameTooLarge,
    LinksError as LinksError,
    ProtocolError as ProtocolError,
    TLSError as TLSError,
)
from ._gate import ConnectionGate as ConnectionGate
from ._poll import PollHandler as PollHandler
from ._pool import SvcSender as SvcSender
from ._recver import CltRecver as CltRecver
from ._ref import Ref as Ref
from ._runtime import default_poll_handler as default_poll_handler, default_timer as default_timer, shutdown as shutdown
from ._sender import CltSender as CltSender
from ._svc import Svc as Svc
from ._timer import Timer as Timer

# Compatibility: these moved to links.lowlevel; `from links import Link` keeps working.
from .lowlevel import (
    NEED_DATA as NEED_DATA,
    AcceptStatus as AcceptStatus,
    Link as Link,
    Permit as Permit,
    ReceiveBuffer as ReceiveBuffer,
    Record as Record,
    SpinParkLock as SpinParkLock,
    TimerHandle as TimerHandle,
    split_payloads as split_payloads,
)

if _typing.TYPE_CHECKING:
    from . import aio as aio, mux as mux, rpc as rpc, session as session, soupbintcp as soupbintcp

__version__ = "0.1.0"

__all__ = [
    "Backoff", "BrokenError", "BusyError", "Callback", "ChainCallback", "Clock", "ClosedError", "Clt", "CltRecver",
    "CltSender", "ConId", "ConnectTimeout", "ConnectionGate", "CounterCallback", "DecodeError", "DelimiterFramer",
    "DevNullCallback", "DispatchCallback", "FixedSizeFramer", "FrameTooLarge", "Framer", "Handle", "JsonMessenger",
    "LengthPrefixFramer", "LinksError", "LoggerCallback", "Messenger", "MonotonicClock", "PollHandler", "Protocol",
    "ProtocolError", "RawMessenger", "Ref", "RetryAfter", "Role", "SendStatus", "StoreCallback", "Svc", "SvcSender",
    "TLSError", "TaskStatus", "Timer", "default_poll_handler", "default_timer", "shutdown",
]  # fmt: skip

# Layers built on links, imported on first attribute access (PEP 562) rather than here: each
# imports pieces of links, so an eager import from this file would be a cycle.
_LAZY_SUBMODULES = frozenset({"aio", "mux", "rpc", "session", "soupbintcp"})


def __getattr__(name: str) -> object:
    if name in _LAZY_SUBMODULES:
        return _importlib.import_module(f"{__name__}.{name}")  # also binds it here, as a submodule import does
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | _LAZY_SUBMODULES)
