"""``MuxServing``: a service whose TCP connections carry channels (``Svc.bind(..., mux=True)``).

Every accepted TCP connection (after TLS, if the service speaks it) carries one yamux session;
its receiver is spawned into the poll thread at once, as the one reader of its socket. Every
stream a client opens there becomes a channel that joins the service exactly as an accepted
connection does: it takes a permit from the channel gate (``max_channels``; a stream beyond
it is refused with RST and ``svc.rejected`` is logged with ``channel``), gets a fresh protocol
instance, joins the pool (round-robin ``send``, ``send_to``, ``broadcast``) and has its
receiver spawned. ``max_connections`` still counts TCP connections, and ``handshake_timeout``
bounds each: a TCP connection that sends no frame, and a channel that sends no whole
message, within it is closed.
"""

from __future__ import annotations

import threading
from collections import deque
from functools import partial
from typing import TYPE_CHECKING, Any

from .._clt import Clt
from .._core._conid import Addr, ConId, Role, format_addr
from .._errors import BrokenError
from .._gate import ConnectionGate, Permit
from .._tls import peer_identity
from .._wakeup import WakeupSocketpair
from ._carrier import DEFAULT_KEEPALIVE, finish_carrying
from ._channel import channel_over, open_channel
from ._driver import MuxDriver
from ._engine import DEFAULT_CHUNK, DEFAULT_MAX_STREAMS, DEFAULT_WINDOW
from ._link import MuxLink, MuxSettings
from ._stream import StreamTransport

if TYPE_CHECKING:
    from .._svc import Svc

__all__ = ["MuxServing", "DEFAULT_MAX_CHANNELS"]

#: Channels a service takes at once, across all its TCP connections (``Svc.bind(max_channels=)``).
DEFAULT_MAX_CHANNELS = 1024


