"""The one small tree of errors that ``links`` raises.

The split follows who is to blame, because that decides what the caller does next:

* ``ClosedError``: *you* closed this connection (or a clone of its ref did). Retrying is a bug.
* ``BrokenError``: the peer or the network ended it (FIN, RST, EPIPE, ...). The original
  ``OSError``, when there is one, is chained as ``__cause__``.
* ``BusyError``: two threads used a half that is not meant to be shared (for example two
  concurrent ``recv`` calls on one ``CltRecver``). Share through ``links.Ref`` instead.
* ``ProtocolError`` and its children: the peer sent bytes that break the framing or cannot be
  decoded. The connection they came on is closed; nothing else is disturbed.
* ``TLSError`` (a ``BrokenError``): the TLS layer refused the peer (its certificate, its
  handshake, a record that does not decrypt). Only that connection ends.
* ``ConnectTimeout``: a connect (including its handshake) did not complete in time. It is also
  a ``TimeoutError`` so generic timeout handling catches it.

Raw ``OSError`` is translated into this tree in exactly one place, ``links._transport``.
"""

from __future__ import annotations

__all__ = [
    "SessionLost",
    "LinksError",
    "ClosedError",
    "BrokenError",
    "BusyError",
    "ProtocolError",
    "FrameTooLarge",
    "DecodeError",
    "ConnectTimeout",
    "TLSError",
]


class LinksError(Exception):
    """Base of every error ``links`` raises on purpose."""


class ClosedError(LinksError):
    """The connection (or service) was closed locally; it cannot be used again."""


class BrokenError(LinksError):
    """The peer or the network ended the connection.

    ``reason`` is a short stable word for logs: ``"peer_closed"`` (orderly FIN), ``"broken"``
    (reset, unreachable, ...), ``"slow_consumer"`` (the peer took nothing we owed it for
    ``stall_timeout``), ``"stalled"`` (``Transport.write``'s own bound), or the log
    event of a protocol violation such as ``"frame.too_large"``.
    """

    def __init__(self, message: str, reason: str = "broken") -> None:
        super().__init__(message)
        self.reason = reason


class BusyError(LinksError):
    """Two threads used an unshared half at the same time."""


class ProtocolError(LinksError):
    """The peer sent bytes that violate the framing or the message format."""


class FrameTooLarge(ProtocolError):
    """A frame declared (or grew to) more than the framer's ``max_frame_size``."""

    def __init__(self, size: int, max_frame_size: int) -> None:
        super().__init__(f"frame of {size} bytes exceeds max_frame_size={max_frame_size}")
        self.size = size
        self.max_frame_size = max_frame_size


class DecodeError(ProtocolError):
    """A whole frame arrived but the messenger could not turn it into a message."""


class ConnectTimeout(LinksError, TimeoutError):
    """Connecting (dial plus handshake) did not finish before the timeout."""


class TLSError(BrokenError):
    """The TLS layer ended the connection: a handshake refused (a certificate not trusted, or
    missing where one is required; no common protocol version), or a record that does not
    decrypt. ``reason`` says which: ``"tls.handshake_failed"`` or ``"tls.bad_record"``. (A
    peer that stops without TLS close_notify is a plain ``BrokenError``, ``"tls.truncated"``.)
    """


class SessionLost(BrokenError):
    """The peer no longer has this session (unknown or expired resume key): it cannot resume.

    A ``BrokenError`` (reason ``"session_lost"``), so code that handles a broken connection
    handles this too; catch ``SessionLost`` to tell it apart (start a new session).
    """

    def __init__(self, message: str) -> None:
        super().__init__(message, "session_lost")


def raised_again(first: LinksError | None, closed_here: bool, closed: str) -> LinksError:
    """What a closed connection raises, fresh for each call: re-raising one stored exception
    would grow its traceback with every call. It repeats ``first`` (why it ended), chained to
    it; ``ClosedError(closed)`` once ``closed_here`` (the user closed it, whatever the peer did
    before), or when nothing else ended it."""
    if first is None or closed_here:
        again: LinksError = ClosedError(closed)
    else:
        # Not rebuilt from its args (a subclass's __init__ may take others): the same type,
        # message and fields, with no traceback of its own yet.
        again = type(first).__new__(type(first))
        again.args = first.args
        again.__dict__.update(first.__dict__)
    again.__cause__ = first
    return again
