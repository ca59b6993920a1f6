"""Shared fixtures: private runtime threads per test, and a check that no thread outlives its test."""

from __future__ import annotations

import threading

import pytest

import links


@pytest.fixture
def poll():
    """A private poll handler, shut down (closing its connections) after the test."""
    handler = links.PollHandler("test-poll")
    yield handler
    handler.shutdown()


@pytest.fixture
def timer():
    """A private timer thread, shut down after the test."""
    t = links.Timer(name="test-timer")
    yield t
    t.shutdown()


@pytest.fixture(autouse=True)
def _no_thread_leaks():
    """Every thread a test starts must be gone once the runtime is shut down."""
    before = set(threading.enumerate())
    yield
    links.shutdown()
    leaked = []
    for thread in set(threading.enumerate()) - before:
        thread.join(timeout=5.0)
        if thread.is_alive():
            leaked.append(thread.name)
    assert not leaked, f"threads outlived the test: {leaked}"
