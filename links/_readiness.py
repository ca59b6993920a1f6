"""``fd_events(selector)``: a selector's ready ``(fd, poll bits)`` pairs, as cheaply as it allows.

The stdlib ``EpollSelector`` keeps the books (which fd is registered); the poll thread asks
its ``select.epoll`` object for events directly, skipping ``select()``'s Python per event (a
key lookup and a new tuple each): 3-7 % less server CPU per W2 round trip
(``benchmarks/RESULTS.md``, "Poll loop"). Any other selector (another platform's, a test's
subclass) is read through ``select()``, its ``EVENT_READ``/``EVENT_WRITE`` turned into the
same ``POLLIN``/``POLLOUT`` bits, so the loop tests one kind of event word.
"""

from __future__ import annotations

import select
import selectors
from collections.abc import Callable

__all__ = ["fd_events", "poll_bits", "raw_epoll"]

_READ = selectors.EVENT_READ
_WRITE = selectors.EVENT_WRITE


def raw_epoll(selector: selectors.BaseSelector) -> select.epoll | None:
    """The stdlib ``EpollSelector``'s own ``select.epoll`` object; None for any other selector."""
    epoll_type = getattr(select, "epoll", None)  # Linux only
    if epoll_type is not None and type(selector) is selectors.EpollSelector:  # not a subclass
        epoll = getattr(selector, "_selector", None)
        if isinstance(epoll, epoll_type):
            return epoll
    return None


def fd_events(selector: selectors.BaseSelector) -> Callable[..., list[tuple[int, int]]]:
    """``poll(timeout=None)``: the ready ``(fd, events)`` pairs; see the module docstring."""
    epoll = raw_epoll(selector)
    if epoll is not None:
        # Seconds, None waits for ever; at most 1,023 events a pass, the rest next pass.
        return epoll.poll
    select_keys = selector.select

    def poll(timeout: float | None = None) -> list[tuple[int, int]]:
        return [(key.fd, poll_bits(events)) for key, events in select_keys(timeout)]

    return poll


def poll_bits(events: int) -> int:  # a selector's EVENT_READ/EVENT_WRITE as poll bits
    return (select.POLLIN if events & _READ else 0) | (select.POLLOUT if events & _WRITE else 0)
