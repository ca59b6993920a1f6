"""``SessionStore``: the server's numbered Sequenced Data, kept in memory and bounded.

One stream per username
    The application sends Sequenced Data through the ordinary senders (``send_to``,
    ``send_reply``, ...), and each of those reaches one connection. A stream shared by
    several users would then have holes for each of them, and since numbers are implicit on
    the wire a hole silently renumbers everything after it. So, as in OUCH where every
    account has its own stream, each username owns one stream within the server's session,
    numbered from 1.

One connection per username
    A user is logged in on at most one connection at a time. A new login for the same user
    *replaces* the old connection (the caller closes it): a client that reconnects after a
    network cut must not wait for the server to notice that the old connection is dead.

Bounded
    Each stream keeps its newest ``max_messages`` messages. A login may ask to resume from
    any number still kept; asking for an older one is refused (the caller answers Login
    Rejected ``S``, session not available) rather than silently starting later, because a
    client that asks for message 5 and quietly gets 9 would misnumber everything. Asking for
    0 means "from the current end"; asking beyond the end also starts at the end, and Login
    Accepted tells the client which number comes next.

Threads: appends come from any sending thread (under that connection's send lock), logins
from the receiving thread; one lock guards every stream. The store never calls out while
holding it.
"""

from __future__ import annotations

import itertools
import threading
from collections import deque
from typing import Any

from ._packets import SequencedData

__all__ = ["SequenceUnavailable", "SessionStore"]


class SequenceUnavailable(LookupError):
    """The requested sequence number is older than the oldest message kept."""


class _Stream:
    __slots__ = ("messages", "next_sequence", "owner")

    def __init__(self, max_messages: int) -> None:
        self.messages: deque[SequencedData] = deque(maxlen=max_messages)
        self.next_sequence = 1
        self.owner: Any = None  # the one logged-in connection (its protocol), or None

    @property
    def first_sequence(self) -> int:
        """The oldest number still kept (== next_sequence when none is)."""
        return self.next_sequence - len(self.messages)


class SessionStore:
    """Numbered streams, one per username, each keeping its newest ``max_messages``."""

    def __init__(self, max_messages: int = 100_000) -> None:
        if max_messages < 1:
            raise ValueError("max_messages must be at least 1")
        self.max_messages = max_messages
        self._streams: dict[str, _Stream] = {}
        self._lock = threading.Lock()

    def attach(self, username: str, owner: Any, requested: int) -> tuple[int, list[SequencedData], Any]:
        """Log ``owner`` in as ``username`` from sequence number ``requested``.

        Returns:
            ``(next, replay, previous)``: the number to announce in Login Accepted, the kept
            messages from there on (to send before any live data), and the connection this
            login replaces (the caller closes it), or None.

        Raises:
            SequenceUnavailable: ``requested`` is older than the oldest message kept.
        """
        with self._lock:
            stream = self._streams.get(username)
            if stream is None:
                stream = self._streams[username] = _Stream(self.max_messages)
            end = stream.next_sequence
            start = end if requested == 0 or requested > end else requested
            first = stream.first_sequence
            if start < first:
                raise SequenceUnavailable(f"sequence {requested} is no longer kept (oldest is {first})")
            replay = list(itertools.islice(stream.messages, start - first, None))
            previous, stream.owner = stream.owner, owner
        return start, replay, previous

    def append(self, username: str, owner: Any, payload: Any) -> SequencedData | None:
        """Number ``payload`` as the next message of ``username``'s stream.

        Returns None, appending nothing, when ``owner`` is no longer the user's connection
        (a newer login replaced it).
        """
        with self._lock:
            stream = self._streams[username]
            if stream.owner is not owner:
                return None
            msg = SequencedData(payload, stream.next_sequence)
            stream.messages.append(msg)
            stream.next_sequence += 1
            return msg

    def detach(self, username: str, owner: Any) -> None:
        """``owner`` logged out or disconnected (a no-op if a newer login replaced it)."""
        with self._lock:
            stream = self._streams.get(username)
            if stream is not None and stream.owner is owner:
                stream.owner = None

    def next_sequence(self, username: str) -> int:
        """The number the next message of ``username``'s stream will get."""
        with self._lock:
            stream = self._streams.get(username)
            return 1 if stream is None else stream.next_sequence

    def messages(self, username: str) -> list[SequencedData]:
        """The messages of ``username``'s stream still kept, oldest first."""
        with self._lock:
            stream = self._streams.get(username)
            return [] if stream is None else list(stream.messages)

    def __repr__(self) -> str:
        return f"SessionStore(users={len(self._streams)}, max_messages={self.max_messages})"
