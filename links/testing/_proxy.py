"""``FaultProxy``: a TCP proxy on loopback that injects faults on command, for chaos tests.

Put it between a client and a server (``FaultProxy(svc.local_addr)``, then connect the
client to ``proxy.addr``) and it forwards bytes both ways unchanged, until a test asks for
trouble: ``pause()``, ``delay()``, ``drop()`` (FIN), ``reset()`` (RST), ``cut_after()`` (a
cut after exactly N more bytes, so mid-frame), ``chunk_size()`` (tiny writes) and
``refuse()``. ``stats()`` returns counters so a test can assert that its faults really fired.

One thread, one owner
    Every socket, the selector and all forwarding state belong to the proxy's own thread,
    which runs a ``selectors`` loop over nonblocking sockets. The public methods, called from
    any thread, post a command and wake that thread through a socketpair, then wait (bounded
    by ``command_timeout``) until it has been applied. So when ``pause()`` returns nothing
    more is forwarded, and when ``reset()`` returns the RSTs have been sent.

Forwarding, and staying out of the way
    With no fault set, a readable socket is read with ``recv_into`` into one reusable buffer
    and written straight to the other side with ``send``. What the kernel does not take goes
    to that direction's pending buffer, flushed when the destination is writable. A side is
    not read while its direction already holds ``max_buffer`` bytes, so a slow reader slows
    the writer through the kernel's flow control rather than growing memory. Both proxy
    sockets set ``TCP_NODELAY``: the proxy must not add Nagle delays of its own, and with
    ``chunk_size(1)`` each byte leaves as its own segment. A FIN from one side is passed on
    (``shutdown(SHUT_WR)``) once everything before it is forwarded; an error or RST on one
    side becomes an RST on the other, as an unreachable network would look.

The faults
    * ``pause()`` stops reading and writing on every pair (and on pairs accepted meanwhile)
      without closing anything: a silent dead peer, no FIN, no RST. Bytes pile up in the
      kernel buffers; ``resume()`` lets them through in order.
    * ``delay(s)`` holds every chunk read from now on for ``s`` seconds (on the proxy thread's
      deadline heap, never a sleep). Order is kept; a FIN follows the last held chunk.
    * ``drop()`` half-closes both sides of every pair (FIN). The proxy then reads and
      discards what either side still sends until it closes too (or ``_FIN_DRAIN_TIMEOUT``
      passes), because closing a socket with unread bytes would send an RST instead.
    * ``reset()`` closes both sides of every pair with ``SO_LINGER`` (on, 0 s): an RST.
    * ``cut_after(n, how, direction)`` arms a one-shot cut on every pair: after exactly ``n``
      more bytes have been *written* to the far side in that direction (both directions
      together for ``"both"``), the pair is cut with ``how``. Bytes already read but not yet
      written count only once written, so the count is exact. With no pair open, the cut
      arms the next accepted one instead, so a chaos loop never loses a cut while its
      client is reconnecting.
    * ``chunk_size(n)`` writes at most ``n`` bytes per ``send`` (``None``: no limit).
    * ``refuse(True)``: new connections are accepted and reset at once. This is the choice
      that gives a client a clear error: ``ConnectionResetError``, from its ``connect()`` or
      its first ``recv`` depending on timing (the kernel completes the handshake before any
      ``accept``, so a client may already count itself connected when the RST arrives).
      Merely not accepting would leave the client hanging on a full backlog, and closing the
      listener (for ``ECONNREFUSED``) would free the port for anyone to take.

Upstream connects never block: the proxy connects to the target nonblocking and waits for
writability (up to ``connect_timeout``). If that fails, the client side is reset and
``stats().upstream_failed`` counts it.

``close()`` (idempotent; also ``with FaultProxy(...) as proxy``) stops the thread and closes
the listener and every socket, as a process exit would; ``stats()`` still answers afterwards.
"""

from __future__ import annotations

import errno
import functools
import heapq
import itertools
import selectors
import socket
import struct
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .._core._conid import Addr, format_addr, parse_addr
from .._errors import ClosedError
from .._log import get_logger
from .._wakeup import WakeupSocketpair

