"""``CltProtocol``: the client side of SoupBinTCP, for ``links.Clt.connect(addr, protocol=...)``.

``CltProtocol(...)`` is a configuration object, not a ``links.Protocol``: ``protocol=`` takes
a zero-argument factory, and calling the configuration makes the fresh per-connection
protocol. So one configuration serves any number of connections (and reconnections), and
remembers where the newest one is in the stream (``next_sequence``).

The life of one connection, entirely in hooks (nothing here blocks or sleeps):

* ``on_connect`` sends Login Request. ``is_connected()`` stays False until Login Accepted,
  which is exactly what ``Clt.connect`` waits for, within its ``timeout``
  (``links.ConnectTimeout`` if no answer). Login Rejected closes the connection and raises
  ``LoginRejectedError`` from ``on_recv``, which ``Clt.connect`` propagates.
* ``send_heartbeat`` runs every ``heartbeat_interval`` on the timer thread: it sends Client
  Heartbeat when nothing was sent for an interval (so the line is never silent for two), and
  ends the connection (``BrokenError``, reason ``soupbintcp.idle_timeout``) when nothing
  arrived for ``idle_timeout`` seconds. Both use the timer's clock, so a ``FakeClock`` drives
  them in tests.
* End of Session closes the connection for good: later calls raise ``links.ClosedError``, and
  ``reconnect=`` does not redial (the session is over). Login Rejected does the same.
* A local ``close()`` sends Logout Request first (``on_close``).
* With ``reconnect=``, every new connection logs in again through a fresh protocol from the
  same configuration, which resumes the stream where the previous connection left it (see
  ``CltProtocol``): no Sequenced Data is missed or seen twice while the server keeps it.
"""

from __future__ import annotations

from typing import Any

from .._core._framer import LengthPrefixFramer
from .._core._messenger import Messenger
from .._core._protocol import Protocol
from ._errors import LoginRejectedError
from ._messenger import State
from ._packets import (
    CLIENT_HEARTBEAT,
    LOGOUT_REQUEST,
    EndOfSession,
    LoginAccepted,
    LoginRejected,
    LoginRequest,
    encode_packet,
)  # fmt: skip
from ._side import Side, liveness_settings

__all__ = ["MAX_FRAME_SIZE", "CltProtocol"]

#: The largest frame a 2-byte length can describe (length field included).
MAX_FRAME_SIZE = 0xFFFF + 2


class CltProtocol:
    """How to log in and keep a SoupBinTCP session alive; call it for a connection's protocol.

    Args:
        username, password: credentials (at most 6 and 10 ASCII characters).
        session: the session to join; blank means the server's current one.
        sequence: the first Sequenced Data number wanted; 0 means "from the current end".
            Later connections made by this configuration resume on their own (see
            ``__call__``); a new configuration resumes with the last number received plus one.
        heartbeat_interval: seconds of sending nothing before a Client Heartbeat goes out;
            None disables heartbeats and the silence check.
        idle_timeout: seconds without anything from the server before the connection is
            declared dead; None never.
        payload_messenger: carries application objects in Sequenced and Unsequenced Data
            (for example ``links.JsonMessenger()``); default: payloads are bytes.
        justify: ``"left"`` (the specification) or ``"right"`` for the alpha fields we send.
        max_frame_size: the largest frame accepted from the server.
    """

    def __init__(
        self,
        *,
        username: str,
        password: str,
        session: str = "",
        sequence: int = 0,
        heartbeat_interval: float | None = 1.0,
        idle_timeout: float | None = 15.0,
        payload_messenger: Messenger | None = None,
        justify: str = "left",
        max_frame_size: int = MAX_FRAME_SIZE,
    ) -> None:
        self.username = username
        self.password = password
        self.session = session
        self.sequence = sequence
        self.heartbeat_interval, self.idle_timeout = liveness_settings(heartbeat_interval, idle_timeout)
        self.payload_messenger = payload_messenger
        self.justify = justify
        if justify not in ("left", "right"):
            raise ValueError("justify must be 'left' or 'right'")
        # Fail here, not at connect time, on credentials that cannot go on the wire.
        encode_packet(self.login_request())
        self.framer = LengthPrefixFramer(header_size=2, byteorder="big", max_frame_size=max_frame_size)
        self._newest: _Client | None = None
        self._resume: int | None = None

    def login_request(self, sequence: int | None = None) -> LoginRequest:
        """The Login Request a connection sends (from ``sequence``, default the configured one)."""
        return LoginRequest(self.username, self.password, self.session, self.sequence if sequence is None else sequence)

    def __call__(self) -> Protocol:
        """A fresh protocol for one connection.

        The first connection asks for ``sequence``. Each later one (a ``reconnect=`` redial,
        or connecting again with this configuration) asks for the number after the last
        Sequenced Data the previous connection received, so the stream resumes without a
        gap or a repeat.
        """
        resume = self.next_sequence
        self._resume = resume  # kept even if this connection never logs in (a failed redial)
        self._newest = protocol = _Client(self, self.sequence if resume is None else resume)
        return protocol

    @property
    def next_sequence(self) -> int | None:
        """The number the next Sequenced Data will get: the newest connection's, or the last
        one known if it has not logged in (None before any login was accepted). A new
        configuration resumes with ``sequence=`` this."""
        newest = self._newest
        current = None if newest is None else newest.messenger.next_sequence
        return self._resume if current is None else current

    def __repr__(self) -> str:
        return (
            f"CltProtocol(username={self.username!r}, session={self.session!r}, sequence={self.sequence}, "
            f"heartbeat_interval={self.heartbeat_interval}, idle_timeout={self.idle_timeout})"
        )


class _Client(Side):
    """One client connection's state: login, liveness, goodbye."""

    heartbeat = CLIENT_HEARTBEAT

    def __init__(self, config: CltProtocol, sequence: int) -> None:
        super().__init__("client", config)
        self._login = config.login_request(sequence)
        #: The session the server put us in (from Login Accepted).
        self.session: str | None = None

    # -- lifecycle --------------------------------------------------------------------------

    def on_connect(self, con: Any) -> None:
        self._start(con)
        con.send(self._login)

    def on_close(self, con: Any) -> None:
        if self.messenger.state is State.LOGGED_IN:
            con.send(LOGOUT_REQUEST, timeout=0)  # best effort: a server that stopped reading must not hold us

    # -- traffic ----------------------------------------------------------------------------

    def on_recv(self, msg: Any) -> None:
        self._last_recv = self._clock.monotonic()
        kind = type(msg)
        if kind is LoginAccepted:
            self.session = msg.session
            self.messenger.enter(State.LOGGED_IN)
            self._log.info("soupbintcp.login_accepted", session=msg.session, sequence=msg.sequence)
        elif kind is LoginRejected:
            # Closed for good: with reconnect=, dialing again would only be rejected again.
            self.messenger.enter(State.ENDED)
            error = LoginRejectedError(msg.reason)
            self._log.warning("soupbintcp.login_rejected", reason=msg.reason, error=str(error))
            self._con.close()
            raise error
        elif kind is EndOfSession:
            # The server ended the session: closed for good, no Logout Request (ENDED), and no
            # redial with reconnect= (two clients of one user would otherwise take turns
            # replacing each other forever).
            self.messenger.enter(State.ENDED)
            self._log.info("soupbintcp.end_of_session")
            self._con.close()
