"""links: message-oriented TCP connections over nonblocking socket I/O.

One poll thread services every spawned receiver and acceptor, one timer thread runs
heartbeats, ``Ref`` handles share connection halves across threads, and a gate caps the live
connections of a service. See the README for a tour; every name below is public API (a test
pins this list).
"""

from ._callbacks import (
    Callback as Callback,
    ChainCallback as ChainCallback,
    CounterCallback as CounterCallback,
    DevNullCallback as DevNullCallback,
    DispatchCallback as DispatchCallback,
    LoggerCallback as LoggerCallback,
    Record as Record,
    StoreCallback as StoreCallback,
)
from ._clock import Clock as Clock, MonotonicClock as MonotonicClock
from ._clt import Clt as Clt
from ._core._backoff import Backoff as Backoff
from ._core._buffer import ReceiveBuffer as ReceiveBuffer
from ._core._conid import ConId as ConId, Role as Role
from ._core._framer import (
    DelimiterFramer as DelimiterFramer,
    FixedSizeFramer as FixedSizeFramer,
    Framer as Framer,
    LengthPrefixFramer as LengthPrefixFramer,
    split_payloads as split_payloads,
)
from ._core._link import Link as Link
from ._core._messenger import JsonMessenger as JsonMessenger, Messenger as Messenger, RawMessenger as RawMessenger
from ._core._protocol import Protocol as Protocol
from ._core._status import (
    NEED_DATA as NEED_DATA,
    AcceptStatus as AcceptStatus,
    RetryAfter as RetryAfter,
    SendStatus as SendStatus,
    TaskStatus as TaskStatus,
)
from ._errors import (
    BrokenError as BrokenError,
    BusyError as BusyError,
    ClosedError as ClosedError,
    ConnectTimeout as ConnectTimeout,
    DecodeError as DecodeError,
    FrameTooLarge as FrameTooLarge,
    LinksError as LinksError,
    ProtocolError as ProtocolError,
)
from ._gate import ConnectionGate as ConnectionGate, Permit as Permit
from ._poll import PollHandler as PollHandler
from ._pool import SvcSender as SvcSender
from ._recver import CltRecver as CltRecver
from ._ref import Ref as Ref, SpinParkLock as SpinParkLock
from ._runtime import default_poll_handler as default_poll_handler, default_timer as default_timer, shutdown as shutdown
from ._sender import CltSender as CltSender
from ._svc import Svc as Svc
from ._timer import Timer as Timer, TimerHandle as TimerHandle

from . import session as session, soupbintcp as soupbintcp

__version__ = "0.1.0"

__all__ = [
    "AcceptStatus", "Backoff", "BrokenError", "BusyError", "Callback", "ChainCallback", "Clock", "ClosedError", "Clt",
    "CltRecver", "CltSender", "ConId", "ConnectTimeout", "ConnectionGate", "CounterCallback", "DecodeError",
    "DelimiterFramer", "DevNullCallback", "DispatchCallback", "FixedSizeFramer", "FrameTooLarge", "Framer",
    "JsonMessenger", "LengthPrefixFramer", "Link", "LinksError", "LoggerCallback", "Messenger", "MonotonicClock",
    "NEED_DATA", "Permit", "PollHandler", "Protocol", "ProtocolError", "RawMessenger", "ReceiveBuffer", "Record",
    "Ref", "RetryAfter", "Role", "SendStatus", "SpinParkLock", "StoreCallback", "Svc", "SvcSender", "TaskStatus",
    "Timer", "TimerHandle", "default_poll_handler", "default_timer", "shutdown", "split_payloads",
]  # fmt: skip