__all__ = ["FaultProxy", "ProxyStats"]

_log = get_logger("proxy")
_READ = selectors.EVENT_READ
_WRITE = selectors.EVENT_WRITE
_LINGER_ZERO = struct.pack("ii", 1, 0)  # SO_LINGER on, 0 s: close() sends RST
_HOWS = ("fin", "rst")
_DIRECTIONS = ("both", "c2s", "s2c")

_READ_SIZE = 1 << 16  # the one reusable receive buffer
_SENDS_PER_EVENT = 1024  # bound the work per readiness event, so one pair cannot starve others
_ACCEPTS_PER_EVENT = 64
_ACCEPT_RETRY = 0.1  # after an accept error such as EMFILE, rest instead of spinning on it
_FIN_DRAIN_TIMEOUT = 2.0  # how long a FIN-closed socket is drained before it is closed anyway


@dataclass(frozen=True, slots=True)
class ProxyStats:
    """A snapshot of a ``FaultProxy``'s counters (they only grow, except ``open_pairs``).

    Attributes:
        accepted: connections taken from the listener and forwarded (not counting refused).
        refused: connections reset on arrival because ``refuse(True)`` was in force.
        upstream_failed: accepted connections whose connect to the target failed.
        fin_cuts: pairs closed with FIN by ``drop()``.
        rst_cuts: pairs closed with RST by ``reset()`` / ``drop(how="rst")``.
        after_cuts: pairs cut by ``cut_after()`` (whichever ``how``).
        bytes_c2s: bytes written to the target (client to server).
        bytes_s2c: bytes written to clients (server to client).
        sends: ``send`` calls made, both ways (``chunk_size(1)`` makes one per byte).
        open_pairs: pairs connecting or forwarding now.
    """

    accepted: int = 0
    refused: int = 0
    upstream_failed: int = 0
    fin_cuts: int = 0
    rst_cuts: int = 0
    after_cuts: int = 0
    bytes_c2s: int = 0
    bytes_s2c: int = 0
    sends: int = 0
    open_pairs: int = 0


class _Cut:
    """A one-shot ``cut_after`` armed on one pair."""

    __slots__ = ("remaining", "how", "direction")

    def __init__(self, remaining: int, how: str, direction: str) -> None:
        self.remaining = remaining
        self.how = how
        self.direction = direction

    def covers(self, flow: _Flow) -> bool:
        return self.direction == "both" or self.direction == flow.name


class _Flow:
    """One direction of a pair: bytes read from ``src`` on their way to ``dst``."""

    __slots__ = ("name", "src", "dst", "pending", "held", "held_bytes", "eof", "shut")

    def __init__(self, name: str, src: socket.socket, dst: socket.socket) -> None:
        self.name = name
        self.src = src
        self.dst = dst
        self.pending = bytearray()  # ready to write to dst
        self.held: deque[tuple[float, bytes]] = deque()  # (due, chunk) held back by delay()
        self.held_bytes = 0
        self.eof = False  # src sent FIN
        self.shut = False  # that FIN was passed on to dst

    def queued(self) -> int:
        return len(self.pending) + self.held_bytes


class _Pair:
    """An accepted client socket and its upstream socket to the target."""

    __slots__ = ("client", "server", "c2s", "s2c", "connecting", "closed", "cut", "handler")

    def __init__(self, client: socket.socket, server: socket.socket) -> None:
        self.client = client
        self.server = server
        self.c2s = _Flow("c2s", client, server)
        self.s2c = _Flow("s2c", server, client)
        self.connecting = True
        self.closed = False
        self.cut: _Cut | None = None
        self.handler: Callable[[Any, int], None] = lambda sock, mask: None


class _Command:
    __slots__ = ("fn", "args", "done", "result", "error")

    def __init__(self, fn: Callable[..., Any], args: tuple[Any, ...]) -> None:
        self.fn = fn
        self.args = args
        self.done = threading.Event()
        self.result: Any = None
        self.error: BaseException | None = None


