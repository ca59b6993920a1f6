"""``TlsTransport``: a ``Transport`` whose bytes travel as TLS records.

TLS is a byte-stream layer between the socket and the framer. The TLS state machine is the
standard library's ``ssl.SSLObject`` over two memory BIOs, so it never touches the socket
(Sans-I/O): this module moves bytes between those BIOs and the socket with the same
nonblocking calls as ``Transport``, and everything above it (framers, sessions, the outbound
path, the poll thread) sees the plain byte stream it always saw.

Handshake
    ``handshake_step()`` advances the handshake as far as the bytes at hand allow and writes
    what it produced; True once it is complete. A client's connect drives it on the
    connecting thread (``handshake``, waiting, bounded by its deadline); an accepted
    connection's advances on the poll thread as bytes arrive (``links._tls_accept``), so a
    peer that stalls costs its own deadline and never the poll thread.

Writes keep ``send_some``'s contract
    The caller (``links._outbound``) offers bytes, learns how many were taken, and offers the
    rest again later, watching for room meanwhile. Here the bytes taken are encrypted at once,
    and the ciphertext the socket does not take is kept and written before anything else. So
    that the caller keeps watching while ciphertext is still held, such a call reports all but
    the last byte taken and keeps that byte as a credit: when the caller offers it again, the
    held ciphertext is written first and the byte is reported taken, without encrypting it
    twice. Nothing new is encrypted while ciphertext is held, so memory stays bounded by one
    chunk (``_CHUNK``).

Reads
    ``recv_into`` decrypts what the memory BIO holds, reading the socket only when it needs
    more. Decrypted bytes can outlast the socket's readiness (a record bigger than the space
    given), and so can an end (close_notify, or a record that does not decrypt) read with the
    last bytes: those are delivered first, and the end is kept for the next read to raise.
    ``holds_input`` tells the poll thread's reader (or a borrower) to look again without
    waiting for the socket, whose readiness may never come again (a peer that said
    close_notify may wait for ours, sending nothing more). It means what a read can produce
    without the socket: part of a record read off the socket goes into the TLS object's own
    buffer at the first look and does not count (no read loops on it until the rest comes).

Closing
    A clean close sends close_notify before the FIN. The peer's close_notify ends the
    connection (``BrokenError`` reason ``peer_closed``) at once, FIN or not; a peer that ends
    the stream without one is reported as a truncation (``tls.truncated``), never as a clean
    close. ``shutdown()`` (any thread) stops only reading here, so that the owner's ``close()``
    can still say close_notify.

Threads
    An ``SSLObject`` must not be used by two threads at once (its calls release the GIL), and
    a reader and a writer may well be two threads. One lock serializes every call into it; it
    is held only around nonblocking steps.
"""

from __future__ import annotations

import ssl
import threading
from typing import Any

from ._clock import time_left
from ._errors import BrokenError, ClosedError, ConnectTimeout, TLSError
from ._transport import DEFAULT_STALL_TIMEOUT, Transport

__all__ = ["TlsTransport", "TlsClient", "check_tls", "peer_identity"]

#: Plaintext encrypted per ``send_some`` at most: the ciphertext held is bounded by it.
_CHUNK = 256 * 1024
#: Raw bytes read from the socket per read, into a scratch buffer of the reading thread's:
#: they go into the TLS object's own buffer at once, so no connection keeps one of its own
#: (a handshaking peer costs the TLS object's state alone, not this too).
_READ = 64 * 1024
_scratch = threading.local()


def _raw_buffer() -> memoryview:
    raw = getattr(_scratch, "raw", None)
    if raw is None:
        raw = _scratch.raw = memoryview(bytearray(_READ))
    return raw


