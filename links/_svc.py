"""``Svc``: a listening socket, its ``ConnectionGate`` and a pool of accepted connections.

Two ways to run one:

* on user threads: ``accept(timeout)`` returns a ``Clt`` for you to own;
  ``accept_into_pool(timeout)`` keeps it in the service, which then sends round-robin, to one
  ``con_id``, or to all, and ``recv`` reads round-robin from the pooled receivers;
* in the poll thread: ``into_sender_with_spawned_recver()`` registers the acceptor there.
  Every connection accepted from then on (and every one already pooled) has its receiver
  spawned, so messages reach the callback on the poll thread, and its sender joins the
  returned ``SvcSender``, which always sends over the live pool.

The gate: each accepted socket first asks the gate for a permit. With none left, the socket
is closed at once and ``svc.rejected`` is logged; the connection never reaches the protocol.
The permit is released exactly once, when the connection ends (see ``links._gate``).

A failure admitting one connection (its ``on_connect`` raised, say) closes it alone (``svc.accept_failed``).

With ``session=links.session.Resumable(...)`` a new socket must first say HELLO: the session
layer reads it (``links.session._accept``; on the poll thread, or on the accepting thread,
within the session's ``handshake_timeout``) and hands back what it admits (``admitted``). A new key-less HELLO starts a session: a new logical connection joins
the pool. A HELLO with a known key resumes that session: its logical connection (same
``con_id``, same pool entry) carries on over the new socket and nothing joins the pool. An
unknown or expired key is rejected (``session.rejected``) and the socket closed. A session
whose socket drops stays in the pool, detached, for ``detached_ttl``: sends to it are kept for replay.
"""

from __future__ import annotations

import importlib
import select
import socket
import ssl
import time
from collections.abc import Callable, Iterable
from contextlib import suppress
from typing import TYPE_CHECKING, Any

from ._callbacks import Callback
from ._clock import deadline_after, time_left
from ._clt import Clt, ProtocolFactory
from ._connection import Connection
from ._core._conid import Addr, ConId, Role, format_addr, parse_addr
from ._core._status import AcceptStatus, SendStatus
from ._errors import ClosedError, LinksError
from ._gate import ConnectionGate, Permit
from ._log import get_logger
from ._outbound import DEFAULT_MAX_OUTBOUND, DEFAULT_STALL_TIMEOUT, check_limits
from ._poll import PollHandler
from ._pool import Pool, SvcSender
from ._ref import Ref
from ._runtime import default_poll_handler
from ._runtime import default_timer
from ._timer import Timer
from ._sockets import listen
from ._exit import track
from ._tls import check_tls, peer_identity
from ._acceptor import Acceptor
from ._transport import wait_fd

if TYPE_CHECKING:
    from .session import Resumable

__all__ = ["Svc", "Acceptor"]  # Acceptor: links._acceptor

#: Seconds an accepted connection has to deliver its first whole message (``Svc.bind``).
DEFAULT_HANDSHAKE_TIMEOUT = 10.0


