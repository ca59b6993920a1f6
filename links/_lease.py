"""``ReadLease``: a thread waiting for a reply borrows the reading of a socket from the poll
thread, and reads that reply itself (leader/follower).

Why
    A reply read by the poll thread wakes two threads: the poll thread (its epoll wait returns)
    and then the caller it hands the reply to. On a VM a wake-up costs tens of microseconds,
    about what a whole loopback round trip costs in CPU (``benchmarks/RESULTS.md``, "Where the
    time goes against pyzmq"). A caller that waits on the socket itself is woken once, by the
    kernel, with the bytes.

How
    A lendable handler (``AttachmentReader``: one TCP connection, plain or TLS) has one lease.
    Whoever reads the handler holds ``reading``: the poll thread for each readiness event (it
    only *tries* the lock, and skips the event when it is held), a borrower for its whole wait.
    A borrower first takes ``EPOLLIN`` out of the fd's interest in the kernel (one
    ``epoll_ctl`` from its own thread: the poll thread is neither woken nor waited for), then
    tries ``reading``: in that order, the poll thread never finds the reading taken while input
    is still reported to it, which level-triggered epoll would report every pass (a spin, and
    a convoy on the GIL with the borrower). It reads and dispatches as the poll thread would,
    and gives the reading back: the interest is restored, and since a modified epoll entry is
    checked again at once, bytes that came meanwhile (left in the kernel's buffer) are
    reported to the poll thread as usual. What the borrower read it dispatched entirely (TLS
    included: it reads on while the TLS layer holds decrypted bytes), so nothing waits above
    the kernel unseen.

    The poll thread keeps the books of every fd's interest (``links._registry``); for a
    lendable handler it changes the kernel's under ``lock``, as the borrower does, and takes
    ``EPOLLIN`` out again while the reading is lent (a writer asking for room meanwhile gets
    ``EPOLLOUT`` alone). Both hold ``lock`` only around one ``epoll_ctl``: neither waits for the
    other's reading.

    Errors and hang-ups reach epoll whatever the interest, on every pass until the connection
    ends. While lent, that end is the borrower's: its read sees the error, at once if it sleeps
    in ``recv``, but only once its dispatch returns if it runs a handler (which may take long).
    So the poll thread, told of one while the reading is lent, mutes the fd (``mute``): one-shot
    (``EPOLLONESHOT``), it is reported once more at most, then not at all until the reading is
    given back (or the books change the interest meanwhile), when the event, if still there,
    is reported again to the poll thread, which reads it then. Otherwise it would be told every
    pass while the borrower is busy: a spin that holds the interpreter lock from the borrower.

    Parked: a borrower that expects to come back soon (a thread in a request/response loop)
    may leave ``EPOLLIN`` out when it gives the reading back (``give_back(park=True)``). Its
    next borrow then costs no ``epoll_ctl`` at all, and a reply that comes before it is back
    wakes nobody (it waits in the kernel, as it would for a plain socket read on a user
    thread), where the poll thread, watching, would have woken for it and found the reading
    taken. The poll thread reads a parked fd again once it is given back for good
    (``unpark``): when a thread needs the poll thread to read (``links.mux`` unparks before
    waiting on a condition, when a send leaves bytes owed for the peer's window, and when its
    connection opens another channel or starts closing; asked while the reading is lent, the
    borrower gives it back unparked), or when no borrow came for a while (``look``, every
    ``PARK_LOOK`` seconds on the timer thread, ``AttachmentReader``; a timer that stops
    unparks it, ``not_looked_at``). Whether to park at all is the borrower's to say, from what
    it knows when it gives the reading back (``links.mux``: its channel is the connection's
    only one, and owes nothing). An error or a reset is reported whatever the interest, and
    read at once; an orderly close (FIN) alone is not, and is read at the next borrow or look.

    Only one borrower at a time; a second caller finds the reading lent and waits as it would
    have (the reader, the poll thread or the borrower, completes its call). A caller that comes
    while the poll thread is amid a pass over the socket waits for the end of that pass (it
    never waits on anything), then reads; had it waited for its reply instead, the poll thread
    would be reading the next reply when it came back, and so on. A borrow needs the stdlib
    epoll selector (Linux); elsewhere ``borrow()`` says no and callers wait as before.

Poll thread: ``watched``, ``lock`` held, and ``mute`` (``links._registry``). Timer thread:
``look``. Any thread: ``borrow``, ``give_back``, ``unpark`` and ``not_looked_at`` (the thread
that shuts the timer down, or the borrower whose look could not be scheduled).
"""

from __future__ import annotations

import select
import threading
from contextlib import suppress
from typing import Any

__all__ = ["ReadLease", "EPOLLIN", "PARK_LOOK"]

#: Seconds between the timer's looks at a parked fd: one with no borrow since the last look is
#: read by the poll thread again. What only the poll thread reads (a channel the peer opens, its
#: PING) waits that long at most, twice over, while a thread loops on request and response.
PARK_LOOK = 0.002

EPOLLIN: int = getattr(select, "EPOLLIN", 1)
_ONESHOT: int = getattr(select, "EPOLLONESHOT", 1 << 30)


