"""``SoupBinTcpMessenger``: packets in, packets out, for one side of one connection.

It wraps ``encode_packet`` / ``decode_packet`` with the two things a side knows:

* direction: a client sends only client packets and accepts only server packets, and the
  other way round. Sending the wrong one is our bug (``TypeError``); receiving it is the
  peer's (``DecodeError``).
* state: which packets may arrive *now*. The protocol moves the messenger through
  ``LOGGING_IN`` → ``LOGGED_IN`` → ``ENDED`` and the table below says what each state
  accepts. A packet out of place (data before login, a second login, anything after the
  end) is a ``DecodeError``, so the core logs ``frame.decode_failed`` and closes the
  connection, and the packet never reaches the protocol or the application's callback:
  an unauthenticated client cannot get a message to the application.

The core decodes one frame and dispatches it before decoding the next, so a state change
made by the protocol in ``on_recv`` applies to the very next packet.

A client's messenger also numbers Sequenced Data: the number is implicit on the wire (one
more than the previous, starting at the one in Login Accepted), and the decoder sees every
packet in stream order, so it is the one place that can stamp ``SequencedData.sequence``
exactly. That makes a client messenger stateful: one per connection (``CltProtocol`` makes
one for every connection it creates).
"""

from __future__ import annotations

import enum
from typing import Any

from .._core._messenger import Messenger
from .._errors import DecodeError
from ._packets import (
    CLIENT_PACKETS, SERVER_PACKETS, SequencedData, UnsequencedData, decode_packet, encode_packet, is_packet_type,
    packet_name,
)  # fmt: skip

__all__ = ["SoupBinTcpMessenger", "State"]


class State(enum.Enum):
    """Where one connection is in the session's life (the same three on both sides)."""

    LOGGING_IN = "logging in"  # client: Login Request sent; server: waiting for it
    LOGGED_IN = "logged in"
    ENDED = "ended"  # rejected, logged out, ended, timed out: nothing more is accepted


def _types(*packets: type) -> frozenset[int]:
    return frozenset(p.packet_type[0] for p in packets)


# What each side accepts from its peer in each state. Heartbeats and Debug are harmless at
# any time before the end; data and login packets only where the protocol says.
_A, _J, _S, _H, _Z, _L, _U, _R, _O, _DEBUG = (ord(c) for c in "AJSHZLURO+")
_ACCEPTS: dict[tuple[str, State], frozenset[int]] = {
    ("client", State.LOGGING_IN): frozenset({_A, _J, _H, _Z, _DEBUG}),
    ("client", State.LOGGED_IN): frozenset({_S, _H, _Z, _DEBUG}),
    ("server", State.LOGGING_IN): frozenset({_L, _R, _O, _DEBUG}),
    ("server", State.LOGGED_IN): frozenset({_U, _R, _O, _DEBUG}),
    ("client", State.ENDED): frozenset(),
    ("server", State.ENDED): frozenset(),
}


class SoupBinTcpMessenger(Messenger[Any, Any]):
    """Serializes this side's packets and deserializes the peer's.

    Args:
        side: ``"client"`` or ``"server"``.
        payload_messenger: carries application objects inside Sequenced and Unsequenced
            Data (default: payloads are bytes).
        justify: ``"left"`` (the specification) or ``"right"`` for the alpha fields we write.
    """

    def __init__(self, side: str, *, payload_messenger: Messenger | None = None, justify: str = "left") -> None:
        if side not in ("client", "server"):
            raise ValueError("side must be 'client' or 'server'")
        if justify not in ("left", "right"):
            raise ValueError("justify must be 'left' or 'right'")
        self.side = side
        self.payload_messenger = payload_messenger
        self.justify = justify
        self._sends = frozenset(CLIENT_PACKETS if side == "client" else SERVER_PACKETS)
        self._peer_types = _types(*(SERVER_PACKETS if side == "client" else CLIENT_PACKETS))
        self._raw = payload_messenger is None
        self._out_data = UnsequencedData if side == "client" else SequencedData
        self._out_prefix = self._out_data.packet_type
        #: The number the next Sequenced Data will get (client side, once logged in).
        self.next_sequence: int | None = None
        self.state = State.LOGGING_IN
        self._accepts = _ACCEPTS[(side, self.state)]

    def enter(self, state: State) -> None:
        """Accept, from the next packet on, what ``state`` allows."""
        self.state = state
        self._accepts = _ACCEPTS[(self.side, state)]

    def serialize(self, msg: Any) -> bytes:
        cls = type(msg)
        if cls is self._out_data and self._raw:  # the hot path: bytes in a data packet
            data = msg.payload
            if type(data) is bytes:
                return self._out_prefix + data
        if cls not in self._sends:
            raise TypeError(f"a SoupBinTCP {self.side} does not send {cls.__name__}")
        return encode_packet(msg, payload_messenger=self.payload_messenger, justify=self.justify)

    def deserialize(self, payload: Any) -> Any:
        kind = payload[0] if len(payload) else -1
        if kind not in self._accepts:
            raise DecodeError(self._refusal(kind))
        if kind == _S:  # only a client accepts S, and only once Login Accepted set the number
            data = bytes(payload[1:]) if self._raw else self.payload_messenger.deserialize(payload[1:])  # type: ignore[union-attr]
            sequence = self.next_sequence
            self.next_sequence = sequence + 1  # type: ignore[operator]
            return SequencedData(data, sequence)
        if kind == _U and self._raw:  # the server's hot path
            return UnsequencedData(bytes(payload[1:]))
        packet = decode_packet(payload, payload_messenger=self.payload_messenger)
        if kind == _A:
            self.next_sequence = packet.sequence  # type: ignore[union-attr]
        return packet

    def _refusal(self, kind: int) -> str:
        if kind < 0:
            return "empty packet: no type byte"
        peer = "server" if self.side == "client" else "client"
        if not is_packet_type(kind):
            return f"unknown packet type {packet_name(kind)}"
        if kind not in self._peer_types:
            return f"a SoupBinTCP {peer} does not send {packet_name(kind)}"
        return f"{packet_name(kind)} is not allowed while {self.state.value}"

    def __repr__(self) -> str:
        return (
            f"SoupBinTcpMessenger({self.side!r}, state={self.state.name}, payload_messenger={self.payload_messenger!r})"
        )
