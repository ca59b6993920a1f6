"""The Sans-I/O core stays free of I/O: no module under ``links/_core`` imports a socket,
selector, thread or clock module. Time and bytes enter as arguments; that is what lets the
core be tested (and simulated) without a network or a real clock.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import links._core

FORBIDDEN = {"socket", "selectors", "threading", "time", "select", "asyncio"}

CORE_DIR = Path(links._core.__file__).parent
CORE_MODULES = sorted(CORE_DIR.rglob("*.py"))


def imported_modules(tree: ast.AST) -> set[str]:
    """Top-level names of every absolute module imported anywhere in ``tree`` (also inside functions)."""
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module.split(".")[0])
    return found


def test_core_modules_found():
    # Guards the test below against silently checking nothing after a move.
    assert {p.name for p in CORE_MODULES} >= {"_framer.py", "_buffer.py", "_link.py"}


@pytest.mark.parametrize("path", CORE_MODULES, ids=lambda p: str(p.relative_to(CORE_DIR)))
def test_core_module_imports_no_io(path):
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    bad = imported_modules(tree) & FORBIDDEN
    assert not bad, f"{path.relative_to(CORE_DIR.parent)} imports {sorted(bad)}"


@pytest.mark.parametrize(
    "source",
    ["import socket", "import os, time", "from selectors import DefaultSelector", "import asyncio.events",
     "def f():\n    from threading import Lock", "from select import poll"],
)
def test_the_check_catches_each_import_form(source):
    assert imported_modules(ast.parse(source)) & FORBIDDEN
