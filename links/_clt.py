"""``Clt``: one connection, owning a ``CltRecver`` and a ``CltSender``.

Use it whole on one thread (``send`` / ``recv``), or take it apart:

* ``split()`` → ``(CltRecver, CltSender)`` for a reading and a writing thread;
* ``split_ref()`` → the same halves wrapped in shareable ``Ref`` handles;
* ``into_sender_with_spawned_recver()`` → the receiver moves to the poll thread (messages
  now reach the callback there) and you keep the sender; ``..._ref()`` returns it as a ``Ref``.

After any of these the ``Clt`` itself is spent: its own methods raise ``ClosedError``, and the
halves carry on. Closing any half, or any clone of a ref, ends the connection for all of
them and runs ``on_disconnect`` exactly once.

Connecting (``Clt.connect``) dials with retries until ``timeout``, runs ``Protocol.on_connect``
(which may send a login) and, for a protocol whose ``is_connected()`` starts False, receives
until it turns True, all within the same ``timeout``. Messages that arrive during that
handshake are dispatched as usual and kept for ``recv``. An exception raised by a protocol
hook during the handshake (a login rejection, say) closes the connection and propagates.

Faults (see ``links._connection`` for the mechanics):

* ``reconnect=links.Backoff(...)``: when the connection drops, the same ``Clt``, halves, refs
  and spawned receiver carry on over a new one, dialed on the backoff schedule, with the
  protocol's handshake run again. Sends in between wait (or return ``WOULD_BLOCK``).
* ``session=links.session.Resumable(...)``: nothing sent is lost or duplicated across cuts.
* ``idle_timeout=``: a connection that receives nothing for that long is treated as dead
  (pair it with a protocol heartbeat); ``tcp_user_timeout=`` and ``keepalive=`` set the
  kernel's own detection.
* ``stall_timeout=`` (30 s): a peer that takes none of what we owe it for that long is a
  slow consumer, and its connection is closed (``clt.slow_consumer``); ``max_outbound=``
  (256 KiB) bounds what a connection may owe before sends are refused (see ``links._outbound``).
"""

from __future__ import annotations

import socket
import ssl
import time
from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING, Any

from ._callbacks import Callback, DevNullCallback
from ._clock import deadline_after
from ._connection import Connection
from ._exit import track
from ._core._backoff import Backoff
from ._core._conid import Addr, ConId, Role, parse_addr
from ._core._protocol import Protocol
from ._core._status import SendStatus
from ._errors import ClosedError, ConnectTimeout
from ._gate import Permit
from ._liveness import first_message_check
from ._outbound import DEFAULT_MAX_OUTBOUND, DEFAULT_STALL_TIMEOUT
from ._poll import PollHandler
from ._recver import CltRecver
from ._ref import Ref
from ._runtime import default_poll_handler, default_timer
from ._sender import CltSender
from ._timer import Timer
from ._tls import TlsClient, TlsTransport, check_tls
from ._sockets import dial, resolve, set_liveness, start_dial

if TYPE_CHECKING:
    from .session import Resumable

__all__ = ["Clt", "ProtocolFactory"]

ProtocolFactory = Callable[[], Protocol]


