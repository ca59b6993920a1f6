"""A sample protocol: Ping/Pong behind a login handshake, with heartbeats.

Small enough to read in one sitting, complete enough to test a real application shape:

* messages are frozen dataclasses, sent as JSON objects with a ``"type"`` field, framed by a
  4-byte length prefix (``SampleMessenger``);
* ``SampleClient`` sends ``Login`` in ``on_connect`` and reports ``is_connected()`` only once
  ``LoginAccepted`` arrived, so ``Clt.connect`` returns a logged-in connection. A
  ``LoginRejected`` raises ``LoginFailed`` from ``on_recv``, which ``Clt.connect`` propagates
  after closing the connection;
* ``SampleServer`` never waits for the login: ``on_connect`` schedules a deadline on the
  connection's timer and returns; ``on_recv`` checks the ``Login`` when it comes and
  ``send_reply`` answers it (``LoginAccepted``, or ``LoginRejected`` and close). A client
  that stays silent is closed by the deadline (log event ``sample.login_timeout``). So a
  slow or hostile client never holds up the poll thread, and every other connection on it.
* both answer ``Ping`` with ``Pong`` and, once logged in, send ``Heartbeat`` every
  ``heartbeat_interval`` seconds (None, the default, sends none).

Replies and heartbeats are sent with ``timeout=0``: replies run on the poll thread, which
must never wait for a slow reader, and a heartbeat that finds the socket full is not needed
(traffic is flowing). A connection that is gone by then is already closed and logged by
``links``, so a failed reply is dropped here rather than raised into the poll thread.

Use it as ``protocol=lambda: SampleClient("user", "secret", heartbeat_interval=0.5)``; the
constructor defaults (user ``"user"``, password ``"pass"``) match ``SampleServer()``'s default
accounts, so ``protocol=SampleClient`` and ``protocol=SampleServer`` work together as they are.
"""

from __future__ import annotations

import dataclasses
import hmac
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Union

from .._core._framer import LengthPrefixFramer
from .._core._messenger import Buffer, JsonMessenger, Messenger
from .._core._conid import ConId
from .._core._protocol import Handle, Protocol
from .._core._status import SendStatus, TaskStatus
from .._errors import DecodeError, LinksError
from .._log import get_logger
from .._timer import TimerHandle

__all__ = [
    "Ping",
    "Pong",
    "Login",
    "LoginAccepted",
    "LoginRejected",
    "Heartbeat",
    "SampleMessage",
    "SampleMessenger",
    "SampleClient",
    "SampleServer",
    "LoginFailed",
]


# -- messages --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Ping:
    """Sample request: the server answers ``Pong`` with the same ``seq``."""
    seq: int = 0


@dataclass(frozen=True, slots=True)
class Pong:
    """Sample answer to a ``Ping``, carrying its ``seq``."""
    seq: int = 0


@dataclass(frozen=True, slots=True)
class Login:
    """Sample login, sent by ``SampleClient`` from ``on_connect``; the password is kept out of reprs."""
    username: str
    password: str = field(repr=False)  # kept out of logs and reprs


@dataclass(frozen=True, slots=True)
class LoginAccepted:
    """Sample answer to a valid ``Login``: the client is logged in from then on."""
    username: str


@dataclass(frozen=True, slots=True)
class LoginRejected:
    """Sample answer to a bad ``Login``, with the server's ``reason``; the client raises ``LoginFailed``."""
    reason: str


@dataclass(frozen=True, slots=True)
class Heartbeat:
    """Sample heartbeat, sent every ``heartbeat_interval`` by a logged-in side; needs no answer."""
    pass


SampleMessage = Union[Ping, Pong, Login, LoginAccepted, LoginRejected, Heartbeat]

_TYPES: dict[str, type] = {cls.__name__: cls for cls in (Ping, Pong, Login, LoginAccepted, LoginRejected, Heartbeat)}


class LoginFailed(LinksError):
    """The server rejected the login; raised from ``Clt.connect``. ``reason`` is the server's."""

    def __init__(self, reason: str) -> None:
        super().__init__(f"login rejected: {reason}")
        self.reason = reason


class SampleMessenger(Messenger[SampleMessage, SampleMessage]):
    """Sample messages as JSON objects: ``{"type": "Ping", "seq": 1}``."""

    def __init__(self) -> None:
        self._json = JsonMessenger()

    def serialize(self, msg: SampleMessage) -> Buffer:
        name = type(msg).__name__
        if _TYPES.get(name) is not type(msg):
            raise TypeError(f"SampleMessenger cannot send {type(msg).__name__}")
        return self._json.serialize({"type": name, **dataclasses.asdict(msg)})

    def deserialize(self, payload: Buffer) -> SampleMessage:
        doc = self._json.deserialize(payload)  # DecodeError on bad JSON
        if not isinstance(doc, dict):
            raise DecodeError(f"expected a JSON object, got {type(doc).__name__}")
        name = doc.pop("type", None)
        cls = _TYPES.get(name) if isinstance(name, str) else None
        if cls is None:
            raise DecodeError(f"unknown message type {name!r}")
        try:
            return cls(**doc)
        except TypeError as e:  # missing or unexpected fields
            raise DecodeError(f"bad {name}: {e}") from e

    def __repr__(self) -> str:
        return "SampleMessenger()"


