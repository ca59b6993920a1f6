"""``SvcProtocol``: the server side of SoupBinTCP, for ``links.Svc.bind(addr, protocol=...)``.

Like ``CltProtocol``, ``SvcProtocol(...)`` is a configuration object that the service calls
once per accepted connection for a fresh protocol. It also owns what the connections share:
the ``SessionStore`` of numbered Sequenced Data (see ``_session``).

The life of one connection, entirely in hooks (the poll thread never waits):

* ``on_connect`` schedules the login deadline on the connection's timer. A client that has
  not logged in by then is disconnected (``soupbintcp.login_timeout``); nobody else notices.
* Login Request: ``authenticate(username, password)`` (or the fixed credentials) and the
  session name decide between Login Rejected (then the connection closes) and Login
  Accepted, which goes out together with the replay of kept messages from the requested
  number, in one write, before the connection can carry live data.
* Sequenced Data is sent through the ordinary senders (``svc.send_to(con_id, SequencedData(p))``,
  ``send_reply``, ``broadcast``, ...). ``on_send`` numbers it in the user's stream, so what
  the server's callbacks see in ``on_sent`` carries its ``sequence``. Sending it to a
  connection that is not logged in raises ``NotLoggedInError``.
* ``send_heartbeat`` (every ``heartbeat_interval``, timer thread) sends Server Heartbeat when
  nothing was sent for an interval, and disconnects a client silent for ``idle_timeout``.
* Logout Request closes the connection. Closing the server (or one connection) locally
  sends End of Session first (``on_close``).
* ``reply(payload)``, when given, answers every Unsequenced Data with Sequenced Data (the
  ``links serve soupbintcp`` echo server is ``reply=lambda payload: payload``).
"""

from __future__ import annotations

import hmac
from collections import deque
from collections.abc import Callable
from typing import Any

from .._core._framer import LengthPrefixFramer
from .._core._messenger import Messenger
from .._core._protocol import Protocol
from .._core._status import TaskStatus
from .._errors import LinksError
from ._client import MAX_FRAME_SIZE
from ._errors import NotLoggedInError
from ._messenger import State
from ._packets import (
    END_OF_SESSION,
    NOT_AUTHORIZED,
    SERVER_HEARTBEAT,
    SESSION_NOT_AVAILABLE,
    LoginAccepted,
    LoginRejected,
    LoginRequest,
    LogoutRequest,
    SequencedData,
    UnsequencedData,
    encode_packet,
)  # fmt: skip
from ._session import SequenceUnavailable, SessionStore
from ._side import Side, liveness_settings

__all__ = ["SvcProtocol"]


class SvcProtocol:
    """How to authenticate, number and keep alive SoupBinTCP sessions; call it per connection.

    Args:
        username, password: the one valid login (give these, or ``authenticate``): at most 6
            and 10 ASCII characters, as a Login Request carries them.
        authenticate: ``authenticate(username, password) -> bool``, called on the receiving
            thread (the poll thread when spawned), so it must answer quickly.
        session: this server's session name (at most 10 ASCII characters), sent in Login
            Accepted; a login that names another session is rejected (``S``).
        heartbeat_interval: seconds of sending nothing before a Server Heartbeat goes out;
            None disables heartbeats and the silence check.
        idle_timeout: seconds without anything from a logged-in client before it is
            disconnected; None never.
        login_timeout: seconds a new connection has to log in.
        max_messages: Sequenced Data kept per user for replay (the oldest are dropped).
        reply: ``reply(payload) -> payload | None``, answering each Unsequenced Data with
            Sequenced Data (None: no answer). Runs on the receiving thread.
        payload_messenger: carries application objects in Sequenced and Unsequenced Data;
            default: payloads are bytes.
        justify: ``"left"`` (the specification) or ``"right"`` for the alpha fields we send.
        max_frame_size: the largest frame accepted from a client.
        login_throttle: seconds after a failed login during which logins from the same peer
            address are refused without checking them (``soupbintcp.login_rejected`` with
            ``why="throttled"``); None (the default) checks every attempt. It bounds password
            guessing to one try per address per ``login_throttle``.

    Raises:
        ValueError: a setting that cannot work, such as a username, password or session
            name that does not fit its field.
    """

    def __init__(
        self,
        *,
        username: str | None = None,
        password: str | None = None,
        authenticate: Callable[[str, str], bool] | None = None,
        session: str = "",
        heartbeat_interval: float | None = 1.0,
        idle_timeout: float | None = 15.0,
        login_timeout: float = 5.0,
        max_messages: int = 100_000,
        reply: Callable[[Any], Any] | None = None,
        payload_messenger: Messenger | None = None,
        justify: str = "left",
        max_frame_size: int = MAX_FRAME_SIZE,
        login_throttle: float | None = None,
    ) -> None:
        if (authenticate is None) == (username is None or password is None):
            raise ValueError("give either username and password, or authenticate")
        if justify not in ("left", "right"):
            raise ValueError("justify must be 'left' or 'right'")
        if not login_timeout > 0:  # so never nan
            raise ValueError("login_timeout must be positive")
        if login_throttle is not None and not login_throttle > 0:
            raise ValueError("login_throttle must be None or positive")
        self.login_throttle = login_throttle
        #: Peer host -> when its last login failed (timer clock), for the throttle.
        self.failed_logins: dict[str, float] = {}
        encode_packet(LoginAccepted(session, 1))  # a session name that cannot go on the wire fails here
        if username is not None and password is not None:
            # A login no client can send (a username over 6 characters, say) would make a
            # server nobody can log in to: refuse it here, as CltProtocol does.
            encode_packet(LoginRequest(username, password, session, 0))
        self.authenticate = authenticate or _fixed(username, password)  # type: ignore[arg-type]
        self.session = session
        self.heartbeat_interval, self.idle_timeout = liveness_settings(heartbeat_interval, idle_timeout)
        self.login_timeout = login_timeout
        self.reply = reply
        self.payload_messenger = payload_messenger
        self.justify = justify
        self.framer = LengthPrefixFramer(header_size=2, byteorder="big", max_frame_size=max_frame_size)
        #: The numbered streams, shared by every connection this configuration makes.
        self.store = SessionStore(max_messages)

    def __call__(self) -> Protocol:
        """A fresh protocol for one accepted connection."""
        return _Server(self)

    def __repr__(self) -> str:
        return (
            f"SvcProtocol(session={self.session!r}, heartbeat_interval={self.heartbeat_interval}, "
            f"idle_timeout={self.idle_timeout}, login_timeout={self.login_timeout}, store={self.store!r})"
        )


