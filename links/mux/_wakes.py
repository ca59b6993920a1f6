"""What a read off the physical connection brought its channels, told to whoever waits for it.

The driver (``links.mux._driver``) routes a read's frames under its lock and collects the
streams they touched; ``wake_read`` then, still under the lock, wakes the threads waiting on
each and sorts out the poll thread's part: a channel it reads with input only is read right
after the lock (``read_now``: its reply goes out in the same pass), any other readiness is a
mark (``PollHandler.ready``), posted as one command per poll thread from a borrowing reader's
thread (``post_marks``: one wake-up of that thread per read, not one per channel).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ._stream import StreamTransport

__all__ = ["post_marks", "read_now", "wake_read"]


def wake_read(woken: dict[StreamTransport, bool]) -> tuple[list[tuple[Any, Any, bool, bool]] | None, list[Any] | None]:
    """Lock held: tell each stream of a read its waiters and, if the poll thread reads its
    channel, that thread. On the poll thread, a channel with input only is returned in the
    second list, to be read at once once the lock is released (``PollHandler.read_now``: its
    reply goes out in this pass, not the next), anything else marked here. On a thread that
    borrowed the reading (``StreamTransport._borrow``), returned in the first, to be posted
    as one command per poll thread after the lock (one wake-up of it per read, not one per
    channel). A channel read on a user thread is not marked readable: the poll thread would
    only drop the mark."""
    posts = now = None
    for stream, writable in woken.items():
        stream._notify()
        att = stream.attachment
        if att is None or att.poll is None or not (writable or att.reading):
            continue
        poll = att.poll
        if poll.in_poll_thread():
            if not writable and hasattr(poll, "read_now"):
                if now is None:
                    now = []
                now.append((poll, att.handler))
                continue
            try:
                poll.ready(att.handler, readable=att.reading, writable=writable)
            except RuntimeError:  # the poll handler shut down: the channel ends with it
                pass
        else:
            if posts is None:
                posts = []
            posts.append((poll, att.handler, att.reading, writable))
    return posts, now


def post_marks(posts: list[tuple[Any, Any, bool, bool]]) -> None:
    """No lock held, off the poll thread: mark each handler ready on its poll thread, one
    posted command (one wake-up) per poll thread for them all."""
    by_poll: dict[int, list[tuple[Any, Any, bool, bool]]] = {}
    for post in posts:
        by_poll.setdefault(id(post[0]), []).append(post)
    for marks in by_poll.values():
        poll = marks[0][0]

        def mark(marks: list[tuple[Any, Any, bool, bool]] = marks, ready: Any = poll.ready) -> None:
            for _poll, handler, readable, writable in marks:
                ready(handler, readable=readable, writable=writable)

        try:
            poll.call_soon(mark)
        except RuntimeError:  # the poll handler shut down: the channels end with it
            pass


def read_now(handlers: list[tuple[Any, Any]]) -> None:
    """Poll thread, no lock held: read each channel the read just fed (``PollHandler.read_now``)."""
    for poll, handler in handlers:
        poll.read_now(handler)