# -- protocols -------------------------------------------------------------------------------


class _SampleProtocol(Protocol[SampleMessage, SampleMessage]):
    framer = LengthPrefixFramer(header_size=4, max_frame_size=1 << 16)
    messenger = SampleMessenger()

    def __init__(self, heartbeat_interval: float | None) -> None:
        self.heartbeat_interval = heartbeat_interval

    def is_connected(self) -> bool:
        return self.logged_in

    @property
    def logged_in(self) -> bool:
        raise NotImplementedError

    def send_reply(self, msg: SampleMessage, con: Handle) -> None:
        if isinstance(msg, Ping):
            _reply(con, Pong(msg.seq))

    def send_heartbeat(self, con: Handle) -> None:
        if self.logged_in:
            con.send(Heartbeat(), timeout=0)


def _reply(con: Handle, msg: SampleMessage) -> bool:
    """Send without waiting; True when written (see the module docstring)."""
    try:
        return con.send(msg, timeout=0) is SendStatus.COMPLETED
    except LinksError:
        return False


class SampleClient(_SampleProtocol):
    """Logs in on connect; ``is_connected()`` once the server accepted.

    Args:
        username, password: the credentials sent in ``Login``.
        heartbeat_interval: seconds between heartbeats once logged in (None: none).
    """

    def __init__(
        self, username: str = "user", password: str = "pass", *, heartbeat_interval: float | None = None
    ) -> None:
        super().__init__(heartbeat_interval)
        self.username = username
        self.password = password
        self._logged_in = False

    @property
    def logged_in(self) -> bool:
        """Whether the server accepted this connection's login (``LoginAccepted`` arrived)."""
        return self._logged_in

    def on_connect(self, con: Handle) -> None:
        con.send(Login(self.username, self.password))  # an empty new socket: never waits

    def on_recv(self, msg: SampleMessage) -> None:
        if isinstance(msg, LoginAccepted):
            self._logged_in = True
        elif isinstance(msg, LoginRejected):
            raise LoginFailed(msg.reason)


class SampleServer(_SampleProtocol):
    """Checks logins without ever blocking the thread it runs on.

    Args:
        valid: accepted ``{username: password}`` (default ``{"user": "pass"}``).
        login_timeout: seconds a new connection has to log in before it is closed.
        heartbeat_interval: seconds between heartbeats once logged in (None: none).

    States: awaiting login → logged in, or → ended (rejected, timed out, or disconnected).
    The deadline task (timer thread) and ``on_recv`` (poll thread) race for the first
    transition, so it is taken under a lock: a login that arrives as the deadline fires is
    either accepted or too late, never both.
    """

    def __init__(
        self,
        valid: Mapping[str, str] | None = None,
        login_timeout: float = 1.0,
        *,
        heartbeat_interval: float | None = None,
    ) -> None:
        super().__init__(heartbeat_interval)
        self.valid = {"user": "pass"} if valid is None else dict(valid)
        self.login_timeout = login_timeout
        self.username: str | None = None
        self._state = "awaiting"  # "awaiting" | "logged_in" | "ended"
        self._lock = threading.Lock()
        self._deadline: TimerHandle | None = None
        self._answer: LoginAccepted | LoginRejected | None = None  # from on_recv to send_reply

    @property
    def logged_in(self) -> bool:
        """Whether this connection's client logged in (and the connection has not ended since)."""
        return self._state == "logged_in"

    def on_connect(self, con: Handle) -> None:
        def expire() -> TaskStatus:
            with self._lock:
                expired = self._state == "awaiting"
                if expired:
                    self._state = "ended"
            if expired:
                log = get_logger("sample", con_id=str(con.con_id))
                log.warning("sample.login_timeout", login_timeout=self.login_timeout)
                con.close()
            return TaskStatus.TERMINATE

        self._deadline = con.schedule(f"login deadline {con.con_id}", self.login_timeout, expire)

    def on_recv(self, msg: SampleMessage) -> None:
        with self._lock:
            if self._state != "awaiting":
                return  # logged in already (repeated logins are ignored), or too late
            if not isinstance(msg, Login):
                self._state, self._answer = "ended", LoginRejected("log in first")
            elif self._check(msg):
                self._state, self._answer = "logged_in", LoginAccepted(msg.username)
                self.username = msg.username
            else:
                self._state, self._answer = "ended", LoginRejected("bad username or password")
        self._cancel_deadline()

    def send_reply(self, msg: SampleMessage, con: Handle) -> None:
        answer, self._answer = self._answer, None
        if answer is None:
            if self.logged_in:
                super().send_reply(msg, con)
            return
        # A client that cannot take one small answer right now is not worth waiting for.
        if not _reply(con, answer) or isinstance(answer, LoginRejected):
            con.close()

    def on_disconnect(self, con_id: ConId) -> None:
        with self._lock:
            self._state = "ended"
        self._cancel_deadline()

    def _check(self, login: Login) -> bool:
        if not isinstance(login.username, str) or not isinstance(login.password, str):
            return False  # JSON lets a hostile client send any type here
        expected = self.valid.get(login.username)
        # Constant-time comparison: the habit to copy into a real server.
        return expected is not None and hmac.compare_digest(expected.encode(), login.password.encode())

    def _cancel_deadline(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