class MuxServing:
    """The channels of one ``Svc``; see the module docstring."""

    def __init__(self, svc: Svc, *, max_channels: int = DEFAULT_MAX_CHANNELS, window: int = DEFAULT_WINDOW) -> None:
        self.svc = svc
        self.settings = MuxSettings(window=window, max_streams=DEFAULT_MAX_STREAMS, chunk=DEFAULT_CHUNK, keepalive=DEFAULT_KEEPALIVE)
        self.gate = ConnectionGate(max_channels)
        self._lock = threading.Lock()
        self._carriers: dict[int, Any] = {}  # id -> the sender of each TCP connection carrying channels
        self._drivers: dict[tuple[Any, Any], MuxDriver] = {}  # (local, peer) address -> its yamux session
        self._runtime = {"timer": svc.timer, "poll_handler": svc.poll_handler}
        self._arrived: deque[Clt] = deque()  # channels for Svc.accept(), until it takes them
        self._wakeup: WakeupSocketpair | None = None

    @property
    def arrivals(self) -> WakeupSocketpair:
        """Readable while channels wait for ``Svc.accept()`` (made on first use)."""
        with self._lock:
            if self._wakeup is None:
                self._wakeup = WakeupSocketpair()
            return self._wakeup

    def arrived(self, clt: Clt) -> None:
        """A channel opened while the service is not spawned: ``Svc.accept()`` takes it."""
        with self._lock:
            if not self.svc._closed:
                self._arrived.append(clt)
                if self._wakeup is None:
                    self._wakeup = WakeupSocketpair()
                self._wakeup.wake()
                return
        clt.close()  # the service closed meanwhile

    def next_channel(self) -> Clt | None:
        """The oldest channel ``Svc.accept()`` has not taken yet, or None."""
        with self._lock:
            if self._wakeup is not None:
                self._wakeup.drain()
            if not self._arrived:
                return None
            clt = self._arrived.popleft()
            if self._arrived and self._wakeup is not None:
                self._wakeup.wake()  # more wait: stay readable
            return clt

    def carry(self, stream: Any, permit: Permit, peer: Addr) -> None:
        """An accepted TCP connection: its yamux session starts, read by the poll thread."""
        svc = self.svc
        try:
            clt = Clt.from_socket(
                stream, Role.ACCEPTOR, protocol=self._link, name=svc.name, poll_handler=svc.poll_handler,
                timer=svc.timer, permit=permit, handshake_timeout=svc.handshake_timeout, **svc.limits,
            )  # fmt: skip
        except Exception as e:
            permit.release()
            stream.close()
            svc.log.error("svc.accept_failed", peer=format_addr(peer), error=repr(e))
            return
        svc.log.info(
            "svc.accepted", con_id=str(clt.con_id), in_use=svc.gate.in_use, max_connections=svc.gate.max_connections,
            carries="channels", **peer_identity(getattr(stream, "peer_certificate", None)),
        )  # fmt: skip
        con = clt._con
        sender = clt.into_sender_with_spawned_recver()
        with self._lock:
            # After close() took its snapshot (a TLS handshake that ended late): closed here,
            # or it would carry channels for a service that is gone.
            late = self.svc._closed
            if not late:
                self._carriers[id(con)] = sender
        con.add_listener(self._gone)
        if late:
            sender.close()

    def _gone(self, con: Any) -> None:
        with self._lock:
            self._carriers.pop(id(con), None)

    def _link(self) -> MuxLink:
        return MuxLink(False, self.settings, self._opened, self._session)

    def _session(self, driver: MuxDriver | None, gone: MuxDriver | None = None) -> None:
        with self._lock:
            if driver is not None:
                self._drivers[(driver.local, driver.peer)] = driver
            if gone is not None and self._drivers.get((gone.local, gone.peer)) is gone:
                del self._drivers[(gone.local, gone.peer)]

    def open_channel(self, con_id: ConId, *, protocol: Any, callback: Any, timeout: float, **limits: Any) -> Clt:
        """A channel towards the client of ``con_id`` (any channel of it, or its TCP
        connection), over the same TCP connection.

        Raises:
            BrokenError: no connection of this service has those addresses (any more).
        """
        with self._lock:
            driver = self._drivers.get((con_id.local, con_id.peer))
        if driver is None or driver.error is not None:
            raise BrokenError(f"{con_id}: no connection carrying channels here", "unknown_connection")
        return open_channel(
            driver, name=self.svc.name, protocol=protocol, callback=callback, timeout=timeout, runtime=self._runtime,
            limits={**self.svc.limits, **limits},
        )  # fmt: skip

    def _opened(self, stream: StreamTransport) -> None:
        """Poll thread, or a thread reading in its stead (``links._lease``): a client opened
        ``stream``: a channel joins the service, or is refused."""
        svc = self.svc
        permit = self.gate.try_acquire()
        if permit is None:
            stream.abort()
            stream.close()
            svc.log.warning("svc.rejected", channel=stream.stream_id, max_channels=self.gate.max_connections)
            return
        clt = channel_over(
            stream, name=svc.name, protocol=svc.protocol, callback=svc.callback, permit=permit,
            handshake_timeout=svc.handshake_timeout, runtime=self._runtime, limits=svc.limits,
        )  # fmt: skip
        if clt is not None:
            svc.admitted(clt)

    def close(self) -> None:
        """Finish every TCP connection carrying channels (the pooled channels were closed first):
        each closes once its channels have delivered what they owe (``finish_carrying``), as a
        closed TCP connection writes what it owes first."""
        with self._lock:
            carriers, self._carriers = list(self._carriers.values()), {}
            waiting, self._arrived = list(self._arrived), deque()
            wakeup, self._wakeup = self._wakeup, None
            drivers = dict(self._drivers)
        for clt in waiting:
            clt.close()
        for sender in carriers:
            driver = drivers.get((sender.con_id.local, sender.con_id.peer))
            finish_carrying(sender, driver, partial(_close, sender, driver))
        if wakeup is not None:
            wakeup.close()


def _close(sender: Any, driver: MuxDriver | None) -> None:
    """Close a TCP connection carrying channels, GO_AWAY first: every channel on it ends."""
    if driver is not None:
        driver.go_away()
    sender.close()
