"""``Registry``: the poll thread's books: each handler it services, what for, and how its events find it.

A handler is registered for reading (``PollHandler.add``), for writing
(``PollHandler.want_writable``) or both; the interest is kept here per handler and given to
the selector, so that both always agree. Events come back by fd: ``by_fd`` is the loop's
lookup. A handler registered during a pass waits in ``fresh`` and joins the lookup before the
next poll (``join_fresh``): registered on the fd number of one removed earlier in the same
pass, it must not get the removed one's event of that pass. A handler registered for writing
alone (``write_only``) is never read by the poll thread: any event on its fd is for its writer.

A *virtual* handler (``virtual = True``: a multiplexed channel, see ``links._ready``) has no fd:
its interest is kept here like any other, but it never reaches the selector, nor the lookup.

Reading can be *paused* (``pause_reading``: a consumer's queue is full, links.aio): the
handler stays registered (a shutdown still closes it, its writer still writes) but loses its
read interest, so the kernel's buffer fills and TCP flow control stops the peer (a channel's
stream stops granting window); ``resume_reading`` gives it back. A paused handler with no
writer left keeps interest 0 and no selector registration.

Poll thread only, like the selector. One exception: a handler that can lend its reading to a
waiting caller (``lease``: ``links._lease``) has its kernel interest changed under its lease's
lock, and without ``EPOLLIN`` while the reading is lent.
"""

from __future__ import annotations

import selectors
from typing import Any

from ._readiness import poll_bits, raw_epoll

__all__ = ["Registry", "is_virtual"]

_READ = selectors.EVENT_READ
_WRITE = selectors.EVENT_WRITE


