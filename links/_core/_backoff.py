"""``Backoff``: how long to wait before each reconnect attempt.

Attempt ``n`` (1-based) waits ``min(maximum, initial * factor ** (n - 1))``, spread by
``jitter`` (a fraction: 0.1 means ±10 %, drawn uniformly) so that many clients cut at the same
moment do not redial in lockstep. After a connection has stayed up for ``reset_after`` seconds
the next drop starts again from ``initial``; a connection that drops right after coming up
keeps climbing, so a flapping server is not hammered. ``max_attempts`` (None: forever) is
when reconnecting is given up.

Pure arithmetic: the random source is passed in, so a schedule is reproducible from a seed.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

__all__ = ["Backoff"]


@dataclass(frozen=True, slots=True)
class Backoff:
    """The schedule on which a client redials after its connection dropped (``reconnect=``).

    Attempt ``n`` waits ``min(maximum, initial * factor ** (n - 1))`` seconds, ±``jitter`` (a
    fraction); the schedule starts over once a connection stayed up ``reset_after`` seconds;
    after ``max_attempts`` attempts (None: never) the client gives up and raises ``BrokenError``.

    Raises:
        ValueError: when made with ``initial`` not in ``(0, maximum]``, ``factor < 1``,
            ``jitter`` outside ``[0, 1)`` or a negative ``reset_after`` (nan included).
    """
    initial: float = 0.05
    maximum: float = 5.0
    factor: float = 2.0
    jitter: float = 0.1
    reset_after: float = 5.0
    max_attempts: int | None = None

    def __post_init__(self) -> None:
        # Each check says what is allowed, so that nan (false in every comparison) fails it.
        if not 0 < self.initial <= self.maximum:
            raise ValueError("need 0 < initial <= maximum")
        if not self.factor >= 1:
            raise ValueError("factor must be >= 1")
        if not 0 <= self.jitter < 1:
            raise ValueError("jitter must be in [0, 1)")
        if not self.reset_after >= 0:
            raise ValueError("reset_after must be >= 0 seconds")

    def base(self, attempt: int) -> float:
        """The delay in seconds before ``attempt`` (1-based), before jitter:
        ``min(maximum, initial * factor ** (attempt - 1))``."""
        return min(self.maximum, self.initial * self.factor ** (attempt - 1))

    def delay(self, attempt: int, rng: random.Random | None = None) -> float:
        """The delay in seconds before ``attempt`` (1-based), spread by ``jitter`` with ``rng``
        (default: the ``random`` module), so that clients cut together do not redial together.
        """
        base = self.base(attempt)
        if not self.jitter:
            return base
        spread = (rng or random).uniform(-self.jitter, self.jitter)
        return base * (1.0 + spread)

    def gives_up(self, attempt: int) -> bool:
        """Whether ``attempt`` (1-based) is past ``max_attempts``: True means stop redialing."""
        return self.max_attempts is not None and attempt > self.max_attempts
