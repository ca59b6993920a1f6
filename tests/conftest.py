"""Shared fixtures: private runtime threads per test, and a check that no thread outlives its test.

Also: structlog output is discarded during tests (``capture_logs()`` still sees every event,
it replaces the processors), so log lines from runtime threads do not litter the report; and
tests marked ``slow`` run only when asked for with ``-m slow``.
"""

from __future__ import annotations

import threading

import pytest
import structlog

import links

structlog.configure(logger_factory=structlog.ReturnLoggerFactory())


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if "slow" in (config.getoption("markexpr") or ""):
        return
    skip = pytest.mark.skip(reason="long run: select it with -m slow")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)


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


@pytest.fixture
def logs():
    """Captured structlog events, waitable (see ``tests/helpers.py``). Entered before the test
    opens any connection, so every logger the test binds reports here."""
    from helpers import watch_logs

    with watch_logs() as watch:
        yield watch


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


def pytest_asyncio_loop_factories(config: pytest.Config, item: pytest.Item) -> dict[str, object] | None:
    """The event loops a module's asyncio tests run on: those it names in ``LOOP_FACTORIES``
    (``tests/test_aio*.py``: asyncio and uvloop), else pytest-asyncio's default."""
    module = getattr(item, "module", None)
    return getattr(module, "LOOP_FACTORIES", None)