class TlsTransport(Transport):
    """A connected socket carrying TLS; see the module docstring."""

    __slots__ = ("_tls", "_incoming", "_outgoing", "_held", "_credit", "_lock", "_end", "handshaken")

    def __init__(self, sock: Any, tls: ssl.SSLObject, incoming: ssl.MemoryBIO, outgoing: ssl.MemoryBIO,
                 *, stall_timeout: float = DEFAULT_STALL_TIMEOUT) -> None:  # fmt: skip
        super().__init__(sock, stall_timeout=stall_timeout)
        self._tls = tls
        self._incoming = incoming
        self._outgoing = outgoing
        self._held = bytearray()  # ciphertext the socket has not taken yet
        self._credit = 0  # 1: the last byte reported short was taken already (see Writes)
        self._lock = threading.Lock()
        self._end: BrokenError | TLSError | None = None  # read after bytes: the next read raises it
        self.handshaken = False

    @classmethod
    def client(
        cls, sock: Any, context: ssl.SSLContext, server_name: str | None, session: ssl.SSLSession | None = None,
        **kwargs: Any,
    ) -> TlsTransport:  # fmt: skip
        """The client side over ``sock``; ``session`` (an earlier connection's) is offered for
        resumption, which the server may accept (an abbreviated handshake) or not."""
        incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
        tls = context.wrap_bio(incoming, outgoing, server_side=False, server_hostname=server_name, session=session)
        return cls(sock, tls, incoming, outgoing, **kwargs)

    @classmethod
    def server(cls, sock: Any, context: ssl.SSLContext, **kwargs: Any) -> TlsTransport:
        incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
        return cls(sock, context.wrap_bio(incoming, outgoing, server_side=True), incoming, outgoing, **kwargs)

    # -- what the layers above may ask ----------------------------------------------------

    @property
    def peer_certificate(self) -> dict[str, Any] | None:
        """The peer's verified certificate (``SSLSocket.getpeercert()``'s form), or None."""
        return self._tls.getpeercert() if self.handshaken else None

    @property
    def session(self) -> ssl.SSLSession | None:
        """The TLS session, for a later connection to resume (TLS 1.3: known once the
        server's ticket was read, after the handshake)."""
        with self._lock:
            return self._tls.session if self.handshaken else None

    @property
    def resumed(self) -> bool:
        """Whether the handshake resumed an earlier session rather than making a new one."""
        return self.handshaken and self._tls.session_reused

    @property
    def holds_input(self) -> bool:
        """Whether a read can produce something without the socket: bytes already read from it
        to decrypt or deliver, or the end that came with the last ones."""
        return self._end is not None or self._tls.pending() > 0 or self._incoming.pending > 0

    def has_unread_data(self) -> bool:
        return self.holds_input or super().has_unread_data()

    # -- handshake ------------------------------------------------------------------------

    def handshake_step(self) -> bool:
        """Advance the handshake with what the socket has; True once complete.

        Raises:
            TLSError: the handshake failed (a certificate refused, no common protocol, ...).
            BrokenError, ClosedError: the socket ended.
        """
        with self._lock:
            if self.handshaken:
                return True
            self._pull(during_handshake=True)
            try:
                self._tls.do_handshake()
                self.handshaken = True
            except ssl.SSLWantReadError:
                pass
            except ssl.SSLError as e:
                self._push()  # the alert that tells the peer why, best effort
                raise TLSError(f"TLS handshake failed: {_reason(e)}", "tls.handshake_failed") from e
            self._push()
            return self.handshaken

    def handshake(self, deadline: float | None) -> None:
        """Complete the handshake on this thread, waiting for the peer until ``deadline``.

        Raises:
            ConnectTimeout: not complete by then. And as ``handshake_step``.
        """
        while not self.handshake_step():
            left = time_left(deadline)
            if left == 0.0:
                raise ConnectTimeout("TLS handshake did not complete in time")
            self.wait_readable(left)

    # -- reading --------------------------------------------------------------------------

    def recv_into(self, view: memoryview) -> int:
        with self._lock:
            return self._receive(view)

    def _receive(self, view: memoryview) -> int:
        """Lock held: ``recv_into``. One SSLObject.read gives one record at most: read on until
        the view is full or the records at hand are done, so many small messages cost one
        pass above, as in plain."""
        if self._end is not None:
            raise self._end
        size, taken = len(view), 0
        incoming, tls = self._incoming, self._tls
        # Nothing at hand: the socket first (asking TLS would only raise "want read").
        if not (incoming.pending or tls.pending()) and not self._pull():
            return 0
        while taken < size:
            n = self._decrypt(view[taken:] if taken else view, taken)
            if n:
                taken += n
                if not (incoming.pending or tls.pending()):
                    break  # no record left at hand
            elif n is None or taken or not self._pull():
                break
        self._push()  # what reading produced (a key update's answer), if anything
        return taken

    def _decrypt(self, view: memoryview, taken: int) -> int | None:
        """Lock held: one record's plaintext into ``view``; 0 when more bytes are needed.
        An end (close_notify, a record that does not decrypt) after bytes already taken is
        None: those are delivered first, and the next read raises it (kept in ``_end``)."""
        end: BrokenError | TLSError
        try:
            # No bytes into a view with room: the ssl module's word for the peer's close_notify
            # (SSLZeroReturnError comes instead once this side has sent its own).
            if n := self._tls.read(len(view), view):
                return n
            end = BrokenError("peer closed the connection (TLS close_notify)", "peer_closed")
        except ssl.SSLWantReadError:
            return 0
        except ssl.SSLZeroReturnError:
            end = BrokenError("peer closed the connection (TLS close_notify)", "peer_closed")
        except ssl.SSLError as e:
            end = TLSError(f"TLS record refused: {_reason(e)}", "tls.bad_record")
            end.__cause__ = e
        if not taken:
            raise end
        self._end = end
        return None

    def recv_into_waiting(self, view: memoryview, timeout: float | None = None) -> int:
        if self.holds_input:
            return self.recv_into(view)
        # Sleep in the socket's own read, as the plain transport does (one syscall, not a
        # poll and a read), and outside the lock: a writer must not wait for this reader.
        raw = _raw_buffer()
        try:
            n = Transport.recv_into_waiting(self, raw, timeout)
        except BrokenError as e:
            if e.reason != "peer_closed":
                raise
            raise _truncated() from None
        if not n:
            return 0
        with self._lock:  # once for both: the bytes in, the plaintext out
            self._incoming.write(raw[:n])
            return self._receive(view)

    def _pull(self, during_handshake: bool = False) -> int:
        """Lock held: raw bytes from the socket into the incoming BIO; how many (0: none now)."""
        raw = _raw_buffer()
        try:
            n = Transport.recv_into(self, raw)
        except BrokenError as e:
            if e.reason != "peer_closed":
                raise
            if during_handshake:
                raise BrokenError("peer closed the connection during the TLS handshake", "peer_closed") from None
            raise _truncated() from None
        if n:
            self._incoming.write(raw[:n])
        return n

    # -- writing --------------------------------------------------------------------------

    def send_some(self, data: bytes | bytearray | memoryview) -> int:
        """Take ``data`` (its first ``_CHUNK`` bytes at most) as in ``Transport.send_some``;
        see the module docstring for the credit kept while ciphertext is held.

        Raises:
            TLSError: the TLS layer refused to encrypt (it failed earlier).
            BrokenError, ClosedError: the socket ended.
        """
        with self._lock:
            if self._held and not self._push():
                return 0
            if self._credit:
                self._credit = 0
                return 1
            chunk = memoryview(data)[:_CHUNK]
            if not chunk:
                return 0
            try:
                self._tls.write(chunk)
            except ssl.SSLError as e:
                raise TLSError(f"TLS write failed: {_reason(e)}", "tls.bad_record") from e
            if self._push():
                return len(chunk)
            self._credit = 1
            return len(chunk) - 1

    def send_parts(self, parts: list[bytes | bytearray | memoryview]) -> int:
        """As ``Transport.send_parts``: joined, then ``send_some`` (TLS takes one buffer)."""
        return self.send_some(b"".join(parts))

    def _push(self) -> bool:
        """Lock held: write what TLS produced, as far as the socket takes it; True when all is out."""
        if self._outgoing.pending:
            fresh = self._outgoing.read()
            if not self._held:  # the usual case: straight to the socket, kept only if refused
                sent = Transport.send_some(self, fresh)
                if sent == len(fresh):
                    return True
                fresh = fresh[sent:]
            self._held += fresh
        while self._held:
            sent = Transport.send_some(self, self._held)
            if not sent:
                return False
            del self._held[:sent]
        return True

    # -- closing --------------------------------------------------------------------------

    def shutdown(self) -> None:
        """Stop reading now (any thread; wakes a waiting reader). Writing ends in ``close``,
        after close_notify."""
        self.shutdown_read()

    def close(self) -> None:
        if self.closed:
            return
        with self._lock:
            if self.handshaken:
                try:
                    self._tls.unwrap()
                except (ssl.SSLError, ValueError):
                    pass  # sent (want read: the peer's answer is not awaited), or already broken
                try:
                    self._push()  # close_notify, best effort: nothing waits on it
                except (BrokenError, ClosedError):
                    pass
        Transport.shutdown(self)
        super().close()



