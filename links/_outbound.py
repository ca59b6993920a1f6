"""``Outbound``: what one attachment owes its socket, and when it takes more.

Frames go out whole
    A frame is never interleaved with another, and once its first byte is on the wire the
    rest must follow, or the peer would parse the next frame from the middle of this one. So
    whatever the socket did not take of a frame is *owed*: kept here, in order, and written
    before anything else.

Nothing waits by accident
    The write lock (``lock``) is held only for steps that cannot wait: a nonblocking
    ``send``, and queueing. Whoever leaves bytes owed asks the poll thread to finish them
    when the socket turns writable (``watch``), so a partly written frame never depends on a
    later ``send``. A sender that wants to wait (a user thread with a timeout) waits for the
    socket *outside* the lock, so another thread's ``send(timeout=0)`` never queues up
    behind it, and the poll and timer threads never wait at all (``links._threads``).

When a frame is taken (``has_room``, then ``take``)
    A frame is taken while the backlog (bytes owed) is under ``max_outbound``: the socket
    gets what it accepts and the rest is owed. At or over it, the frame is refused whole,
    before the protocol stamps it (``on_send``), and the caller gets ``WOULD_BLOCK`` or waits
    if it may. So memory per connection is bounded by ``max_outbound`` plus one frame (or one
    ``send_many`` batch). A session's frames are numbered into its replay buffer before they
    get here: they are always taken (``owe``), and the replay buffer's limits bound them.

Slow consumers
    ``stalled_since`` is when the socket last refused bytes we had to send while no byte
    went out since. A peer that takes nothing for ``stall_timeout`` seconds is a slow
    consumer: the connection's liveness check ends that connection, and only that one.
"""

from __future__ import annotations

import threading
from collections import deque
from itertools import islice
from collections.abc import Callable
from typing import Protocol

from ._transport import Transport

__all__ = ["Outbound", "DEFAULT_STALL_TIMEOUT", "DEFAULT_MAX_OUTBOUND", "check_limits"]


class Watcher(Protocol):
    """Who finishes what an ``Outbound`` owes (an attachment): see ``Outbound.__init__``."""

    def watch_writable(self) -> None: ...

    def unwatch(self) -> None: ...

#: Seconds a peer may take none of what we owe it before it is dropped as a slow consumer.
DEFAULT_STALL_TIMEOUT = 30.0
#: Bytes a connection may owe (beyond one partly written frame) before sends are refused.
DEFAULT_MAX_OUTBOUND = 256 * 1024
#: Owed pieces written together at most (one ``sendmsg``; Linux takes 1,024 buffers).
GATHER = 256
#: Seconds a sender waiting for room sleeps at most before it looks at its connection again.
ROOM_CHECK = 0.1


def check_limits(stall_timeout: float, max_outbound: int) -> None:
    """Refuse settings that cannot work, before any socket opens.

    Raises:
        ValueError: ``stall_timeout`` is not a positive number of seconds (nan included), or
            ``max_outbound`` is not a whole number of bytes >= 0.
    """
    if isinstance(stall_timeout, bool) or not (isinstance(stall_timeout, (int, float)) and stall_timeout > 0):
        raise ValueError(f"stall_timeout must be a positive number of seconds, not {stall_timeout!r}")
    if isinstance(max_outbound, bool) or not (isinstance(max_outbound, int) and max_outbound >= 0):
        raise ValueError(f"max_outbound must be a whole number of bytes >= 0, not {max_outbound!r}")