class FaultProxy:
    """Forward TCP from ``addr`` to ``target`` on a thread of its own, injecting faults on command.

    Args:
        target: the real server, ``"host:port"`` or ``(host, port)``.
        listen: where to listen (port 0: any free port; read it from ``addr``).
        name: the thread's name, and a field of its log events.
        max_buffer: bytes one direction may hold before its source is no longer read.
        connect_timeout: seconds allowed for each upstream connect.
        command_timeout: how long a method waits for the proxy thread to apply it.
    """

    def __init__(
        self,
        target: str | Addr,
        *,
        listen: str | Addr = "127.0.0.1:0",
        name: str = "fault-proxy",
        max_buffer: int = 1 << 18,
        connect_timeout: float = 5.0,
        command_timeout: float = 5.0,
    ) -> None:
        host, port = parse_addr(target)
        family, _, _, _, sockaddr = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
        self.target: Addr = (host, port)
        self._target_family = family
        self._target_sockaddr = sockaddr
        self._max_buffer = max_buffer
        self._connect_timeout = connect_timeout
        self._command_timeout = command_timeout
        self._log = _log.bind(proxy=name)

        # Fault settings and counters: read and written on the proxy thread only.
        self._paused = False
        self._delay = 0.0
        self._chunk: int | None = None
        self._refusing = False
        self._next_cut: _Cut | None = None
        self._counts = {f: 0 for f in ProxyStats.__dataclass_fields__ if f != "open_pairs"}
        self._final: ProxyStats | None = None

        self._pairs: set[_Pair] = set()
        self._draining: set[socket.socket] = set()
        self._masks: dict[socket.socket, int] = {}
        self._timers: list[tuple[float, int, Callable[[], None]]] = []
        self._seq = itertools.count()
        self._buf = bytearray(_READ_SIZE)
        self._view = memoryview(self._buf)

        self._commands: deque[_Command] = deque()
        self._lock = threading.Lock()  # orders posting a command against shutting down
        self._stopped = False
        self._running = True

        self._listener = socket.create_server(parse_addr(listen, bind=True), backlog=128)
        try:
            self._listener.setblocking(False)
            lhost, lport = self._listener.getsockname()[:2]
            self.addr: Addr = (lhost, lport)
            self._sel = selectors.DefaultSelector()
            self._wakeup = WakeupSocketpair()
        except BaseException:
            self._listener.close()
            raise
        self._watch(self._listener, _READ, self._on_acceptable)
        self._sel.register(self._wakeup.wakeup_sock, _READ, self._on_wakeup)
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()
        self._log.info("proxy.listening", addr=format_addr(self.addr), target=format_addr(self.target))

    # -- public commands (any thread) -------------------------------------------------------

    def pause(self) -> None:
        """Stop forwarding both ways on every pair, closing nothing (a silent dead peer)."""
        self._call(self._set_paused, True)

    def resume(self) -> None:
        """Forward again, starting with whatever queued while paused."""
        self._call(self._set_paused, False)

    def delay(self, seconds: float) -> None:
        """Hold each chunk read from now on for ``seconds`` before forwarding it (0: off)."""
        if seconds < 0:
            raise ValueError(f"delay must be >= 0, got {seconds}")
        self._call(self._set, "_delay", float(seconds))

    def chunk_size(self, n: int | None) -> None:
        """Write at most ``n`` bytes per ``send`` (1: one-byte writes; None: no limit)."""
        if n is not None and n < 1:
            raise ValueError(f"chunk size must be >= 1 or None, got {n}")
        self._call(self._set, "_chunk", n)

    def refuse(self, on: bool = True) -> None:
        """Reset new connections as soon as they arrive (existing ones are untouched)."""
        self._call(self._set, "_refusing", bool(on))

    def drop(self, how: str = "fin") -> int:
        """Close every current pair on both sides, with FIN (``"fin"``) or RST (``"rst"``).

        Returns the number of pairs cut.
        """
        _check(how, _HOWS, "how")
        return self._call(self._drop_all, how)

    def reset(self) -> int:
        """Close every current pair on both sides with RST; the number of pairs cut."""
        return self.drop("rst")

    def cut_after(self, n_bytes: int, how: str = "rst", direction: str = "both") -> int:
        """Forward exactly ``n_bytes`` more in ``direction``, then cut the pair with ``how``.

        One-shot per pair. Returns the number of pairs armed; 0 means none was open, and the
        next accepted pair is armed instead.
        """
        if n_bytes < 0:
            raise ValueError(f"n_bytes must be >= 0, got {n_bytes}")
        _check(how, _HOWS, "how")
        _check(direction, _DIRECTIONS, "direction")
        return self._call(self._arm_cut, n_bytes, how, direction)

    def heal(self) -> None:
        """Clear every fault setting: resume, no delay, no chunking, accept, disarm cuts."""
        self._call(self._heal)

    def stats(self) -> ProxyStats:
        """A consistent snapshot of the counters (also after ``close()``)."""
        if self._final is not None:
            return self._final
        try:
            return self._call(self._snapshot)
        except ClosedError:
            assert self._final is not None  # set before the thread refuses commands
            return self._final

    def close(self) -> None:
        """Stop the thread and close the listener and every connection. Idempotent."""
        try:
            self._post(self._stop)
        except ClosedError:
            pass  # already stopped (or stopping): just wait for the thread below
        if threading.current_thread() is not self._thread:
            self._thread.join(self._command_timeout)

    def __enter__(self) -> FaultProxy:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"FaultProxy({format_addr(self.addr)}->{format_addr(self.target)})"

    def _post(self, fn: Callable[..., Any], *args: Any) -> _Command:
        cmd = _Command(fn, args)
        with self._lock:
            if self._stopped:
                raise ClosedError(f"{self!r} is closed")
            self._commands.append(cmd)
            self._wakeup.wake()
        return cmd

    def _call(self, fn: Callable[..., Any], *args: Any) -> Any:
        cmd = self._post(fn, *args)
        if not cmd.done.wait(self._command_timeout):
            raise TimeoutError(f"{self!r}: the proxy thread did not apply {fn.__name__} in {self._command_timeout}s")
        if cmd.error is not None:
            raise cmd.error
        return cmd.result

    # -- command bodies (proxy thread) ------------------------------------------------------

    def _set(self, attr: str, value: Any) -> None:
        self._log.debug("proxy.fault", fault=attr.lstrip("_"), value=value)
        setattr(self, attr, value)

    def _set_paused(self, paused: bool) -> None:
        self._set("_paused", paused)
        for pair in list(self._pairs):
            self._guarded(pair, self._settle, pair)

    def _drop_all(self, how: str) -> int:
        pairs = list(self._pairs)
        for pair in pairs:
            self._close_pair(pair, how)
        self._counts["fin_cuts" if how == "fin" else "rst_cuts"] += len(pairs)
        self._log.debug("proxy.dropped", how=how, pairs=len(pairs))
        return len(pairs)

    def _arm_cut(self, n_bytes: int, how: str, direction: str) -> int:
        pairs = list(self._pairs)
        self._next_cut = None if pairs else _Cut(n_bytes, how, direction)
        for pair in pairs:
            pair.cut = _Cut(n_bytes, how, direction)
            self._guarded(pair, self._settle, pair)  # n_bytes=0 fires at once
        self._log.debug("proxy.cut_armed", n_bytes=n_bytes, how=how, direction=direction, pairs=len(pairs))
        return len(pairs)

    def _heal(self) -> None:
        self._delay, self._chunk, self._refusing, self._next_cut = 0.0, None, False, None
        for pair in self._pairs:
            pair.cut = None
        self._set_paused(False)

    def _snapshot(self) -> ProxyStats:
        return ProxyStats(**self._counts, open_pairs=len(self._pairs))

    def _stop(self) -> None:
        self._running = False

    # -- the loop ---------------------------------------------------------------------------

    def _run(self) -> None:
        try:
            while self._running:
                timeout = max(0.0, self._timers[0][0] - time.monotonic()) if self._timers else None
                for key, mask in self._sel.select(timeout):
                    key.data(key.fileobj, mask)
                now = time.monotonic()
                while self._timers and self._timers[0][0] <= now:
                    heapq.heappop(self._timers)[2]()
        except BaseException:
            self._log.exception("proxy.crashed")  # a bug here; still release everything below
        finally:
            self._teardown()

    def _teardown(self) -> None:
        for pair in list(self._pairs):
            self._close_pair(pair, "close")
        for sock in list(self._draining):
            self._discard(sock)
        self._unwatch(self._listener)
        self._listener.close()
        self._final = self._snapshot()
        with self._lock:
            self._stopped = True
            leftovers = list(self._commands)
            self._commands.clear()
            self._sel.close()
            self._wakeup.close()
        for cmd in leftovers:  # posted after the stop: tell their callers, do not leave them waiting
            if cmd.fn != self._stop:
                cmd.error = ClosedError(f"{self!r} is closed")
            cmd.done.set()
        self._log.info("proxy.closed", addr=format_addr(self.addr))

    def _on_wakeup(self, sock: Any, mask: int) -> None:
        self._wakeup.drain()
        while self._commands:
            cmd = self._commands.popleft()
            try:
                cmd.result = cmd.fn(*cmd.args)
            except Exception as error:  # reported to the caller, never kills the thread
                cmd.error = error
            cmd.done.set()

    def _schedule(self, delay: float, fn: Callable[[], None]) -> None:
        heapq.heappush(self._timers, (time.monotonic() + delay, next(self._seq), fn))

    def _watch(self, sock: socket.socket, mask: int, handler: Callable[[Any, int], None]) -> None:
        """Set the events wanted for ``sock``; a selector cannot hold a socket with none."""
        old = self._masks.get(sock, 0)
        if mask == old:
            return
        if not old:
            self._sel.register(sock, mask, handler)
        elif not mask:
            self._sel.unregister(sock)
        else:
            self._sel.modify(sock, mask, handler)
        if mask:
            self._masks[sock] = mask
        else:
            del self._masks[sock]

    def _unwatch(self, sock: socket.socket) -> None:
        self._watch(sock, 0, _ignore)

    # -- accepting and connecting upstream --------------------------------------------------

    def _on_acceptable(self, sock: Any, mask: int) -> None:
        for _ in range(_ACCEPTS_PER_EVENT):
            try:
                client, _ = self._listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except ConnectionAbortedError:
                continue  # the client gave up while queued: nothing to forward
            except OSError as error:  # EMFILE and friends: stay readable, so rest instead of spinning
                self._log.warning("proxy.accept_failed", error=str(error))
                self._unwatch(self._listener)
                self._schedule(_ACCEPT_RETRY, lambda: self._watch(self._listener, _READ, self._on_acceptable))
                return
            if self._refusing:
                self._counts["refused"] += 1
                _abort(client)
                continue
            self._counts["accepted"] += 1
            try:
                server = socket.socket(self._target_family, socket.SOCK_STREAM)
            except OSError as error:  # out of fds, say: this client cannot be served
                self._counts["upstream_failed"] += 1
                self._log.warning("proxy.upstream_failed", target=format_addr(self.target), error=str(error))
                _abort(client)
                continue
            self._open_pair(client, server)

    def _open_pair(self, client: socket.socket, server: socket.socket) -> None:
        pair = _Pair(client, server)
        pair.handler = functools.partial(self._on_pair_event, pair)
        pair.cut, self._next_cut = self._next_cut, None
        self._pairs.add(pair)
        self._guarded(pair, self._connect_upstream, pair)

    def _connect_upstream(self, pair: _Pair) -> None:
        for sock in (pair.client, pair.server):
            sock.setblocking(False)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        err = pair.server.connect_ex(self._target_sockaddr)
        if err not in (0, errno.EINPROGRESS, errno.EWOULDBLOCK):
            self._upstream_failed(pair, errno.errorcode.get(err, str(err)))
            return
        self._watch(pair.server, _WRITE, pair.handler)  # writable: the connect finished, one way or the other
        self._schedule(self._connect_timeout, lambda: pair.connecting and self._upstream_failed(pair, "timeout"))

    def _upstream_failed(self, pair: _Pair, error: str) -> None:
        if pair.closed:
            return
        self._counts["upstream_failed"] += 1
        self._log.warning("proxy.upstream_failed", target=format_addr(self.target), error=error)
        self._close_pair(pair, "rst")

    # -- forwarding -------------------------------------------------------------------------

    def _on_pair_event(self, pair: _Pair, sock: socket.socket, mask: int) -> None:
        if not pair.closed:  # else it was closed earlier in this same batch of events
            self._guarded(pair, self._forward, pair, sock, mask)

    def _forward(self, pair: _Pair, sock: socket.socket, mask: int) -> None:
        if pair.connecting:  # the upstream socket became writable: the connect is over
            err = pair.server.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
            if err:
                self._upstream_failed(pair, errno.errorcode.get(err, str(err)))
                return
            pair.connecting = False
        elif not self._paused:  # a pause posted in this batch wins over events already reported
            out, inbound = (pair.c2s, pair.s2c) if sock is pair.client else (pair.s2c, pair.c2s)
            if mask & _WRITE:
                self._flush(pair, inbound)
            if mask & _READ and not pair.closed:
                self._pull(pair, out)
        self._settle(pair)

    def _guarded(self, pair: _Pair, fn: Callable[..., None], *args: Any) -> None:
        """Run ``fn``; a socket error on either side resets the pair, and nothing else."""
        try:
            fn(*args)
        except OSError:
            self._close_pair(pair, "rst")  # one side broke: the other sees an RST, as over a dead network
        except Exception:
            self._log.exception("proxy.pair_failed")
            self._close_pair(pair, "rst")

    def _pull(self, pair: _Pair, flow: _Flow) -> None:
        """One read from ``flow.src``, forwarded at once when nothing is queued ahead of it."""
        try:
            n = flow.src.recv_into(self._buf)
        except (BlockingIOError, InterruptedError):
            return
        if n == 0:
            flow.eof = True
            return
        data = self._view[:n]
        if self._delay or flow.held:  # held chunks go first, even once the delay is lifted
            flow.held.append((time.monotonic() + self._delay, bytes(data)))
            flow.held_bytes += n
            self._schedule(self._delay, functools.partial(self._release, pair, flow))
        elif flow.pending or self._chunk:
            flow.pending += data
            self._flush(pair, flow)
        else:  # the common case: straight from the read buffer to the other side
            sent = 0
            allowed = self._allowed(pair, flow, n)
            if allowed:
                try:
                    sent = flow.dst.send(data[:allowed])
                    self._spent(pair, flow, sent)
                except (BlockingIOError, InterruptedError):
                    pass
            if sent < n:
                flow.pending += data[sent:]

    def _flush(self, pair: _Pair, flow: _Flow) -> None:
        """Write pending bytes to ``flow.dst``, ``chunk_size`` per ``send``, until the kernel is full."""
        pending = flow.pending
        step = self._chunk or len(pending)
        done = 0
        view = memoryview(pending)
        try:
            for _ in range(_SENDS_PER_EVENT):
                want = self._allowed(pair, flow, min(step, len(pending) - done))
                if want <= 0:
                    break
                n = flow.dst.send(view[done : done + want])
                done += n
                self._spent(pair, flow, n)
                if n < want:
                    break  # the kernel buffer is full: wait for writability
        except (BlockingIOError, InterruptedError):
            pass
        finally:
            view.release()  # a bytearray cannot shrink while a view of it exists
            del pending[:done]

    def _release(self, pair: _Pair, flow: _Flow) -> None:
        """A delay timer: move the chunks now due to the pending buffer and forward them."""
        if pair.closed:
            return
        now = time.monotonic()
        while flow.held and flow.held[0][0] <= now:
            chunk = flow.held.popleft()[1]
            flow.held_bytes -= len(chunk)
            flow.pending += chunk
        if not self._paused:
            self._guarded(pair, self._flush, pair, flow)
        if not pair.closed:
            self._guarded(pair, self._settle, pair)

    def _allowed(self, pair: _Pair, flow: _Flow, n: int) -> int:
        cut = pair.cut
        return n if cut is None or not cut.covers(flow) else min(n, cut.remaining)

    def _spent(self, pair: _Pair, flow: _Flow, n: int) -> None:
        """Count one ``send`` of ``n`` bytes (against the cut too)."""
        counts = self._counts
        counts["sends"] += 1
        counts["bytes_" + flow.name] += n
        cut = pair.cut
        if cut is not None and cut.covers(flow):
            cut.remaining -= n

    def _settle(self, pair: _Pair) -> None:
        """After any change to a pair: fire its cut, pass FINs on, then set what to wait for."""
        if pair.closed:
            return
        if not pair.connecting and not self._paused:
            cut = pair.cut
            if cut is not None and cut.remaining <= 0:
                self._counts["after_cuts"] += 1
                self._log.debug("proxy.cut", how=cut.how, direction=cut.direction)
                self._close_pair(pair, cut.how)
                return
            for flow in (pair.c2s, pair.s2c):
                if flow.eof and not flow.shut and not flow.queued():
                    flow.dst.shutdown(socket.SHUT_WR)
                    flow.shut = True
            if pair.c2s.shut and pair.s2c.shut:
                self._close_pair(pair, "close")  # both sides finished cleanly
                return
        self._watch(pair.client, self._wanted(pair, pair.c2s, pair.s2c), pair.handler)
        self._watch(pair.server, self._wanted(pair, pair.s2c, pair.c2s), pair.handler)

    def _wanted(self, pair: _Pair, out: _Flow, inbound: _Flow) -> int:
        """The events to wait for on the socket that is ``out.src`` and ``inbound.dst``."""
        if pair.connecting:
            return _WRITE if out.src is pair.server else 0
        if self._paused:
            return 0
        mask = _WRITE if inbound.pending else 0
        cut = pair.cut
        exhausted = cut is not None and cut.covers(out) and cut.remaining <= 0
        if not out.eof and not exhausted and out.queued() < self._max_buffer:
            mask |= _READ
        return mask

    # -- closing ----------------------------------------------------------------------------

    def _close_pair(self, pair: _Pair, how: str) -> None:
        """``how``: "rst" (abort both), "fin" (half-close both, then drain), "close" (plain)."""
        if pair.closed:
            return
        pair.closed = True
        self._pairs.discard(pair)
        for sock in (pair.client, pair.server):
            self._unwatch(sock)
            if how == "rst":
                _abort(sock)
            elif how == "fin" and not (sock is pair.server and pair.connecting):
                self._drain(sock)
            else:
                sock.close()

    def _drain(self, sock: socket.socket) -> None:
        """Send FIN, then read and discard until the peer closes too: closing a socket with
        unread bytes would turn the FIN into an RST."""
        try:
            sock.shutdown(socket.SHUT_WR)
        except OSError:
            sock.close()  # already reset or never connected: nothing to drain
            return
        self._draining.add(sock)
        self._watch(sock, _READ, self._on_drainable)
        self._schedule(_FIN_DRAIN_TIMEOUT, lambda: self._discard(sock))

    def _on_drainable(self, sock: Any, mask: int) -> None:
        try:
            if sock.recv(_READ_SIZE):
                return
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            pass
        self._discard(sock)  # EOF or error: the peer is done

    def _discard(self, sock: socket.socket) -> None:
        if sock in self._draining:
            self._draining.discard(sock)
            self._unwatch(sock)
            sock.close()


def _abort(sock: socket.socket) -> None:
    """Close with RST rather than FIN."""
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_ZERO)
    except OSError:
        pass
    sock.close()


def _check(value: str, allowed: tuple[str, ...], what: str) -> None:
    if value not in allowed:
        raise ValueError(f"{what} must be one of {allowed}, got {value!r}")


def _ignore(sock: Any, mask: int) -> None:
    pass