def _truncated() -> BrokenError:
    """A FIN where TLS expected close_notify: a truncation, never a clean close."""
    return BrokenError("peer closed the connection without TLS close_notify", "tls.truncated")

def _reason(error: ssl.SSLError) -> str:
    return getattr(error, "verify_message", None) or error.reason or str(error)




class TlsClient:
    """A client's TLS across its connections (``reconnect=``): each new one is made with the
    same context and server name, and offers the last one's session for resumption."""

    def __init__(self, context: ssl.SSLContext, server_name: str | None) -> None:
        self.context = context
        self.server_name = server_name
        self.last: TlsTransport | None = None

    def wrap(self, sock: Any) -> TlsTransport:
        """The TLS layer for a new connection on ``sock`` (its handshake not started)."""
        session = self.last.session if self.last is not None else None
        self.last = TlsTransport.client(sock, self.context, self.server_name, session=session)
        return self.last


def check_tls(tls: ssl.SSLContext | None) -> None:
    """Refuse, before binding or dialing, a ``tls=`` that is no ``ssl.SSLContext``."""
    if tls is not None and not isinstance(tls, ssl.SSLContext):
        raise TypeError(f"tls must be an ssl.SSLContext, not {type(tls).__name__}")


def peer_identity(certificate: dict[str, Any] | None) -> dict[str, str]:
    """Log fields naming a verified peer: ``peer_subject`` (``commonName=...,...``) and
    ``peer_names`` (its subjectAltName entries, ``email:...,DNS:...``); empty without one."""
    if not certificate:
        return {}
    fields = {}
    subject = ",".join(f"{key}={value}" for rdn in certificate.get("subject", ()) for key, value in rdn)
    if subject:
        fields["peer_subject"] = subject
    names = ",".join(f"{kind}:{value}" for kind, value in certificate.get("subjectAltName", ()))
    if names:
        fields["peer_names"] = names
    return fields