def _fixed(username: str, password: str) -> Callable[[str, str], bool]:
    def authenticate(u: str, p: str) -> bool:
        # Compare both, in constant time, so timing tells nothing about which one was wrong.
        ok_user = hmac.compare_digest(u.encode(), username.encode())
        ok_password = hmac.compare_digest(p.encode(), password.encode())
        return ok_user and ok_password

    return authenticate


class _Server(Side):
    """One accepted connection's state: login, numbering, liveness, goodbye."""

    heartbeat = SERVER_HEARTBEAT

    def __init__(self, config: SvcProtocol) -> None:
        super().__init__("server", config)
        self._config = config
        self._store = config.store
        self._login_task: Any = None
        self._replay: deque[SequencedData] = deque()  # stored messages on their way out at login
        self._accepted = False  # Login Accepted is (being) written: a close owes End of Session
        #: The logged-in user (None before login).
        self.username: str | None = None

    # -- lifecycle --------------------------------------------------------------------------

    def on_connect(self, con: Any) -> None:
        self._start(con)
        # con.schedule: the deadline is cancelled with the connection, whatever ends it.
        self._login_task = con.schedule(
            f"soupbintcp login {con.con_id}", self._config.login_timeout, self._login_expired
        )

    def _login_expired(self) -> TaskStatus:
        if self.messenger.state is State.LOGGING_IN:
            self._log.warning("soupbintcp.login_timeout", login_timeout=self._config.login_timeout)
            self.messenger.enter(State.ENDED)
            self._con.close("soupbintcp.login_timeout")
        return TaskStatus.TERMINATE

    def on_close(self, con: Any) -> None:
        if self.messenger.state is State.LOGGED_IN or self._accepted:
            con.send(END_OF_SESSION, timeout=0)  # best effort: a client that stopped reading must not hold us

    def on_disconnect(self, con_id: Any) -> None:
        if self.username is not None:
            self._store.detach(self.username, self)

    # -- receiving ----------------------------------------------------------------------------

    def on_recv(self, msg: Any) -> None:
        # The messenger already refused whatever this state does not allow (data before
        # login, a second login), so only the transitions are left to handle.
        self._last_recv = self._clock.monotonic()
        kind = type(msg)
        if kind is LoginRequest:
            self._login(msg)
        elif kind is LogoutRequest:
            self._log.info("soupbintcp.logout", username=self.username)
            self.messenger.enter(State.ENDED)
            self._con.close("soupbintcp.logout")

    def _login(self, msg: LoginRequest) -> None:
        config = self._config
        if self._throttled():
            return self._reject(NOT_AUTHORIZED, msg, "throttled")
        try:
            authorized = bool(config.authenticate(msg.username, msg.password))
        except Exception as e:
            self._log.error("soupbintcp.authenticate_failed", username=msg.username, error=repr(e))
            authorized = False
        if not authorized:
            self._failed()
            return self._reject(NOT_AUTHORIZED, msg, "bad credentials")
        if msg.session and msg.session != config.session:
            return self._reject(SESSION_NOT_AVAILABLE, msg, f"no session {msg.session!r}")
        try:
            start, replay, previous = self._store.attach(msg.username, self, msg.sequence)
        except SequenceUnavailable as e:
            return self._reject(SESSION_NOT_AVAILABLE, msg, str(e))
        self.username = msg.username
        self._login_task.cancel()
        if previous is not None:
            previous._replaced_by(self)
        # Login Accepted and the replay leave in one write, and live Sequenced Data is refused
        # until it is done (still LOGGING_IN), so no live message can overtake the replay.
        self._replay.extend(replay)
        # From here the client may see Login Accepted at any moment, so a close from now on
        # owes it End of Session even before the state says LOGGED_IN.
        self._accepted = True
        try:
            self._con.send_many([LoginAccepted(config.session, start), *replay])
        except LinksError:
            return  # the write failed; the sender has closed the connection
        self.messenger.enter(State.LOGGED_IN)
        self._log.info(
            "soupbintcp.login_accepted", username=msg.username, session=config.session, sequence=start,
            replayed=len(replay),
        )  # fmt: skip

    def _peer_host(self) -> str | None:
        peer = self._con.con_id.peer
        return peer[0] if peer else None

    def _throttled(self) -> bool:
        """Whether this peer's address failed a login less than ``login_throttle`` ago."""
        throttle, host = self._config.login_throttle, self._peer_host()
        if throttle is None or host is None:
            return False
        failed_at = self._config.failed_logins.get(host)
        return failed_at is not None and self._clock.monotonic() - failed_at < throttle

    def _failed(self) -> None:
        config, host = self._config, self._peer_host()
        if config.login_throttle is None or host is None:
            return
        now = self._clock.monotonic()
        failed = config.failed_logins
        if len(failed) >= 4096:  # bounded: forget the addresses whose throttle is over
            for old in [h for h, at in failed.items() if now - at >= config.login_throttle]:
                del failed[old]
        failed[host] = now

    def _reject(self, reason: str, msg: LoginRequest, why: str) -> None:
        self._log.warning("soupbintcp.login_rejected", username=msg.username, reason=reason, why=why)
        self.messenger.enter(State.ENDED)
        try:
            self._con.send(LoginRejected(reason), timeout=0)
        except LinksError:
            pass  # gone already: closing below is all that is left
        self._con.close("soupbintcp.login_rejected")

    def _replaced_by(self, newer: _Server) -> None:
        """A newer login of the same user took the stream over: end this connection."""
        self._log.info("soupbintcp.replaced", username=self.username, by=str(newer._con.con_id))
        self._con.close()  # local close: the old client gets End of Session

    def send_reply(self, msg: Any, con: Any) -> None:
        reply = self._config.reply
        if reply is not None and type(msg) is UnsequencedData:
            answer = reply(msg.payload)
            if answer is not None:
                try:
                    con.send(SequencedData(answer))
                except LinksError as e:  # gone or replaced meanwhile: nothing to answer on
                    self._log.info("soupbintcp.reply_dropped", error=str(e))

    # -- sending ------------------------------------------------------------------------------

    def on_send(self, msg: Any) -> Any:
        if type(msg) is not SequencedData:
            return None
        replay = self._replay
        if replay and msg is replay[0]:
            replay.popleft()  # already numbered and stored: send as it is
            return None
        numbered = None
        if self.messenger.state is State.LOGGED_IN:
            numbered = self._store.append(self.username, self, msg.payload)  # type: ignore[arg-type]
        if numbered is None:
            raise NotLoggedInError(f"{self._con.con_id}: no logged-in client to number Sequenced Data for")
        return numbered

    def on_would_block(self, msg: Any) -> None:
        # links refuses a message for lack of room before ``on_send`` numbers it, so a refused
        # message has no number and leaves no gap. Should a numbered one ever be refused, it
        # must not be skipped: numbers are implicit, and a message numbered and stored but
        # not sent would shift every later number by one on the client. End the connection
        # then; the client resumes from its last number, and the store replays the gap.
        if type(msg) is SequencedData and msg.sequence is not None:
            self._log.warning("soupbintcp.sequence_gap", sequence=msg.sequence)
            self._con.close("soupbintcp.sequence_gap")
