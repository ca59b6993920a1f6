"""links.lowlevel: the engine's own pieces, for those who build a layer on top of links.

An application needs only ``links`` (``Clt``, ``Svc``, protocols, framers, messengers,
callbacks, errors). The names here are what a layer such as ``links.soupbintcp`` or a new
transport works with underneath: the Sans-I/O ``Link`` that turns bytes into messages, the
``ReceiveBuffer`` it reads into, the framing helper ``split_payloads`` and the ``NEED_DATA``
sentinel, the accept outcome ``AcceptStatus``, the gate's ``Permit``, the ``SpinParkLock``
behind ``Ref``, the ``TimerHandle`` a scheduled task returns and the ``Record`` a
``StoreCallback`` keeps.

They are public API like ``links``' own (a test pins this list), but lower level: expect to
read the docstrings. For compatibility each one can still be imported from ``links`` too
(``from links import Link``), though ``links.__all__`` no longer lists them.
"""

from ._callbacks import Record as Record
from ._core._buffer import ReceiveBuffer as ReceiveBuffer
from ._core._conid import format_addr as format_addr, parse_addr as parse_addr
from ._core._framer import split_payloads as split_payloads
from ._core._link import Link as Link
from ._core._status import NEED_DATA as NEED_DATA, AcceptStatus as AcceptStatus
from ._gate import Permit as Permit
from ._ref import SpinParkLock as SpinParkLock
from ._timer import TimerHandle as TimerHandle

__all__ = [
    "AcceptStatus", "Link", "NEED_DATA", "Permit", "ReceiveBuffer", "Record", "SpinParkLock", "TimerHandle",
    "format_addr", "parse_addr", "split_payloads",
]  # fmt: skip
