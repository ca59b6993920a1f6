"""``run_chaos``: a resumable session under random cuts, with every message accounted for.

The setup is what a user would run: a ``Svc`` with ``session=Resumable(...)`` and spawned
receivers, a ``Clt`` with ``reconnect=`` and ``session=`` and a spawned receiver, and a
``FaultProxy`` between them. Both sides stream numbered messages (0, 1, 2, ...) at the same
time while the chaos loop cuts the connection ``cuts`` times, each time in one of three ways:
an RST, a FIN, or a cut after a random number of bytes (so, almost always, mid-frame).

Each cut is made on a settled connection and the loop then waits for the session to resume
before the next one, so the number of resumes must equal the number of cuts exactly. The
streams are paced by the cuts: at cut ``k`` both senders are allowed the ``k``-th slice of
their stream, and an RST or FIN waits until half of it has arrived on each side, while a
mid-frame cut is armed before the slice goes, so its bytes make it fire. Every cut therefore
lands in the middle of traffic (unpaced, the whole stream would be sent before the second
cut, and the rest would only cut an idle link). Cut timing is drawn from the seed; the thread
interleavings are not (real threads and sockets), so a failure names its seed but may need a
few runs to reproduce; the simulator in ``links.testing`` is the fully deterministic tier.

Every received message is checked against the next expected number: what is skipped counts
as lost, what comes again as duplicated, what comes early as reordered, and anything that is
not a number as unexpected. All four must be zero.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .._callbacks import Callback
from .._clt import Clt
from .._core._backoff import Backoff
from .._core._framer import LengthPrefixFramer
from .._core._messenger import JsonMessenger
from .._core._protocol import Protocol
from .._poll import PollHandler
from .._svc import Svc
from .._timer import Timer
from ..session import Resumable
from ._proxy import FaultProxy

__all__ = ["run_chaos", "ChaosResult", "SequenceCheck"]


class _Numbers(Protocol):
    framer = LengthPrefixFramer(header_size=4)
    messenger = JsonMessenger()


class SequenceCheck(Callback):
    """Counts how a stream of received numbers departs from 0, 1, 2, ... (thread-safe)."""

    def __init__(self) -> None:
        self.expected = 0
        self.lost = self.duplicated = self.reordered = self.unexpected = 0
        self._seen_ahead: set[int] = set()
        self._cond = threading.Condition()

    def on_recv(self, con_id: Any, msg: Any) -> None:
        with self._cond:
            if not isinstance(msg, int):
                self.unexpected += 1
            elif msg == self.expected:
                self.expected += 1
                while self.expected in self._seen_ahead:  # a gap was filled late: reordered
                    self._seen_ahead.discard(self.expected)
                    self.expected += 1
            elif msg < self.expected:
                self.duplicated += 1
            else:
                self.reordered += 1
                self._seen_ahead.add(msg)
            self._cond.notify_all()

    def wait_for(self, count: int, timeout: float) -> bool:
        with self._cond:
            return self._cond.wait_for(lambda: self.expected >= count, timeout)

    def finish(self, sent: int) -> None:
        """Everything still missing once the stream is over is lost."""
        with self._cond:
            self.lost = sent - self.expected - len(self._seen_ahead)


@dataclass(frozen=True)
class ChaosResult:
    """What one ``run_chaos()`` did: the cuts made and fired, the resumes on each side, and
    every message accounted for (received, lost, duplicated, reordered, unexpected)."""

    seed: int
    messages: int
    cuts: int
    cuts_by_kind: dict[str, int]
    cuts_fired: int
    resumes_client: int
    resumes_server: int
    received_by_server: int
    received_by_client: int
    lost: int
    duplicated: int
    reordered: int
    unexpected: int
    seconds: float
    errors: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """Whether the run kept every promise: nothing lost, duplicated, reordered or
        unexpected, every message received on both sides, every cut fired and resumed."""
        return (
            not self.errors
            and self.lost == self.duplicated == self.reordered == self.unexpected == 0
            and self.received_by_server == self.received_by_client == self.messages
            and self.cuts_fired == self.cuts == self.resumes_client == self.resumes_server
        )

    def summary(self) -> str:
        """One line for people: the seed, the cuts by kind, the resumes and the tallies."""
        kinds = ", ".join(f"{k} {v}" for k, v in sorted(self.cuts_by_kind.items()))
        return (
            f"seed {self.seed}: {self.messages} messages each way, {self.cuts_fired}/{self.cuts} cuts ({kinds}), "
            f"resumes client {self.resumes_client} server {self.resumes_server}; received server "
            f"{self.received_by_server} client {self.received_by_client}; lost {self.lost}, duplicated "
            f"{self.duplicated}, reordered {self.reordered}, unexpected {self.unexpected}; {self.seconds:.1f}s"
            + (f"; errors: {self.errors}" if self.errors else "")
        )


def run_chaos(
    *,
    cuts: int = 100,
    messages: int = 10_000,
    seed: int | None = None,
    heartbeat_interval: float = 0.05,
    step_timeout: float = 10.0,
    progress: Callable[[int, int, int, int], None] | None = None,
) -> ChaosResult:
    """Stream ``messages`` numbers each way through ``cuts`` random cuts; count the damage.

    Args:
        seed: draws the cut kinds and positions (random if None; always in the result).
        step_timeout: how long one resume (or the final delivery) may take before the run is
            declared failed, so a bug ends the run instead of hanging it.
        progress: called as ``progress(cuts_done, cuts, received_by_server, received_by_client)``.
    """
    seed = random.randrange(1 << 32) if seed is None else seed
    rng = random.Random(seed)
    started = time.monotonic()
    errors: list[str] = []
    kinds = {"rst": 0, "fin": 0, "mid_frame": 0}
    server_check, client_check = SequenceCheck(), SequenceCheck()
    poll, timer = PollHandler("chaos-poll"), Timer(name="chaos-timer")
    session_args = {"heartbeat_interval": heartbeat_interval, "dead_after": 3, "max_messages": 1 << 16, "max_bytes": 64 << 20}
    svc = Svc.bind("127.0.0.1:0", protocol=_Numbers, callback=server_check, name="chaos-svc",
                   session=Resumable(detached_ttl=60.0, **session_args), poll_handler=poll, timer=timer)  # fmt: skip
    proxy = FaultProxy(svc.local_addr)
    clt: Clt | None = None
    pace = _Pace()
    try:
        svc_sender = svc.into_sender_with_spawned_recver()
        clt = Clt.connect(
            f"127.0.0.1:{proxy.addr[1]}", protocol=_Numbers, callback=client_check, name="chaos-clt", timeout=5.0,
            reconnect=Backoff(initial=0.002, maximum=0.02, factor=1.5, jitter=0.2), session=Resumable(**session_args),
            poll_handler=poll, timer=timer,
        )  # fmt: skip
        connection = clt._con
        clt_sender = clt.into_sender_with_spawned_recver()
        senders = [
            threading.Thread(target=_stream, args=(clt_sender, messages, errors, pace), name="chaos-c2s", daemon=True),
            threading.Thread(target=_stream, args=(svc_sender, messages, errors, pace), name="chaos-s2c", daemon=True),
        ]
        for t in senders:
            t.start()
        for done in range(cuts):
            # Cut only a settled connection: the previous cut has been resumed.
            with connection.changed:
                settled = connection.changed.wait_for(
                    lambda d=done: connection.attachment is not None and _resumes(clt) == d, step_timeout
                )
            if not settled:
                errors.append(f"cut {done}: the session did not resume within {step_timeout}s")
                break
            end = (done + 1) * messages // cuts
            kind = rng.choice(("rst", "fin", "mid_frame"))
            kinds[kind] += 1
            if kind == "mid_frame":
                # Armed before the slice is let go, so the slice's own bytes make it fire.
                proxy.cut_after(rng.randint(1, 512), how=rng.choice(("rst", "fin")))
                pace.allow(end)
            else:
                pace.allow(end)
                half = (done * messages // cuts + end + 1) // 2
                if not (server_check.wait_for(half, step_timeout) and client_check.wait_for(half, step_timeout)):
                    errors.append(f"cut {done}: the stream did not flow within {step_timeout}s")
                    break
                if kind == "rst":
                    proxy.reset()
                else:
                    proxy.drop()
            if progress is not None:
                progress(done + 1, cuts, server_check.expected, client_check.expected)
        pace.allow(messages)
        with connection.changed:
            if not connection.changed.wait_for(lambda: _resumes(clt) >= cuts, step_timeout):
                errors.append("the last cut was not resumed")
        for t in senders:
            t.join(step_timeout * 3)
        if not (server_check.wait_for(messages, step_timeout) and client_check.wait_for(messages, step_timeout)):
            errors.append("not every message arrived")
        if progress is not None:
            progress(cuts, cuts, server_check.expected, client_check.expected)
    finally:
        pace.allow(messages)  # a run that failed early must not leave its senders waiting
        stats = proxy.stats()
        server_resumes = sum(c.session.engine.resumes for c in _server_connections(svc))
        if clt is not None:
            clt.close()
        svc.close()
        proxy.close()
        poll.shutdown()
        timer.shutdown()
    server_check.finish(messages)
    client_check.finish(messages)
    return ChaosResult(
        seed=seed, messages=messages, cuts=cuts, cuts_by_kind=kinds,
        cuts_fired=stats.fin_cuts + stats.rst_cuts + stats.after_cuts,
        resumes_client=_resumes(clt), resumes_server=server_resumes,
        received_by_server=server_check.expected, received_by_client=client_check.expected,
        lost=server_check.lost + client_check.lost, duplicated=server_check.duplicated + client_check.duplicated,
        reordered=server_check.reordered + client_check.reordered,
        unexpected=server_check.unexpected + client_check.unexpected,
        seconds=time.monotonic() - started, errors=errors,
    )  # fmt: skip


class _Pace:
    """How many messages each stream may have sent so far (raised by the cut loop)."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._allowed = 0

    def allow(self, n: int) -> None:
        with self._cond:
            self._allowed = max(self._allowed, n)
            self._cond.notify_all()

    def wait(self, i: int) -> None:
        if i < self._allowed:  # the common case, without the lock
            return
        with self._cond:
            self._cond.wait_for(lambda: i < self._allowed)


def _stream(sender: Any, count: int, errors: list[str], pace: _Pace) -> None:
    try:
        for i in range(count):
            pace.wait(i)
            sender.send(i)
    except Exception as e:  # the run reports it rather than dying silently in a thread
        errors.append(f"sender failed: {e!r}")


def _resumes(clt: Clt | None) -> int:
    if clt is None or clt._con.session is None:
        return 0
    return clt._con.session.engine.resumes


def _server_connections(svc: Svc) -> list[Any]:
    return [s._con for s in svc._pool.senders()]
