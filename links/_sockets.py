"""Making sockets: ``dial`` (a client's, with retries and a real timeout), ``listen`` and
``accept`` (a service's), ``set_liveness`` (kernel-level dead-peer detection).

Each returns a plain ``socket.socket`` tuned for messages (``TCP_NODELAY``); a ``Transport``
then takes it over. Like ``Transport``, these are where the OS's errors are met: ``dial``
turns them into ``ConnectTimeout``; ``accept`` skips the errors that concern only the one
pending connection and reports the rest (out of fds or buffers) to its caller.
"""

from __future__ import annotations

import errno
import select
import socket
import time

from ._core._conid import Addr
from ._errors import ConnectTimeout
from ._transport import wait_fd

__all__ = ["dial", "start_dial", "connect_error", "resolve", "listen", "accept", "set_liveness"]

_POLLOUT = select.POLLOUT | select.POLLHUP | select.POLLERR


def _tune(sock: socket.socket) -> None:
    # Messages are small and latency matters more than packet count: never let Nagle hold a
    # frame back waiting for an ACK (a classic 40 ms stall with request/response traffic).
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


def set_liveness(sock: socket.socket, *, tcp_user_timeout: float | None = None, keepalive: tuple[float, float, int] | None = None) -> None:
    """Kernel-level dead-peer detection, for users who want it beside heartbeats.

    Args:
        tcp_user_timeout: seconds unacknowledged data may wait before the kernel resets the
            connection (``TCP_USER_TIMEOUT``; Linux).
        keepalive: ``(idle, interval, count)``: probe after ``idle`` silent seconds, every
            ``interval`` seconds, and give up after ``count`` unanswered probes.
    """
    if tcp_user_timeout is not None:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT, int(tcp_user_timeout * 1000))
    if keepalive is not None:
        idle, interval, count = keepalive
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE, max(1, int(idle)))
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL, max(1, int(interval)))
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT, int(count))


def dial(addr: Addr, *, timeout: float, retry_after: float | None) -> socket.socket:
    """Connect to ``addr``, retrying refused attempts every ``retry_after`` until ``timeout``
    (``retry_after`` None: one attempt, as a reconnect makes; its backoff is the retry).

    The connect itself is nonblocking and waited on with ``poll``, so the timeout is honoured
    even for a host that never answers (no kernel SYN-retry stall).

    Raises:
        ConnectTimeout: no attempt succeeded in time; the last error is chained.
    """
    deadline = time.monotonic() + timeout
    last: BaseException | None = None
    infos = socket.getaddrinfo(addr[0], addr[1], type=socket.SOCK_STREAM)
    family, _, proto, _, sockaddr = infos[0]
    while True:
        sock = socket.socket(family, socket.SOCK_STREAM, proto)
        sock.setblocking(False)
        err = sock.connect_ex(sockaddr)
        if err in (errno.EINPROGRESS, errno.EWOULDBLOCK, errno.EAGAIN):
            poller = select.poll()
            poller.register(sock, _POLLOUT)
            if wait_fd(poller, max(deadline - time.monotonic(), 0.0)):
                err = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
            else:
                err = errno.ETIMEDOUT
        if err == 0:
            _tune(sock)
            return sock
        sock.close()
        last = OSError(err, errno.errorcode.get(err, str(err)))
        remaining = deadline - time.monotonic()
        if remaining <= 0 or retry_after is None:
            raise ConnectTimeout(f"could not connect to {addr[0]}:{addr[1]} within {timeout}s: {last}") from last
        # The retry pause is the point here (a server that is still starting), not a sync.
        time.sleep(min(retry_after, remaining))


def resolve(addr: Addr) -> tuple[int, int, tuple]:
    """``(family, proto, sockaddr)`` of ``addr``, looked up once: a redial starts from it and
    never waits on a name lookup on the timer thread."""
    family, _, proto, _, sockaddr = socket.getaddrinfo(addr[0], addr[1], type=socket.SOCK_STREAM)[0]
    return family, proto, sockaddr


def start_dial(family: int, proto: int, sockaddr: tuple) -> socket.socket:
    """A nonblocking socket whose connect to ``sockaddr`` is under way (never waits): the
    caller learns the outcome once it is writable (``connect_error``).

    Raises:
        OSError: the connect failed at once (no route, no fds).
    """
    sock = socket.socket(family, socket.SOCK_STREAM, proto)
    sock.setblocking(False)
    err = sock.connect_ex(sockaddr)
    if err not in (0, errno.EINPROGRESS, errno.EWOULDBLOCK, errno.EAGAIN):
        sock.close()
        raise OSError(err, errno.errorcode.get(err, str(err)))
    return sock


def connect_error(sock: socket.socket) -> OSError | None:
    """Once ``start_dial``'s socket is writable: None if it is connected (and then tuned),
    else why not."""
    err = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
    if err:
        return OSError(err, errno.errorcode.get(err, str(err)))
    _tune(sock)
    return None


def listen(addr: Addr, *, backlog: int = 1024, reuse_port: bool = False) -> socket.socket:
    """A nonblocking listening socket bound to ``addr`` (port 0 picks a free port)."""
    infos = socket.getaddrinfo(addr[0] or None, addr[1], type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    family, _, proto, _, sockaddr = infos[0]
    sock = socket.socket(family, socket.SOCK_STREAM, proto)
    try:
        # SO_REUSEADDR lets a restarted server bind while old connections sit in TIME_WAIT.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if reuse_port:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind(sockaddr)
        sock.listen(backlog)
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock


# accept() errors that concern only the one pending connection (it was reset or aborted
# before we got to it): skip it and carry on. Anything else (EMFILE, ENFILE, ENOBUFS: the
# process or system is out of resources) is reported to the caller, which logs it; the
# listener stays registered and is retried on the next readiness event.
_ACCEPT_SKIP = {errno.ECONNABORTED, errno.EPROTO, errno.EPERM, errno.ENETDOWN, errno.EHOSTUNREACH}


def accept(listener: socket.socket) -> tuple[socket.socket, Addr] | None:
    """One pending connection, or None when there is none (or it died while queued).

    Raises:
        OSError: the process or system is out of a resource (fds, buffers).
    """
    try:
        sock, peer = listener.accept()
    except (BlockingIOError, InterruptedError):
        return None
    except OSError as e:
        if e.errno in _ACCEPT_SKIP:
            return None
        raise
    sock.setblocking(False)  # a session HELLO may be read from it before a Transport takes it over
    _tune(sock)
    return sock, (peer[0], peer[1])