class ReadLease:
    """Who reads one handler's fd now: the poll thread, or a thread that borrowed it."""

    __slots__ = (
        "reading", "lock", "lent", "parked", "_epoll", "_fd", "_mask", "_muted", "_wanted", "_borrows", "_looked", "_looking",
    )  # fmt: skip

    def __init__(self) -> None:
        self.reading = threading.Lock()  # held by whoever reads the handler (see above)
        self.lock = threading.Lock()  # held around any change of the fd's kernel interest
        self.lent = False
        self._epoll: Any = None  # the select.epoll the fd is in (None: not in one)
        self._fd = -1
        self._mask = 0  # the epoll bits the poll thread's books want
        self._muted = False  # the fd is one-shot while lent (see ``mute``)
        self.parked = False  # given back with EPOLLIN still out: nobody reads (see "Parked")
        self._wanted = False  # unpark() while lent: the poll thread's reading is wanted back
        self._borrows = 0  # borrows so far, and as many when the timer last looked
        self._looked = 0
        self._looking = False  # the timer looks at this lease (``look``)

    def watched(self, epoll: Any, fd: int, mask: int) -> None:
        """The poll thread's books now want ``mask`` for ``fd`` in ``epoll`` (None: not in one).
        ``lock`` held, right after the selector was told: while lent, reading is taken out again."""
        self._epoll, self._fd, self._mask = epoll, fd, mask
        self._muted = False  # the change re-arms the fd: a hang-up still there is told (once) again
        if epoll is None:
            self.parked = False
        if (self.lent or self.parked) and epoll is not None:
            with suppress(OSError, ValueError):
                epoll.modify(fd, mask & ~EPOLLIN)

    def borrow(self, timeout: float | None) -> bool:
        """Take the reading over from the poll thread; False when it cannot be had (another
        thread borrowed it, the fd is not read by epoll, or the poll thread's pass over it did
        not end within ``timeout``: None waits as long as that takes)."""
        with self.lock:
            epoll = self._epoll
            if self.lent or epoll is None or not self._mask & EPOLLIN:
                return False
            if self.parked:  # EPOLLIN is out already, and nobody reads
                self.parked = False
            else:
                # Interest first, the reading second: the poll thread is told of no new input
                # from here on, so it can never find the reading taken with input still reported
                # (it would be reported again every pass, a spin, while the borrower waits for
                # the GIL).
                try:
                    epoll.modify(self._fd, self._mask & ~EPOLLIN)
                except (OSError, ValueError):
                    return False
            self.lent = True
            self._borrows += 1
        # The poll thread may be amid a pass over this socket (it never waits in one): wait for
        # its end rather than for the reply it may be reading, or the next reply would find it
        # reading again, and so on for every call after (a caller that failed to borrow).
        if self.reading.acquire(True, -1 if timeout is None else timeout):
            return True
        with self.lock:
            self.lent = self._muted = False
            with suppress(OSError, ValueError):
                epoll.modify(self._fd, self._mask)
        return False

    def mute(self) -> bool:
        """Poll thread: epoll reported an error or a hang-up on the fd. Not lent: False (the poll
        thread reads, and its read ends the connection). Lent: True, the event is the
        borrower's; the fd turns one-shot until the reading is given back (see above)."""
        with self.lock:
            if not self.lent:
                return False  # parked too: the poll thread reads the error, and the connection ends
            if not self._muted and self._epoll is not None:
                self._muted = True
                with suppress(OSError, ValueError):  # closed meanwhile: its removal is queued
                    self._epoll.modify(self._fd, (self._mask & ~EPOLLIN) | _ONESHOT)
            return True

    def give_back(self, park: bool = False) -> bool:
        """The borrower is done: the poll thread reads again (what the kernel holds included),
        or, with ``park``, nobody until the next borrow or ``unpark`` (see "Parked"). True when
        it parked and the timer is to ``look`` at it (it did not look already)."""
        with self.lock:
            muted = self._muted
            self.lent = self._muted = False
            self.reading.release()
            epoll = self._epoll
            if epoll is None:
                return False
            wanted, self._wanted = self._wanted, False
            if park and not muted and not wanted:  # muted: a hang-up waits, for the poll thread to read
                self.parked = True
                looking, self._looking = self._looking, True
                return not looking
            try:  # not contextlib.suppress: this runs once per call, and try costs nothing
                epoll.modify(self._fd, self._mask)
            except (OSError, ValueError):  # closed meanwhile: its removal is queued
                pass
            return False

    def unpark(self) -> None:
        """The poll thread reads a parked fd again; lent, it will once given back (the borrower
        does not park it). Any thread; nothing if the poll thread reads it already."""
        with self.lock:  # the flags are read under it: give_back and borrow change both at once
            if self.lent:
                self._wanted = True
            self._unpark()

    def _unpark(self) -> None:
        if self.parked:
            self.parked = False
            with suppress(OSError, ValueError):  # closed meanwhile: its removal is queued
                self._epoll.modify(self._fd, self._mask)

    def not_looked_at(self) -> None:
        """Nothing will ``look`` at this lease (the timer stopped): parked, it is unparked."""
        with self.lock:
            self._looking = False
            self._unpark()

    def look(self) -> bool:
        """The timer's look at a parked lease: unparked if no borrow came since the last look.
        True while it is to look again (parked or lent still)."""
        with self.lock:
            if self.parked and self._borrows == self._looked:
                self._unpark()
            self._looked = self._borrows
            self._looking = self.parked or self.lent
            return self._looking