class Svc:
    """A TCP service: bind, gate, accept, pool, send and receive."""

    def __init__(
        self, sock: socket.socket, *, protocol: ProtocolFactory, callback: Callback | None, max_connections: int,
        name: str, poll_handler: PollHandler | None, timer: Timer | None, session: Resumable | None = None,
        stall_timeout: float = DEFAULT_STALL_TIMEOUT, max_outbound: int = DEFAULT_MAX_OUTBOUND,
        handshake_timeout: float | None = DEFAULT_HANDSHAKE_TIMEOUT, idle_timeout: float | None = None,
        tcp_user_timeout: float | None = None, keepalive: tuple[float, float, int] | None = None,
        tls: ssl.SSLContext | None = None, mux: bool = False, max_channels: int | None = None,
    ) -> None:  # fmt: skip
        check_limits(stall_timeout, max_outbound)
        for option, value in (("handshake_timeout", handshake_timeout), ("idle_timeout", idle_timeout)):
            if value is not None and not (isinstance(value, (int, float)) and value > 0):
                raise ValueError(f"{option} must be None or a positive number of seconds, not {value!r}")
        # Every accepted connection's limits (see links._outbound, links._liveness).
        self.limits = {"stall_timeout": stall_timeout, "max_outbound": max_outbound, "idle_timeout": idle_timeout}
        self.handshake_timeout = handshake_timeout
        self.liveness = {"tcp_user_timeout": tcp_user_timeout, "keepalive": keepalive}
        self.session = session
        self.tls = tls
        self.registry = session.registry(max_connections) if session is not None else None
        self.protocol = protocol
        self.callback = callback
        self.name = name
        self.poll_handler = poll_handler
        self.timer = timer
        self.gate = ConnectionGate(max_connections)
        host, port = sock.getsockname()[:2]
        self.local_addr: Addr = (host, port)
        self.log = get_logger("svc", svc=name)
        self._acceptor = Acceptor(self, sock)
        self._pool = Pool()
        self._leave_pool = self._left  # bound once: every pooled connection's close listener
        self._sender = SvcSender(self._pool, self.close, name)
        self._spawned_on: PollHandler | None = None
        self._admitted: Clt | None = None  # accept(): the Clt a HELLO just started
        self._closed = False
        self.joined: Callable[[Connection, Any], None] | None = None  # (con, sender) before its first read: links.aio
        # Channels (links.mux): loaded on first use, as links loads every layer.
        self.mux = importlib.import_module("links.mux._serve").MuxServing(self, **({} if max_channels is None else {"max_channels": max_channels})) if mux else None
        track(self)  # closed at interpreter exit, ending a wait in accept() (links._exit)

    @classmethod
    def bind(
        cls,
        addr: str | Addr,
        *,
        protocol: ProtocolFactory,
        callback: Callback | None = None,
        max_connections: int = 128,
        name: str = "svc",
        poll_handler: PollHandler | None = None,
        timer: Timer | None = None,
        backlog: int = 1024,
        reuse_port: bool = False,
        session: Resumable | None = None,
        stall_timeout: float = DEFAULT_STALL_TIMEOUT,
        max_outbound: int = DEFAULT_MAX_OUTBOUND,
        handshake_timeout: float | None = DEFAULT_HANDSHAKE_TIMEOUT,
        idle_timeout: float | None = None,
        tcp_user_timeout: float | None = None,
        keepalive: tuple[float, float, int] | None = None,
        tls: ssl.SSLContext | None = None,
        mux: bool = False,
        max_channels: int | None = None,
    ) -> Svc:
        """Listen on ``"host:port"`` (port 0: any free port; read it from ``local_addr``).

        Args:
            protocol: a ``Protocol`` subclass or zero-argument factory, called per connection.
            callback: sees every message of every connection (default: none).
            max_connections: the gate: connections beyond it are closed at once and logged.
            reuse_port: set ``SO_REUSEPORT`` so several processes can share the port.
            session: resumable sessions (see ``links.session``); one ``Resumable`` per service.
            stall_timeout: seconds a client may take none of what we owe it before its
                connection alone is closed as a slow consumer (``clt.slow_consumer``).
            max_outbound: bytes one connection may owe its socket (beyond one partly written
                frame) before sends to it are refused (see ``Clt.connect``).
            handshake_timeout: seconds an accepted connection has to deliver its first whole message
                (10 by default; None: no deadline), else it is closed (``svc.handshake_timeout``): a
                silent peer holds no slot. With sessions, the HELLO has the session's own.
            idle_timeout: drop a connection that sent nothing for this many seconds.
            tcp_user_timeout, keepalive: kernel-level liveness of accepted sockets.
            tls: serve TLS with this server context (``ssl.Purpose.CLIENT_AUTH``; with ``verify_mode =
                CERT_REQUIRED`` only clients with a certificate it trusts get in), each handshake on
                the poll thread within ``handshake_timeout``.
            mux: every connection carries channels (yamux streams, ``links.mux``): each stream
                a client opens joins the pool as a connection of its own (not with ``session``).
            max_channels: with ``mux``, the channels taken at once (1024 by default); streams
                beyond it are refused. ``max_connections`` still counts TCP connections.

        Returns the listening ``Svc`` (then ``accept`` on a thread, or spawn it into the poll thread).

        Raises:
            ValueError: ``addr`` is not ``"host:port"`` with a port in 0-65535, or
                ``stall_timeout`` or ``max_outbound`` cannot work (before binding).
            TypeError: ``mux`` with ``session`` (before binding).
            OSError: the address cannot be bound (in use, not local, no permission).
        """
        check_limits(stall_timeout, max_outbound)
        check_tls(tls)
        if mux and session is not None:  # the client's links.mux.connect refuses it too
            raise TypeError("Svc.bind(mux=True) does not take session= (channels over a resumable session are not built yet)")
        sock = listen(parse_addr(addr, bind=True), backlog=backlog, reuse_port=reuse_port)
        svc = cls(
            sock, protocol=protocol, callback=callback, max_connections=max_connections, name=name,
            poll_handler=poll_handler, timer=timer, session=session, stall_timeout=stall_timeout,
            max_outbound=max_outbound, handshake_timeout=handshake_timeout, idle_timeout=idle_timeout,
            tcp_user_timeout=tcp_user_timeout, keepalive=keepalive, tls=tls, mux=mux, max_channels=max_channels,
        )  # fmt: skip
        if svc.registry is not None:
            svc.registry.start_expiry(svc.timer_or_default())
        svc.log.info("svc.bound", addr=format_addr(svc.local_addr), max_connections=max_connections)
        return svc

    # -- accepting on user threads ----------------------------------------------------------

    def accept(self, timeout: float | None = None) -> Clt | None:
        """The next connection as a ``Clt`` you own (not pooled), waiting up to ``timeout`` seconds.

        A connection refused by the gate (``max_connections``) is closed and logged, and waiting
        continues. Returns the ``Clt`` (its ``on_connect`` ran), or None if none came in time.

        Raises:
            ClosedError: the service is closed (also by another thread meanwhile), or spawned.
            ValueError, TypeError: ``timeout`` is not a usable number of seconds.
        """
        self._check_usable()
        deadline = deadline_after(timeout)
        poller = select.poll()
        poller.register(self._acceptor.sock, select.POLLIN)
        if self.mux is not None:  # channels come from the poll thread, which reads their connections
            poller.register(self.mux.arrivals, select.POLLIN)
        while True:
            try:
                status, clt = self._acceptor.accept_once()
            except OSError:
                if self._closed:  # by another thread, which shut the listener down to wake us
                    raise ClosedError(f"{self.name} is closed") from None
                raise
            if clt is not None and not isinstance(clt, Clt):  # a layer's handshake, done here
                hello_by = time.monotonic() + clt.timeout
                clt.read(hello_by if deadline is None else min(deadline, hello_by))
                admitted, self._admitted = self._admitted, None
                if admitted is not None:
                    return admitted
                continue  # a resume (its Clt is already out there) or a failed handshake
            if clt is None and self.mux is not None:
                clt = self.mux.next_channel()
            if clt is not None:
                return clt
            if status is AcceptStatus.REJECTED:
                continue
            left = time_left(deadline)
            if left == 0.0:
                return None
            wait_fd(poller, left)

    def accept_into_pool(self, timeout: float | None = None) -> ConId | None:
        """Accept the next connection into the pool (``recv``, ``send`` and ``send_to`` then reach
        it); its ``con_id``, or None if none came within ``timeout``. Raises as ``accept``."""
        clt = self.accept(timeout)
        if clt is None:
            return None
        recver, sender = clt.split()
        self._join(clt._con, recver, sender)
        return clt.con_id

    # -- layers -------------------------------------------------------------------------------

    def connection_over(self, stream: Any, permit: Permit, peer: Addr) -> Clt | None:
        """A new connection over ``stream`` (a socket, or a layer's transport over one); None,
        logged, with ``stream`` closed and the permit released, if it cannot be made. With
        ``mux``, the connection carries channels instead, which join as they open: None."""
        if self.mux is not None:
            self.mux.carry(stream, permit, peer)
            return None
        try:
            clt = Clt.from_socket(
                stream, Role.ACCEPTOR, protocol=self.protocol, callback=self.callback, name=self.name,
                poll_handler=self.poll_handler, timer=self.timer, permit=permit,
                handshake_timeout=self.handshake_timeout, **self.limits,
            )  # fmt: skip
        except Exception as e:
            permit.release()
            stream.close()
            self.log.error("svc.accept_failed", peer=format_addr(peer), error=repr(e))
            return None
        self.log.info(
            "svc.accepted", con_id=str(clt.con_id), in_use=self.gate.in_use, max_connections=self.gate.max_connections,
            **peer_identity(getattr(stream, "peer_certificate", None)),
        )  # fmt: skip
        return clt

    def admit(self, stream: Any, permit: Permit, peer: Addr) -> Any:
        """TLS's handshake is done: the session's HELLO is next (that reader is returned, for
        the caller to run), or the connection over ``stream`` joins the pool."""
        if self.session is not None:
            return self.session.hello_reader(self, stream, permit, peer)
        clt = self.connection_over(stream, permit, peer)
        if clt is not None:
            self.admitted(clt)
        return None

    def timer_or_default(self) -> Timer:
        """The timer this service's connections use: the one given to ``bind``, else the default."""
        return default_timer() if self.timer is None else self.timer

    def admitted(self, clt: Clt) -> None:
        """A new connection through a layer's handshake (a new session): it joins the pool
        (spawned), or goes to the ``accept()`` waiting for it."""
        if self._spawned_on is not None:
            self._pool_spawned(clt)
        elif self.mux is not None:
            self.mux.arrived(clt)  # a channel, for accept()
        else:
            self._admitted = clt

    def poll_or_default(self) -> PollHandler:
        """The poll handler this service spawns into: the one given to ``bind``, else the default."""
        return default_poll_handler() if self.poll_handler is None else self.poll_handler

    # -- the pool ---------------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self._pool)

    def con_ids(self) -> list[ConId]:
        """The ``ConId`` of every connection in the pool now, in join order (a new list)."""
        return self._pool.con_ids()

    def send(self, msg: Any, timeout: float | None = None) -> SendStatus:
        """Send to the next pooled connection, round-robin (as ``SvcSender.send``): ``COMPLETED``, or
        ``WOULD_BLOCK`` if none joined or had room within ``timeout``. Raises ``ClosedError`` once the
        service is closed; ``ValueError``/``TypeError`` for an unusable ``timeout``."""
        return self._sender.send(msg, timeout)

    def send_many(self, msgs: Iterable[Any], timeout: float | None = None) -> SendStatus:
        """Send a batch in one write to the next pooled connection, round-robin: ``COMPLETED`` (all
        taken) or ``WOULD_BLOCK`` (none). Raises as ``send``."""
        return self._sender.send_many(msgs, timeout)

    def send_to(self, con_id: ConId, msg: Any, timeout: float | None = None) -> SendStatus:
        """Send to the pooled connection ``con_id``: ``COMPLETED`` or ``WOULD_BLOCK``. Raises
        ``BrokenError`` (reason ``unknown_connection``) if it is not in the pool, else as ``send``."""
        return self._sender.send_to(con_id, msg, timeout)

    def broadcast(self, msg: Any, timeout: float | None = None) -> int:
        """Send ``msg`` to every pooled connection, a slow one never delaying the others (as
        ``SvcSender.broadcast``); returns how many took it."""
        return self._sender.broadcast(msg, timeout)

    def recv(self, timeout: float | None = None) -> Any:
        """The next message from any pooled connection, round-robin; None if none came within ``timeout``.

        A connection that ends while being read is dropped from the pool (and logged); with none
        pooled, it waits for one to join.

        Raises:
            ClosedError: the service is closed, or its receivers were spawned.
            ValueError, TypeError: ``timeout`` is not a usable number of seconds.
        """
        self._check_usable()
        deadline = deadline_after(timeout)
        while True:
            recvers = self._pool.recvers()
            for recver in recvers:
                try:
                    msg = recver.recv(0)
                except LinksError:
                    continue  # ended: its close removed it from the pool
                if msg is not None:
                    return msg
            remaining = time_left(deadline)
            if remaining == 0.0:
                return None
            if not recvers:
                self._pool.wait_nonempty(deadline)
                continue
            poller = select.poll()
            for recver in recvers:
                fd = recver.fileno()
                if fd >= 0:  # -1: a session between connections
                    poller.register(fd, select.POLLIN)
            wait_fd(poller, remaining if remaining is None else min(remaining, 0.05))

    def open_channel(self, con_id: ConId, *, protocol: ProtocolFactory, callback: Callback | None = None, timeout: float = 1.0) -> Clt:
        """With ``mux``: open a channel towards a client, over the TCP connection of ``con_id``
        (one of its channels), as a ``Clt`` (not pooled) whose handshake completed; the client
        takes it if it serves channels (``links.mux.connect(..., protocol=...)``).

        Raises:
            ClosedError: the service is closed, or has no ``mux``. BrokenError: no such
                connection (``unknown_connection``), or the client refused the channel.
            ConnectTimeout: its handshake did not complete within ``timeout``.
        """
        if self._closed or self.mux is None:
            raise ClosedError(f"{self.name}: {'closed' if self._closed else 'not a mux=True service'}")
        return self.mux.open_channel(con_id, protocol=protocol, callback=callback, timeout=timeout)

    # -- into the poll thread -----------------------------------------------------------------

    def into_sender_with_spawned_recver(self) -> SvcSender:
        """Move the acceptor and every pooled receiver into the poll thread, and return the
        ``SvcSender`` over the live pool (closing it closes the service). Messages then reach the
        callback there; ``accept`` and ``recv`` raise ``ClosedError`` (so does this, if closed or
        spawned already)."""
        self._check_usable()
        poll = self.poll_or_default()
        self._spawned_on = poll
        for recver in self._pool.take_recvers():  # already pooled, not yet spawned
            recver._con.spawn()
        poll.add(self._acceptor)
        return self._sender

    def into_sender_with_spawned_recver_ref(self) -> Ref[SvcSender]:
        """Like ``into_sender_with_spawned_recver``, returning the pool sender as a shareable ``Ref``;
        raises ``ClosedError`` the same way."""
        return Ref(self.into_sender_with_spawned_recver())

    def _pool_spawned(self, clt: Clt) -> None:
        """Poll thread (or one reading in its stead): a freshly accepted connection (or channel) joins
        the pool, then its receiver is spawned (so an answer to its first message with ``send_to`` finds it)."""
        clt._spawn(lambda sender: self._join(clt._con, None, sender))

    def _left(self, con: Connection) -> None:  # a pooled connection was closed for good: it leaves the pool
        self._pool.remove(con.con_id)

    def _join(self, con: Connection, recver: Any, sender: Any) -> None:
        """Pool a connection; it leaves the pool when it is closed for good."""
        self._pool.add(recver, sender)
        con.add_listener(self._leave_pool)
        if self.joined is not None:
            self.joined(con, sender)
        if self._closed:
            con.close("svc_closed")

    # -- lifecycle ----------------------------------------------------------------------------

    def close(self) -> None:
        """Stop accepting and close every pooled connection (each says goodbye through its
        ``Protocol.on_close``). Idempotent; returns once the port is free; never raises.
        """
        if self._closed:
            return
        self._closed = True
        for sender in self._pool.close():
            sender.close()
        if self.mux is not None:
            self.mux.close()
        if self.registry is not None:
            self.registry.stop()
        sock = self._acceptor.sock
        poll = self._spawned_on
        if poll is not None:
            poll.remove(self._acceptor, "closed", then=sock.close)
            poll.sync()  # the poll thread closes it: return once the port is free (at once on it)
        else:
            with suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)  # wakes a thread waiting in accept()
            sock.close()
        self.log.info("svc.closed")

    def _check_usable(self) -> None:
        if self._closed:
            raise ClosedError(f"{self.name} is closed")
        if self._spawned_on is not None:
            raise ClosedError(f"{self.name}: its receivers are spawned; use the SvcSender")

    def __enter__(self) -> Svc:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Svc({self.name}@{format_addr(self.local_addr)}, {self.gate!r}, pool={len(self._pool)})"