class Registry:
    """The registered handlers, each one's selector events, and the fd lookup (see above).

    ``add_reading``, ``add_writing`` and ``drop_writing`` raise what the selector raises
    (``KeyError``, ``ValueError``, ``OSError``: the fd is closed, or its number is still
    registered to another handler); the caller then fails the handler.
    """

    def __init__(self, selector: selectors.BaseSelector, wakeup: Any) -> None:
        self.selector = selector
        selector.register(wakeup, _READ, None)
        self.handlers: dict[int, Any] = {}  # id(handler) -> handler
        self.interest: dict[int, int] = {}  # id(handler) -> its selector events
        self.write_only: set[int] = set()  # fds registered for writing alone: never read here
        # fd -> handler, the loop's lookup: an fd whose handler was removed earlier in the
        # same pass is no longer here and is skipped. The wakeup fd maps to the wakeup.
        self.by_fd: dict[int, Any] = {wakeup.fileno(): wakeup}
        self.fresh: dict[int, Any] = {}  # registered since the last poll (see above)
        self.paused: set[int] = set()  # id(handler) of those whose reading is paused
        self.epoll = raw_epoll(selector)  # what a lease changes directly (None: no lending)

    def add_reading(self, handler: Any) -> None:
        """Register ``handler`` for reading (as well as writing, if it was registered for that)."""
        ident = id(handler)  # one int for both maps' keys (an id is a 32-byte int of its own)
        self.paused.discard(ident)
        events = self.interest.get(ident, 0) | _READ
        if is_virtual(handler):
            fd = None
        elif events == _READ:
            fd = self._set(handler, _READ, True).fd
        else:  # registered for writing already: now read too
            fd = self._set(handler, events).fd
        self.handlers[ident] = handler
        self.interest[ident] = events
        if fd is not None:
            self.write_only.discard(fd)
            self.fresh[fd] = handler

    def add_writing(self, handler: Any) -> bool:
        """Register ``handler`` for writing too; False if it was already."""
        ident = id(handler)
        events = self.interest.get(ident, 0)
        if events & _WRITE:
            return False
        if is_virtual(handler):
            fd = None
        elif events:
            fd = self._set(handler, events | _WRITE).fd
        else:
            fd = self._set(handler, _WRITE, True).fd
        self.handlers[ident] = handler
        self.interest[ident] = events | _WRITE
        if fd is not None and not events:
            self.write_only.add(fd)
            self.fresh[fd] = handler
        return True

    def drop_writing(self, handler: Any) -> None:
        """Its writer owes nothing more: keep it for reading, or forget it if it was here only
        to write (quietly: a writer alone is never announced)."""
        ident = id(handler)
        events = self.interest.get(ident, 0)
        if not events & _WRITE:
            return
        if events == _WRITE:
            if ident in self.paused:  # paused, not gone: registered, with no interest for now
                self.interest[ident] = 0
                self._forget_fd(handler)
            else:
                self.remove(handler)
            return
        self.interest[ident] = _READ
        if not is_virtual(handler):
            self._set(handler, _READ)

    def remove(self, handler: Any) -> int:
        """Forget ``handler``; the selector events it had (0: it was not registered).
        A paused reader counts as reading."""
        if self.handlers.pop(id(handler), None) is None:
            return 0
        events = self.interest.pop(id(handler), 0)
        if id(handler) in self.paused:
            self.paused.discard(id(handler))
            events |= _READ
        if not is_virtual(handler):
            self._forget_fd(handler)
        return events

    def pause_reading(self, handler: Any) -> None:
        """Stop reading ``handler`` (registered for reading, not paused; else nothing), keeping
        it registered and its writer serviced."""
        ident = id(handler)
        events = self.interest.get(ident, 0)
        if not events & _READ:
            return
        self.paused.add(ident)
        self.interest[ident] = events & ~_READ
        if is_virtual(handler):
            return
        if events & _WRITE:  # its writer alone now: any event is for it (see write_only)
            self.write_only.add(self._set(handler, _WRITE).fd)
        else:
            self._forget_fd(handler)

    def resume_reading(self, handler: Any) -> bool:
        """Read ``handler`` again after ``pause_reading``; False if it was not paused (removed
        meanwhile, say)."""
        ident = id(handler)
        if ident not in self.paused:
            return False
        self.paused.discard(ident)
        events = self.interest.get(ident, 0)
        self.interest[ident] = events | _READ
        if not is_virtual(handler):
            if events:
                fd = self._set(handler, events | _READ).fd
                self.write_only.discard(fd)
            else:
                self.fresh[self._set(handler, _READ, True).fd] = handler
        return True

    def pause(self, handler: Any, paused: bool, marks: Any) -> None:
        """``pause_reading`` or ``resume_reading`` (``PollHandler.pause_reading``); a resumed
        virtual handler is marked readable in ``marks``: what it holds would announce nothing.
        An fd closed meanwhile is left alone: its removal is queued."""
        try:
            if paused:
                self.pause_reading(handler)
            elif self.resume_reading(handler) and is_virtual(handler):
                marks.mark(handler, _READ)
        except (KeyError, ValueError, OSError):
            pass

    def hung_up(self, handler: Any) -> bool:
        """epoll reported an error or a hang-up on a reader's fd (on every pass, whatever the
        interest, until it is unregistered): True if it is not to be read now. Closed by another
        thread, its removal on its way: its reading is paused. Lent to a waiting caller: the
        borrower's read sees it, and the fd is muted until it is given back (``links._lease``)."""
        if handler.closed:
            self.pause_reading(handler)
            return True
        lease = getattr(handler, "lease", None)
        return lease is not None and lease.mute()

    def _set(self, handler: Any, events: int, new: bool = False) -> selectors.SelectorKey:
        """Register ``handler`` for ``events`` (``new``), or change its events, with the selector;
        under its lease's lock, the lease told (see the module docstring)."""
        change = self.selector.register if new else self.selector.modify
        lease = getattr(handler, "lease", None)
        if lease is None:
            return change(handler, events, handler)
        with lease.lock:
            key = change(handler, events, handler)
            lease.watched(self.epoll, key.fd, poll_bits(events))
        return key

    def _unset(self, handler: Any) -> selectors.SelectorKey:
        """Unregister ``handler`` from the selector (its lease told: nothing to lend any more)."""
        lease = getattr(handler, "lease", None)
        if lease is None:
            return self.selector.unregister(handler)
        with lease.lock:
            lease.watched(None, -1, 0)
            return self.selector.unregister(handler)

    def _forget_fd(self, handler: Any) -> None:
        """Take ``handler``'s fd out of the selector and the lookup (if it is there)."""
        try:
            key = self._unset(handler)
        except (KeyError, ValueError):
            return  # never made it into the selector
        self.write_only.discard(key.fd)
        if self.fresh.pop(key.fd, None) is None:
            self.by_fd.pop(key.fd, None)

    def join_fresh(self) -> None:
        """Before a poll: what was registered since the last one joins the lookup."""
        self.by_fd.update(self.fresh)
        self.fresh.clear()


def is_virtual(handler: Any) -> bool:
    """Whether ``handler`` has no fd: its readiness comes through ``PollHandler.ready()``."""
    return bool(getattr(handler, "virtual", False))