class Outbound:
    """The write side of one attachment. Every method but ``wait_room`` needs ``lock`` held."""

    __slots__ = ("transport", "lock", "max_outbound", "owed_bytes", "stalled_since", "backlog", "_clock", "_owner", "_watching")

    def __init__(
        self,
        transport: Transport,
        *,
        lock: threading.Lock,
        clock: Callable[[], float],
        owner: Watcher,
        max_outbound: int = DEFAULT_MAX_OUTBOUND,
    ) -> None:
        self.transport = transport
        self.lock = lock  # the connection's write lock: one for all its attachments
        self.max_outbound = max_outbound
        self.owed_bytes = 0
        self.stalled_since: float | None = None
        # What is owed, in order; empty: nothing. A deque from the first bytes owed on (most
        # connections never owe any, and an empty deque costs 0.6 KB).
        self.backlog: deque[memoryview] | tuple[()] = ()
        self._clock = clock
        # Once per backlog: ``owner.watch_writable()`` (lock released) asks the poll thread to
        # call ``on_writable`` when there is room and starts the stall check; ``owner.unwatch()``
        # (lock held) ends that check once nothing is owed. (The owner, not two bound methods
        # of it: those would cost 0.1 KB per connection.)
        self._owner = owner
        self._watching = False

    def __repr__(self) -> str:
        return f"Outbound(owed={self.owed_bytes})"

    def has_room(self) -> bool:
        """Whether a frame would be taken now (writing what is owed first, as far as it goes).

        Raises:
            BrokenError, ClosedError: the socket ended (see ``Transport``).
        """
        return not self.backlog or self.flush() or self.owed_bytes < self.max_outbound

    def take(self, data: bytes | bytearray | memoryview) -> None:
        """Send ``data`` after what is owed; what the socket does not take now is owed.

        Raises:
            BrokenError, ClosedError: the socket ended.
        """
        if self.backlog:
            self._owe(memoryview(data))
            return
        sent = self.transport.send_some(data)
        if sent != len(data):
            self.sent_part(data, sent)

    def take_parts(self, parts: list[bytes | bytearray | memoryview]) -> None:
        """``take`` of ``parts`` one after another, written in one call (``send_parts``), uncopied.

        Raises:
            BrokenError, ClosedError: the socket ended.
        """
        if self.backlog:
            for part in parts:
                self._owe(memoryview(part))
            return
        sent = self.transport.send_parts(parts)
        for i, part in enumerate(parts):
            size = len(part)
            if sent < size:
                self.sent_part(part, sent)
                for rest in parts[i + 1 :]:
                    self._owe(memoryview(rest))
                return
            sent -= size

    def sent_part(self, data: bytes | bytearray | memoryview, sent: int) -> None:
        """The socket took ``sent`` bytes of ``data`` (fewer than all): owe the rest."""
        if sent:
            self.stalled_since = None
        self._stuck()
        self._owe(memoryview(data)[sent:])

    def owe(self, data: bytes | bytearray | memoryview) -> None:
        """Take ``data`` whatever the backlog (already committed: a session's numbered
        frames, its acks, a replay) and write what the socket takes now."""
        if data:
            self._owe(memoryview(data))
            self.flush()  # after the rest: what was owed before goes first

    def defer(self, data: bytes | bytearray | memoryview) -> bool:
        """Owe ``data`` after what is owed without writing it now (a later ``flush`` writes it
        with the rest); the caller then asks for a watch (``needs_watch``). False, nothing
        taken, when the backlog is at ``max_outbound``."""
        if self.owed_bytes >= self.max_outbound:
            return False
        self._owe(memoryview(data))
        return True

    def flush(self) -> bool:
        """Write what is owed, as far as the socket takes it; True when nothing is owed. Many
        owed pieces (deferred frames) go out in one gathered write, up to ``GATHER`` at a time.

        Raises:
            BrokenError, ClosedError: the socket ended.
        """
        owed = self.backlog
        transport = self.transport
        while owed:
            if len(owed) == 1:
                parts: list[memoryview] = [owed[0]]
                sent = transport.send_some(parts[0])
            else:
                parts = list(islice(owed, GATHER))
                sent = transport.send_parts(parts)  # type: ignore[arg-type]
            if sent:
                self.owed_bytes -= sent
                self.stalled_since = None
            for head in parts:
                if sent < len(head):
                    if sent:
                        owed[0] = head[sent:]
                    self._stuck()
                    return False
                sent -= len(head)
                owed.popleft()  # type: ignore[union-attr]
        return True

    def needs_watch(self) -> bool:
        """Whether the caller, about to release the lock, must ask the poll thread to finish
        what is owed (marked as asked for: once per backlog)."""
        if self._watching or not self.backlog:
            return False
        self._watching = True
        return True

    def handed_over(self) -> bool:
        """The poll handler watching for room changed: whether the new one must be asked to
        finish what is owed (the old one's watch is gone with it)."""
        self._watching = False
        return bool(self.backlog)

    @property
    def watching(self) -> bool:
        """Whether the poll thread was asked to finish what is owed and has not found it all
        written yet. The poll thread may read it without the lock: it is the one that ends a
        watch (``on_writable``)."""
        return self._watching

    def on_writable(self) -> bool:
        """Poll thread, socket writable: write what is owed; True while more remains."""
        if self.flush():
            self._owner.unwatch()
            self._watching = False
            return False
        return True

    def release(self) -> None:
        """Release ``lock``, asking the poll thread to finish what is owed if needed."""
        watch = self.needs_watch()
        self.lock.release()
        if watch:
            self._owner.watch_writable()

    def wait_room(self, timeout: float | None) -> bool:
        """Wait (without the lock) until the socket may take bytes, up to ``timeout``, in
        slices of ``ROOM_CHECK``: a close that lingers stops only reading, which wakes no
        writer, so the waiting sender looks again that often and sees it closed."""
        return self.transport.wait_writable(ROOM_CHECK if timeout is None else min(timeout, ROOM_CHECK))

    def stalled_for(self) -> float:
        """Seconds since the peer last took a byte we had to send (0.0: not stalled)."""
        since = self.stalled_since
        return 0.0 if since is None else self._clock() - since

    def _owe(self, view: memoryview) -> None:
        backlog = self.backlog
        if isinstance(backlog, tuple):
            backlog = self.backlog = deque()
        backlog.append(view)
        self.owed_bytes += len(view)

    def _stuck(self) -> None:
        if self.stalled_since is None:
            self.stalled_since = self._clock()
