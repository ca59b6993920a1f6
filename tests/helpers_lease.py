"""Watching ``links._lease`` from tests: the borrows that succeeded, and one under way."""

from __future__ import annotations

import threading

import pytest

from links._lease import ReadLease

WAIT = 5.0


class Lends:
    """Counts the borrows that succeeded, and lets a test wait until one is under way."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.cond = threading.Condition()
        self.count = 0
        self.active = 0
        self.leases: list[ReadLease] = []
        borrow, give_back = ReadLease.borrow, ReadLease.give_back

        def counted_borrow(lease: ReadLease, timeout) -> bool:
            ok = borrow(lease, timeout)
            if ok:
                with self.cond:
                    self.count += 1
                    self.active += 1
                    self.leases.append(lease)
                    self.cond.notify_all()
            return ok

        def counted_give_back(lease: ReadLease, park: bool = False) -> bool:
            with self.cond:
                self.active -= 1
            return give_back(lease, park)

        monkeypatch.setattr(ReadLease, "borrow", counted_borrow)
        monkeypatch.setattr(ReadLease, "give_back", counted_give_back)

    def wait_lent(self) -> ReadLease:
        with self.cond:
            assert self.cond.wait_for(lambda: self.active > 0, WAIT), "no call borrowed the reading"
            return self.leases[-1]

