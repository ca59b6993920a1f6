"""Output helpers shared by subcommands: a live progress line, rates, a bar and a summary table.

The progress line is for a person watching a terminal: it rewrites itself in place on stderr
(``\\r``) a few times a second, and stays silent when stderr is not a terminal, so logs
captured by a script or a test are not littered with half-lines. The summary table is the
command's result and goes to stdout as plain aligned ``label  value`` lines that are easy to
read and to grep.
"""

from __future__ import annotations

import sys
import time
from collections import deque
from collections.abc import Callable, Iterable
from typing import IO

__all__ = ["ProgressLine", "Rate", "bar", "format_table", "print_table"]


class ProgressLine:
    """One status line rewritten in place; a no-op unless the stream is a terminal.

    Args:
        stream: where to draw (stderr by default).
        interval: the least seconds between redraws; ``update`` calls in between are dropped.
        enabled: force drawing on or off (default: only on a terminal).
    """

    def __init__(self, stream: IO[str] | None = None, *, interval: float = 0.1, enabled: bool | None = None) -> None:
        self.stream = sys.stderr if stream is None else stream
        self.enabled = self.stream.isatty() if enabled is None else enabled
        self.interval = interval
        self._last = 0.0
        self._width = 0

    def update(self, text: str | Callable[[], str], *, force: bool = False) -> None:
        """Show ``text`` (throttled to one redraw per ``interval`` unless ``force``).

        ``text`` may be a function, called only when the line is redrawn: what it reads
        (a ``Rate``, say) is then read at the redraw's moment, not at every call.
        """
        if not self.enabled:
            return
        now = time.monotonic()
        if not force and now - self._last < self.interval:
            return
        self._last = now
        text = text() if callable(text) else text
        # Pad with spaces to wipe what a longer previous line left behind.
        self.stream.write("\r" + text.ljust(self._width))
        self.stream.flush()
        self._width = len(text)

    def clear(self) -> None:
        """Erase the line, so the next output starts on a clean one."""
        if self.enabled and self._width:
            self.stream.write("\r" + " " * self._width + "\r")
            self.stream.flush()
            self._width = 0

    def __enter__(self) -> ProgressLine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.clear()


class Rate:
    """A count, and how fast it grew over the last ``window`` seconds.

    Readings are kept a tenth of the window apart, so ``per_second`` may be called as often
    as one likes (a reading per message costs a clock call); the rate spans from the oldest
    reading still inside the window (or the start) to now, never a single message's gap, and
    there is none (None) until a quarter of the window has passed.

    Args:
        window: seconds the rate looks back over.
        clock: a monotonic clock (tests pass a fake one).
    """

    def __init__(self, window: float = 2.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.count = 0
        self.window = window
        self._clock = clock
        self.started = clock()
        self._readings: deque[tuple[float, int]] = deque([(self.started, 0)])

    def per_second(self) -> float | None:
        """The count's growth per second over the last ``window`` seconds; None while the
        time seen is too short to say."""
        now, count = self._clock(), self.count
        if now - self._readings[-1][0] >= self.window / 10:
            self._readings.append((now, count))
        # Keep one reading at or before the window's start, so the span covers the window.
        while len(self._readings) > 2 and now - self._readings[1][0] >= self.window:
            self._readings.popleft()
        then, seen = self._readings[0]
        return (count - seen) / (now - then) if now - then >= self.window / 4 else None

    def shown(self) -> str:
        """``per_second`` for people: ``12,345/s``, or ``…/s`` while there is none yet."""
        rate = self.per_second()
        return "…/s" if rate is None else f"{rate:,.0f}/s"

    def average(self, until: float | None = None) -> float:
        """The count over the seconds from the start to ``until`` (default now)."""
        elapsed = (self._clock() if until is None else until) - self.started
        return self.count / elapsed if elapsed > 0 else 0.0


def bar(done: int, total: int, width: int = 30) -> str:
    """``[#####.....]``: ``done`` of ``total`` as a bar ``width`` characters wide."""
    filled = width * min(done, total) // max(total, 1)
    return "[" + "#" * filled + "." * (width - filled) + "]"


def format_table(rows: Iterable[tuple[str, object]], *, title: str | None = None) -> str:
    """``label  value`` lines with the values aligned in one column."""
    rows = [(label, str(value)) for label, value in rows]
    width = max((len(label) for label, _ in rows), default=0)
    lines = [title] if title else []
    lines += [f"  {label.ljust(width)}  {value}" for label, value in rows]
    return "\n".join(lines)


def print_table(rows: Iterable[tuple[str, object]], *, title: str | None = None, stream: IO[str] | None = None) -> None:
    """Print ``format_table`` to ``stream`` (stdout by default)."""
    print(format_table(rows, title=title), file=sys.stdout if stream is None else stream, flush=True)
