"""Benchmark scripts use links the way a user can: public names only.

A benchmark that imports ``links.bench._child`` or reaches into ``clt._con`` breaks the day
those internals move, and measures something no user can run. Read from the source of every
``.py`` under ``benchmarks/`` (the AST; nothing is run):

* no import of a private ``links`` module (``links.<pkg>._private``) or of a private name;
* every ``links`` name used is public: listed in the ``__all__`` of the module it comes from
  (``links``, ``links.lowlevel``, ``links.bench``, ``links.soupbintcp``, ...), or one of
  its public subpackages (or a module dunder such as ``__file__``);
* no private attribute (``x._name``) of anything but the script's own ``self`` or ``cls``.
"""

from __future__ import annotations

import ast
import importlib
from pathlib import Path
from types import ModuleType

import pytest

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"
SCRIPTS = sorted(BENCHMARKS.rglob("*.py"))


def private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def public_names(module: ModuleType) -> set[str]:
    """What ``module`` offers a user: its ``__all__`` and its public submodules."""
    names = set(getattr(module, "__all__", ()))
    path = getattr(module, "__path__", None)
    if path:
        names |= {p.stem if p.suffix == ".py" else p.name for p in Path(path[0]).iterdir() if not private(p.stem)}
    return names


def check_name(module_name: str, name: str, line: int) -> list[str]:
    """``module_name.name``'s problems: a private module on the way, or a name not offered."""
    if any(private(part) for part in module_name.split(".")):
        return [f"line {line}: imports the private module {module_name}"]
    module = importlib.import_module(module_name)
    if name not in public_names(module) and not (name.startswith("__") and name.endswith("__")):
        return [f"line {line}: {module_name}.{name} is not public (not in {module_name}.__all__)"]
    return []


def problems(path: Path) -> list[str]:
    """Every use of a links internal in the script at ``path``."""
    tree = ast.parse(path.read_text(), str(path))
    found: list[str] = []
    aliases: dict[str, str] = {}  # a local name -> the links module it is bound to
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name == "links" or alias.name.startswith("links."):
                    if any(private(part) for part in alias.name.split(".")):
                        found.append(f"line {node.lineno}: imports the private module {alias.name}")
                    elif "." in alias.name:
                        found += check_name(*alias.name.rsplit(".", 1), node.lineno)
                    aliases[alias.asname or alias.name] = alias.name
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and (node.module or "").split(".")[0] == "links":
            for alias in node.names:
                found += check_name(node.module, alias.name, node.lineno)
                target = f"{node.module}.{alias.name}"
                if isinstance(getattr(importlib.import_module(node.module), alias.name, None), ModuleType):
                    aliases[alias.asname or alias.name] = target
    for node in ast.walk(tree):
        if not isinstance(node, ast.Attribute):
            continue
        dotted = _dotted(node.value)
        if dotted in aliases:
            found += check_name(aliases[dotted], node.attr, node.lineno)
        elif private(node.attr) and dotted not in ("self", "cls"):
            found.append(f"line {node.lineno}: reaches into {ast.unparse(node)}")
    return found


def _dotted(node: ast.expr) -> str | None:
    """``a.b.c`` for a chain of names and attributes, else None."""
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute) and (base := _dotted(node.value)) is not None:
        return f"{base}.{node.attr}"
    return None


def test_every_benchmark_script_is_read():
    assert len(SCRIPTS) >= 5, SCRIPTS


@pytest.mark.parametrize("path", SCRIPTS, ids=[p.relative_to(BENCHMARKS).as_posix() for p in SCRIPTS])
def test_the_benchmark_uses_only_public_links_names(path):
    assert problems(path) == []


@pytest.mark.parametrize(
    ("source", "complaint"),
    [
        ("from links.bench._child import read_frames", "private module links.bench._child"),
        ("import links.bench._child", "private module links.bench._child"),
        ("from links import _clt", "links._clt is not public"),
        ("import links\nlinks.Link", "links.Link is not public"),
        ("from links import bench\nbench._links", "links.bench._links is not public"),
        ("clt = object()\nclt._con.attachment", "reaches into clt._con"),
    ],
)
def test_the_check_sees_each_kind_of_internal(source, complaint, tmp_path):
    script = tmp_path / "script.py"
    script.write_text(source + "\n")
    assert any(complaint in problem for problem in problems(script)), problems(script)


def test_the_check_lets_public_names_and_own_attributes_through(tmp_path):
    script = tmp_path / "script.py"
    script.write_text(
        "import links\nfrom links import bench\nfrom links.lowlevel import Link\n"
        "links.Clt\nbench.read_frames\nlinks.lowlevel.NEED_DATA\n"
        "class A:\n    def f(self):\n        return self._x\n"
    )
    assert problems(script) == []