class Clt:
    """A connection: send, receive, split, or spawn its receiver into the poll thread."""

    __slots__ = ("_con", "_sender", "_recver", "__weakref__")

    def __init__(self, connection: Connection, *, tracked: bool = True) -> None:
        self._con = connection
        self._sender: CltSender | None = CltSender(connection)
        self._recver: CltRecver | None = CltRecver(connection)
        connection.sender = self._sender
        if tracked:  # else closed at exit by whoever made it (links.mux: a channel, by its connection's driver)
            track(connection, "interpreter_exit")  # closed at interpreter exit, ending any wait on it (links._exit)

    # -- construction ---------------------------------------------------------------------

    @classmethod
    def connect(
        cls,
        addr: str | Addr,
        *,
        protocol: ProtocolFactory,
        callback: Callback | None = None,
        timeout: float = 1.0,
        retry_after: float = 0.05,
        name: str = "clt",
        poll_handler: PollHandler | None = None,
        timer: Timer | None = None,
        reconnect: Backoff | None = None,
        session: Resumable | None = None,
        idle_timeout: float | None = None,
        tcp_user_timeout: float | None = None,
        keepalive: tuple[float, float, int] | None = None,
        stall_timeout: float = DEFAULT_STALL_TIMEOUT,
        max_outbound: int = DEFAULT_MAX_OUTBOUND,
        tls: ssl.SSLContext | None = None,
        tls_server_name: str | None = None,
    ) -> Clt:
        """Connect to ``"host:port"`` and complete the protocol's handshake.

        Args:
            protocol: a ``Protocol`` subclass or zero-argument factory.
            callback: sees every message in both directions (default: none).
            timeout: seconds for dialing (with retries) and the handshakes together; also the
                limit of each reconnect attempt.
            retry_after: pause between refused dial attempts.
            name: shown in ``con_id`` and logs.
            poll_handler, timer: runtime threads to use (default: the shared ones).
            reconnect: redial on this schedule when the connection drops.
            session: resumable-session settings (exactly-once delivery across cuts).
            idle_timeout: drop a connection that received nothing for this many seconds.
            tcp_user_timeout, keepalive: kernel-level liveness (see ``set_liveness``).
            stall_timeout: seconds the peer may take none of what we owe it before the
                connection is closed as a slow consumer (``BrokenError("slow_consumer")``).
            max_outbound: bytes a connection may owe its socket (beyond one partly written
                frame) before a send is refused (``WOULD_BLOCK``, or a wait within its timeout).
            tls: speak TLS with this client context (``ssl.create_default_context(...)``):
                the server's certificate is verified by the context's rules, for the host of
                ``addr`` or ``tls_server_name``; a client certificate loaded into the context
                is offered to servers that ask for one.

        Raises:
            ConnectTimeout: no connection, or no completed handshake, within ``timeout``.
            TLSError: the TLS handshake failed (the server's certificate refused, say).
            links.session.SessionLost: the server refused the session.
            ValueError: ``addr`` is not ``host:port`` with a port in 1-65535.
            ValueError, TypeError: ``timeout`` is nan, or not a number of seconds; or
                ``idle_timeout`` or ``stall_timeout`` is not a positive number of seconds, or
                ``max_outbound`` not a whole number of bytes.
        """
        target = parse_addr(addr)
        deadline = deadline_after(timeout)  # raises for nan or a non-number, before anything starts
        check_tls(tls)
        if deadline is None:
            kind = TypeError if timeout is None else ValueError
            raise kind(f"Clt.connect needs a finite timeout in seconds, not {timeout!r}")

        where = resolve(target)  # once: a redial never waits on a name lookup

        def redial() -> socket.socket:  # a connect under way; the redialer watches it (links._redial)
            sock = start_dial(*where)
            set_liveness(sock, tcp_user_timeout=tcp_user_timeout, keepalive=keepalive)
            return sock

        driver = session.client_driver() if session is not None else None
        con = Connection(
            Role.INITIATOR, name, protocol_factory=protocol, callback=_callback(callback),
            timer=default_timer() if timer is None else timer, poll=_poll(poll_handler), session=driver,
            reconnect=reconnect, redial=redial, handshake_timeout=timeout, idle_timeout=idle_timeout,
            stall_timeout=stall_timeout, max_outbound=max_outbound,
        )  # fmt: skip
        if driver is not None:
            driver.connection = con
        secure = TlsClient(tls, tls_server_name or target[0]) if tls is not None else None
        if secure is not None and con._redialer is not None:  # every redial speaks TLS too, resuming
            con._redialer.secure = secure.wrap
        clt = cls(con)
        sock = dial(target, timeout=timeout, retry_after=retry_after)
        set_liveness(sock, tcp_user_timeout=tcp_user_timeout, keepalive=keepalive)
        stream = sock if secure is None else _tls_handshake(secure.wrap(sock), deadline)
        try:
            att = con.open(stream, deadline)
        except TimeoutError as e:
            if isinstance(e, ConnectTimeout):
                raise
            raise ConnectTimeout(f"{con.con_id}: handshake did not complete within {timeout}s") from e
        con.publish(att, driver.replay_frames if driver is not None else None)
        con.log.info("clt.connected", role=Role.INITIATOR.value)
        return clt

    @classmethod
    def from_socket(
        cls,
        sock: socket.socket,
        role: Role,
        *,
        protocol: ProtocolFactory,
        callback: Callback | None = None,
        name: str = "clt",
        poll_handler: PollHandler | None = None,
        timer: Timer | None = None,
        permit: Permit | None = None,
        stall_timeout: float = DEFAULT_STALL_TIMEOUT,
        max_outbound: int = DEFAULT_MAX_OUTBOUND,
        idle_timeout: float | None = None,
        handshake_timeout: float | None = None,
        tls: ssl.SSLContext | None = None,
        tls_server_name: str | None = None,
    ) -> Clt:
        """Wrap a connected socket (``Svc`` uses this for accepted ones); runs ``on_connect``
        but does not wait for the protocol's handshake to finish. With ``handshake_timeout``,
        the connection is closed unless a whole message arrives within that many seconds.

        With ``tls``, the TLS handshake runs first, on this thread (as the client for
        ``Role.INITIATOR``, checking ``tls_server_name``; as the server for ``Role.ACCEPTOR``),
        within ``handshake_timeout`` (10 s when None).

        The socket is links' from now on: it is put in blocking mode (every call that must not
        wait passes ``MSG_DONTWAIT``) and its receive timeout is links' to set.

        Raises:
            TLSError: the TLS handshake failed; ConnectTimeout: it did not finish in time.
        """
        check_tls(tls)
        if tls is not None:
            deadline = time.monotonic() + (10.0 if handshake_timeout is None else handshake_timeout)
            if role is Role.ACCEPTOR:
                stream = TlsTransport.server(sock, tls)
            else:
                stream = TlsClient(tls, tls_server_name).wrap(sock)
            sock = _tls_handshake(stream, deadline)  # type: ignore[assignment]
        con = Connection(
            role, name, protocol_factory=protocol, callback=_callback(callback),
            timer=default_timer() if timer is None else timer, poll=_poll(poll_handler),
            stall_timeout=stall_timeout, max_outbound=max_outbound, idle_timeout=idle_timeout,
        )  # fmt: skip
        clt = cls(con)
        att = con.open(sock, time.monotonic(), permit, wait=False)
        if handshake_timeout is not None:
            check = first_message_check(att, handshake_timeout)
            att.first_deadline = att.schedule(f"first message {att.con_id}", handshake_timeout, check)
        con.publish(att)
        con.log.info("clt.connected", role=role.value)
        return clt

    # -- whole-connection use ---------------------------------------------------------------

    @property
    def con_id(self) -> ConId:
        """This connection's identity: role, name, local and peer address (``str()`` for logs).

        It stays readable after the connection closed; with ``reconnect=`` the addresses are
        those of the newest attachment.
        """
        return self._con.con_id

    @property
    def peer_certificate(self) -> dict[str, Any] | None:
        """The peer's verified TLS certificate (see ``CltSender.peer_certificate``), or None."""
        return self._halves()[1].peer_certificate

    def send(self, msg: Any, timeout: float | None = None) -> SendStatus:
        """Send one message: ``Protocol.on_send`` → serialize → frame → write, whole or not at all.

        Args:
            msg: a message the protocol's messenger serializes (a dict for ``JsonMessenger``,
                bytes for ``RawMessenger``).
            timeout: seconds to wait for room (or, with ``reconnect=``, for the next
                connection): 0 never waits, None (the default) waits as long as it takes
                (a peer that stops reading is cut after ``stall_timeout``). On the poll and
                timer threads it is always 0.

        Returns:
            ``SendStatus.COMPLETED`` when links has the message (what the socket did not take
            at once the poll thread writes); ``SendStatus.WOULD_BLOCK`` when none of it was
            taken within ``timeout`` (``Protocol.on_would_block`` ran).

        Raises:
            ClosedError: the connection was closed on this side, or this ``Clt`` was split.
            BrokenError: the peer closed or reset it (with ``reconnect=``: it gave up).
            FrameTooLarge: the frame exceeds the framer's ``max_frame_size``; nothing was sent.
            ValueError, TypeError: ``timeout`` is not a usable number of seconds.
            Whatever the messenger or a protocol hook raises (a ``TypeError`` for a message
            it cannot serialize, say), after ``Protocol.on_error``.
        """
        if self._sender is None:
            return self._halves()[1].send(msg, timeout)  # raises: this Clt was split
        return self._con.send(msg, timeout)  # CltSender.send, one call fewer (the W1 hot path)

    def send_many(self, msgs: Iterable[Any], timeout: float | None = None) -> SendStatus:
        """Send a batch of messages in one write: all of them are taken, or none.

        Hooks (``on_send``, ``on_sent``) run per message. Batching is what makes sending
        cheap: one syscall for the batch instead of one per message.

        Args:
            msgs: the messages, in order.
            timeout: as for ``send``.

        Returns:
            ``SendStatus.COMPLETED`` (all taken) or ``SendStatus.WOULD_BLOCK`` (none taken).

        Raises:
            The same errors as ``send``. With ``reconnect=``, a batch of two or more whose
            write found the connection cut raises ``BrokenError`` (part of it may have arrived).
        """
        return self._halves()[1].send_many(msgs, timeout)

    def recv(self, timeout: float | None = None) -> Any:
        """Receive the next message on this thread, waiting up to ``timeout`` seconds.

        The message goes through ``Protocol.on_recv``, the callback and ``send_reply`` first,
        as on a spawned receiver.

        Args:
            timeout: None (the default) waits as long as it takes, 0 only takes what has
                arrived, ``T`` waits at most about ``T`` seconds.

        Returns:
            The deserialized message, or None when the timeout expired first.

        Raises:
            BrokenError: the peer closed or reset the connection (``.reason`` says which).
            ClosedError: the connection was closed on this side, or this ``Clt`` was split.
            FrameTooLarge, DecodeError: the peer sent a hostile frame; the connection is closed.
            BusyError: another thread is inside ``recv`` on this connection.
            ValueError, TypeError: ``timeout`` is not a usable number of seconds.
        """
        return self._halves()[0].recv(timeout)

    def __iter__(self) -> Iterator[Any]:
        """Messages as ``recv()`` returns them, until the peer closes (then iteration stops)."""
        return iter(self._halves()[0])

    def is_connected(self) -> bool:
        """Whether the connection is up now: the socket is open and the protocol says so
        (``Protocol.is_connected``: logged in, heartbeats fresh). Never raises; False once
        closed, and between attachments while ``reconnect=`` redials."""
        return self._con.is_connected()

    def close(self) -> None:
        """End the connection (both halves, every ref): ``Protocol.on_close`` says goodbye,
        then the socket closes and ``on_disconnect`` runs once. Idempotent; never raises.
        Later calls on it raise ``ClosedError``."""
        self._con.close()

    def __enter__(self) -> Clt:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Clt({self._con.con_id}, connected={self._con.is_connected()})"

    # -- taking it apart --------------------------------------------------------------------

    def split(self) -> tuple[CltRecver, CltSender]:
        """Take the connection apart into its two halves, for a reading and a writing thread.

        Returns:
            ``(CltRecver, CltSender)``; this ``Clt`` is spent (its own calls raise ``ClosedError``).

        Raises:
            ClosedError: it was split (or spawned) already.
        """
        halves = self._halves()
        self._recver = self._sender = None
        return halves

    def split_ref(self) -> tuple[Ref[CltRecver], Ref[CltSender]]:
        """Like ``split``, with each half wrapped in a shareable ``Ref`` (``clone()`` it per thread).

        Raises:
            ClosedError: it was split (or spawned) already.
        """
        recver, sender = self.split()
        return Ref(recver), Ref(sender)

    def into_sender_with_spawned_recver(self) -> CltSender:
        """Move the receiver into the poll thread; keep (and return) the sender.

        From then on messages reach the callback (and ``send_reply``) on the poll thread, and
        this ``Clt`` is spent (its own calls raise ``ClosedError``).

        Returns:
            The ``CltSender``, safe to call from several threads.

        Raises:
            ClosedError: it was split (or spawned) already.
            BusyError: another thread is inside ``recv`` on this ``Clt``: two readers of one
                socket would tear its frames apart.
        """
        return self._spawn(None)

    def _spawn(self, before: Callable[[CltSender], None] | None) -> CltSender:
        """``into_sender_with_spawned_recver``, running ``before(sender)`` just before the
        receiver is spawned (a service pools the connection there, so that the first message
        dispatched finds it pooled)."""
        recver, sender = self._halves()
        recver._retire()
        self._recver = self._sender = None
        if before is not None:
            before(sender)
        self._con.spawn()
        return sender

    def into_sender_with_spawned_recver_ref(self) -> Ref[CltSender]:
        """Like ``into_sender_with_spawned_recver``, returning the sender as a shareable ``Ref``.

        Raises:
            ClosedError, BusyError: as ``into_sender_with_spawned_recver``.
        """
        return Ref(self.into_sender_with_spawned_recver())

    def _halves(self) -> tuple[CltRecver, CltSender]:
        if self._recver is None or self._sender is None:
            raise ClosedError(f"{self._con.con_id}: this Clt was split; use its halves")
        return self._recver, self._sender


def _callback(callback: Callback | None) -> Callback:
    return DevNullCallback() if callback is None else callback


def _poll(poll_handler: PollHandler | None) -> Callable[[], PollHandler]:
    return (lambda: poll_handler) if poll_handler is not None else default_poll_handler


def _tls_handshake(transport: TlsTransport, deadline: float) -> TlsTransport:
    """``transport`` with its handshake complete (on this thread), or closed."""
    try:
        transport.handshake(deadline)
    except BaseException:
        transport.close()
        raise
    return transport
