"""The shape of the library, guarded by reading its source.

* **Sans-I/O.** The core (every module under ``links/_core``), the session engine
  (``links/session/_engine.py``, ``links/session/_wire.py``), the mux engine and the rpc
  wire, msgpack framing and call table (``links/rpc/_wire.py``, ``_msgpack.py``,
  ``_table.py``, ``_errors.py``) import no socket, selector,
  thread or clock module, directly or through the ``links`` modules they import. Time and
  bytes enter as arguments; that is what lets them be tested (and simulated) without a
  network or a real clock.
* **No import cycle** anywhere in ``links/``, counting imports inside functions too.
* **Layers sit on the engine, never under it.** No engine module (``links/_*.py``) imports
  ``links.session`` or ``links.soupbintcp``.
* **Small pieces.** No module of the library proper is over ``MAX_LINES`` lines and no
  function over ``MAX_COMPLEXITY`` (cyclomatic, as radon counts it); nor any function of the
  ``links`` command (``links/cli``).
* **The command uses public pieces.** No module of ``links.cli`` imports a private module of
  another package (``links.testing._chaos``, ``links.bench._child``, ``links._core._conid``),
  and ``links.cli`` and ``links.bench`` do not import each other both ways.

The import graph is built from the AST of every ``.py`` under ``links/``: relative imports are
resolved, imports inside functions count, imports under ``if TYPE_CHECKING:`` do not (they
never run). Dynamic imports (``importlib.import_module``) are not seen: ``links/__init__.py``
uses one to load its layers lazily, after it has finished importing.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

import links

FORBIDDEN = {"socket", "selectors", "threading", "time", "select", "asyncio"}

LINKS_DIR = Path(links.__file__).parent
PACKAGE = LINKS_DIR.name  # "links"

# Everything under links/ except these is the library proper (size and complexity limits).
NOT_LIBRARY_PROPER = {"cli", "testing", "bench"}
# The layers built on the connection engine.
LAYERS = (f"{PACKAGE}.session", f"{PACKAGE}.soupbintcp", f"{PACKAGE}.mux", f"{PACKAGE}.rpc", f"{PACKAGE}.aio")

MAX_LINES = 450
MAX_COMPLEXITY = 15


def in_layer(name: str, layers: tuple[str, ...] = LAYERS) -> bool:
    return any(name == layer or name.startswith(layer + ".") for layer in layers)


def module_name(path: Path) -> str:
    parts = path.relative_to(LINKS_DIR.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def rel(path: Path) -> str:
    return path.relative_to(LINKS_DIR.parent).as_posix()


MODULES: dict[str, Path] = {module_name(p): p for p in sorted(LINKS_DIR.rglob("*.py"))}

CORE_DIR = LINKS_DIR / "_core"
SESSION_ENGINE_PATHS = [LINKS_DIR / "session" / "_engine.py", LINKS_DIR / "session" / "_wire.py"]
MUX_ENGINE_PATHS = [LINKS_DIR / "mux" / name for name in ("_engine.py", "_events.py", "_streams.py", "_wire.py")]
RPC_ENGINE_PATHS = [LINKS_DIR / "rpc" / name for name in ("_errors.py", "_msgpack.py", "_table.py", "_wire.py")]
AIO_SANS_IO_PATHS = [LINKS_DIR / "aio" / "_inbox.py"]  # the queue's state; the loop and threads are its driver's
SANS_IO_PATHS = (
    sorted(CORE_DIR.rglob("*.py")) + SESSION_ENGINE_PATHS + MUX_ENGINE_PATHS + RPC_ENGINE_PATHS + AIO_SANS_IO_PATHS
)

# The connection engine: the top-level private modules (not __init__.py or __main__.py).
ENGINE_PATHS = sorted(p for p in LINKS_DIR.glob("_*.py") if not p.name.startswith("__"))

CLI = f"{PACKAGE}.cli"
CLI_PATHS = sorted((LINKS_DIR / "cli").rglob("*.py"))

LIBRARY_PATHS = sorted(
    p for p in LINKS_DIR.rglob("*.py") if p.relative_to(LINKS_DIR).parts[0] not in NOT_LIBRARY_PROPER
)

# Known breaches, each being removed by issue 14. The marks are strict: once a breach is gone
# its test passes, which fails the run until the entry is deleted here.
ENGINE_IMPORTS_LAYER: dict[str, str] = {}  # engine module -> what it imports from a layer
TOO_LONG: set[str] = set()
TOO_COMPLEX: dict[str, str] = {}  # module -> its functions over MAX_COMPLEXITY


def known(paths: list[Path], breaches: dict[str, str] | set[str], reason: str) -> list:
    """``paths`` as parameters, those named in ``breaches`` (by path under ``links/``) marked strict
    xfail. A breach whose file is gone still gets a parameter: it then errors (not with an
    AssertionError), so the run says to drop it from the list."""
    by_name = {p.relative_to(LINKS_DIR).as_posix(): p for p in paths}
    params = []
    for name in sorted(set(by_name) | set(breaches)):
        path = by_name.get(name, LINKS_DIR / name)
        marks = []
        if name in breaches:
            why = f"{reason}: {breaches[name]}" if isinstance(breaches, dict) else reason
            marks.append(pytest.mark.xfail(strict=True, raises=AssertionError, reason=why))
        params.append(pytest.param(path, marks=marks, id=rel(path)))
    return params


# -- reading imports ------------------------------------------------------------------------


def is_type_checking(test: ast.expr) -> bool:
    """``if TYPE_CHECKING:`` or ``if typing.TYPE_CHECKING:`` (any alias of typing)."""
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def runtime_imports(tree: ast.AST) -> Iterator[ast.Import | ast.ImportFrom]:
    """Every import statement that can run: at module level or inside functions and classes,
    but not in the body of an ``if TYPE_CHECKING:`` (its ``else:`` does run)."""
    stack = [tree]
    while stack:
        node = stack.pop()
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            yield node
        elif isinstance(node, ast.If) and is_type_checking(node.test):
            stack.extend(node.orelse)
        else:
            stack.extend(ast.iter_child_nodes(node))


def imported_modules(tree: ast.AST) -> set[str]:
    """Top-level names of every absolute module imported where it can run (also inside functions)."""
    found = set()
    for node in runtime_imports(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name.split(".")[0] for alias in node.names)
        elif node.level == 0 and node.module:
            found.add(node.module.split(".")[0])
    return found


def ancestors(name: str) -> list[str]:
    """``a.b.c`` -> ``["a", "a.b"]``: the packages Python imports before ``a.b.c``."""
    parts = name.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts))]


def resolve_from(importer: str, node: ast.ImportFrom, modules: dict[str, Path]) -> str:
    """The absolute module an ``import from`` names, relative ones resolved against ``importer``."""
    if node.level == 0:
        return node.module or ""
    is_package = modules[importer].name == "__init__.py"
    base = importer.split(".") if is_package else importer.split(".")[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def dependencies(importer: str, modules: dict[str, Path] = MODULES) -> set[str]:
    """The modules of ``links`` that ``importer`` needs, each one an edge of the import graph.

    Importing ``a.b.c`` runs ``a``, ``a.b`` and ``a.b.c``; a package that contains the importer
    is already being imported, so it counts only when its contents are used: ``import links``,
    or ``from .. import LengthPrefixFramer`` (a name, not a submodule, of ``links/__init__.py``).
    """
    own_packages = set(ancestors(importer))
    found: set[str] = set()

    def needs(target: str, *, explicit: bool) -> None:
        for package in ancestors(target):
            if package not in own_packages:
                found.add(package)
        if explicit or target not in own_packages:
            found.add(target)

    tree = ast.parse(modules[importer].read_text(encoding="utf-8"), filename=str(modules[importer]))
    for node in runtime_imports(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                needs(alias.name, explicit=True)
        else:
            source = resolve_from(importer, node, modules)
            needs(source, explicit=False)
            for alias in node.names:
                submodule = f"{source}.{alias.name}"
                if submodule in modules:
                    needs(submodule, explicit=True)
                else:  # a name defined by ``source`` itself: its code must have run
                    needs(source, explicit=True)
    return {name for name in found if name in modules and name != importer}


def import_graph(modules: dict[str, Path] = MODULES) -> dict[str, set[str]]:
    return {name: dependencies(name, modules) for name in modules}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of ``graph`` as ``[a, b, ..., a]``, or None (iterative depth-first search)."""
    done: set[str] = set()
    for root in sorted(graph):
        if root in done:
            continue
        path, on_path = [root], {root}
        stack = [iter(sorted(graph[root]))]
        while stack:
            step = next(stack[-1], None)
            if step is None:
                stack.pop()
                done.add(path[-1])
                on_path.discard(path.pop())
            elif step in on_path:
                return path[path.index(step) :] + [step]
            elif step not in done:
                path.append(step)
                on_path.add(step)
                stack.append(iter(sorted(graph.get(step, ()))))
    return None


GRAPH = import_graph()


# -- the checks do check --------------------------------------------------------------------


def test_modules_found():
    # Guards the tests below against silently checking nothing after a move.
    assert {p.name for p in SANS_IO_PATHS} >= {"_framer.py", "_buffer.py", "_link.py", "_engine.py", "_wire.py"}
    assert {p.name for p in ENGINE_PATHS} >= {"_connection.py", "_transport.py", "_poll.py", "_clt.py", "_svc.py"}
    assert {"links", "links.session", "links.soupbintcp", "links._core._link", "links.session._driver"} <= set(GRAPH)
    assert len(LIBRARY_PATHS) > 20
    assert not any("cli" in p.parts or "testing" in p.parts for p in LIBRARY_PATHS)


@pytest.mark.parametrize(
    "source",
    ["import socket", "import os, time", "from selectors import DefaultSelector", "import asyncio.events",
     "def f():\n    from threading import Lock", "from select import poll",
     "if TYPE_CHECKING:\n    pass\nelse:\n    import time"],
)  # fmt: skip
def test_the_check_catches_each_import_form(source):
    assert imported_modules(ast.parse(source)) & FORBIDDEN


@pytest.mark.parametrize(
    "source",
    ["if TYPE_CHECKING:\n    import socket", "if typing.TYPE_CHECKING:\n    from time import monotonic"],
)
def test_type_checking_imports_do_not_count(source):
    assert not imported_modules(ast.parse(source)) & FORBIDDEN


def fake_package(tmp_path: Path, files: dict[str, str]) -> dict[str, Path]:
    modules = {}
    for relative, source in files.items():
        path = tmp_path / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(source, encoding="utf-8")
        parts = Path(relative).with_suffix("").parts
        modules[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return modules


def test_graph_resolves_imports_and_finds_cycles(tmp_path):
    files = {
        "links/__init__.py": "from ._a import A\nfrom . import layer\n",
        "links/_a.py": "A = 1\ndef f():\n    from .layer._x import X\n",
        "links/_b.py": "if TYPE_CHECKING:\n    from .layer import X\nimport links._a\n",
        "links/layer/__init__.py": "from ._x import X\n",
        "links/layer/_x.py": "from .. import A\nfrom . import _y\nX = A\n",
        "links/layer/_y.py": "from .._a import A\n",
    }
    modules = fake_package(tmp_path, files)
    graph = import_graph(modules)
    assert graph["links"] == {"links._a", "links.layer"}
    assert graph["links._a"] == {"links.layer", "links.layer._x"}  # function level; runs layer/__init__
    assert graph["links._b"] == {"links._a"}  # the TYPE_CHECKING import is not an edge
    assert graph["links.layer._x"] == {"links", "links.layer._y"}  # `from .. import A` needs links/__init__
    assert graph["links.layer._y"] == {"links._a"}
    cycle = find_cycle(graph)
    assert cycle is not None and cycle[0] == cycle[-1] and len(cycle) > 2
    assert all(b in graph[a] for a, b in zip(cycle, cycle[1:]))
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": set()}) is None


# -- Sans-I/O --------------------------------------------------------------------------------


@pytest.mark.parametrize("path", SANS_IO_PATHS, ids=rel)
def test_sans_io_module_imports_no_io(path):
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    bad = imported_modules(tree) & FORBIDDEN
    assert not bad, f"{rel(path)} imports {sorted(bad)}"


@pytest.mark.parametrize("path", SANS_IO_PATHS, ids=rel)
def test_sans_io_module_reaches_no_io_through_links(path):
    # What a Sans-I/O module imports from links must be Sans-I/O too (``_errors``, say).
    start = module_name(path)
    reached, todo = set(), [start]
    while todo:
        for dep in GRAPH[todo.pop()] - reached:
            reached.add(dep)
            todo.append(dep)
    bad = {
        dep: sorted(found)
        for dep in sorted(reached)
        if (found := imported_modules(ast.parse(MODULES[dep].read_text(encoding="utf-8"))) & FORBIDDEN)
    }
    assert not bad, f"{start} reaches modules that do I/O: {bad}"


# -- the import graph ------------------------------------------------------------------------


def test_no_import_cycle():
    cycle = find_cycle(GRAPH)
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


@pytest.mark.parametrize("path", known(ENGINE_PATHS, ENGINE_IMPORTS_LAYER, "it imports"))
def test_engine_imports_no_layer(path):
    name = module_name(path)
    bad = sorted(dep for dep in dependencies(name) if in_layer(dep))
    assert not bad, f"{name} imports the layer(s) {bad} (outside TYPE_CHECKING)"


def test_links_init_imports_no_layer():
    # ``links.session`` and ``links.soupbintcp`` import pieces of links: loading them from
    # links/__init__.py would be a cycle, so it loads them lazily (``__getattr__``).
    bad = sorted(dep for dep in GRAPH[PACKAGE] if in_layer(dep))
    assert not bad, f"links/__init__.py imports {bad}"


@pytest.mark.parametrize("layer", LAYERS)
def test_layers_import_the_core_not_links_init(layer):
    # A layer takes what it needs from the concrete modules (``.._core._framer``), not from
    # ``links/__init__.py``, which would make it depend on everything links exports.
    bad = sorted(name for name in GRAPH if in_layer(name, (layer,)) and PACKAGE in GRAPH[name])
    assert not bad, f"{bad} import links/__init__.py"


# -- size ------------------------------------------------------------------------------------


@pytest.mark.parametrize("path", known(LIBRARY_PATHS, TOO_LONG, "too long"))
def test_module_is_not_too_long(path):
    lines = len(path.read_text(encoding="utf-8").splitlines())
    assert lines <= MAX_LINES, f"{rel(path)} has {lines} lines (limit {MAX_LINES})"


@pytest.mark.parametrize("path", known(LIBRARY_PATHS, TOO_COMPLEX, "issue 14: over the limit"))
def test_no_function_is_too_complex(path):
    check_complexity(path)


@pytest.mark.parametrize("path", CLI_PATHS, ids=rel)
def test_no_function_of_the_command_is_too_complex(path):
    check_complexity(path)


def check_complexity(path):
    complexity = pytest.importorskip("radon.complexity")
    visitors = pytest.importorskip("radon.visitors")
    blocks = complexity.add_inner_blocks(complexity.cc_visit(path.read_text(encoding="utf-8")))
    over = sorted(
        f"{block.fullname} (line {block.lineno}): {block.complexity}"
        for block in blocks
        if isinstance(block, visitors.Function) and block.complexity > MAX_COMPLEXITY
    )
    assert not over, f"{rel(path)}: over {MAX_COMPLEXITY}: {over}"


# -- the command ---------------------------------------------------------------------------


def is_private_elsewhere(importer: str, dep: str) -> bool:
    """``dep`` is a private module (a ``_name`` part) of a package other than ``importer``'s."""
    home = importer.rsplit(".", 1)[0] if MODULES[importer].name != "__init__.py" else importer
    parts = dep.split(".")
    for i, part in enumerate(parts):
        if part.startswith("_") and not part.startswith("__"):
            return ".".join(parts[:i]) != home
    return False


def test_the_private_check_tells_own_from_other_packages():
    assert is_private_elsewhere("links.cli.chaos", "links.testing._chaos")
    assert is_private_elsewhere("links.cli.soupbintcp", "links._core._conid")
    assert is_private_elsewhere("links.cli", "links.bench._child")
    assert not is_private_elsewhere("links.cli.chaos", "links.cli._progress")
    assert not is_private_elsewhere("links.cli", "links.cli._args")
    assert not is_private_elsewhere("links.cli.chaos", "links.testing")


@pytest.mark.parametrize("path", CLI_PATHS, ids=rel)
def test_the_command_imports_no_private_module_of_another_package(path):
    name = module_name(path)
    bad = sorted(dep for dep in GRAPH[name] if is_private_elsewhere(name, dep))
    assert not bad, f"{name} imports private modules of other packages: {bad} (export what it needs)"


@pytest.mark.parametrize("path", CLI_PATHS, ids=rel)
def test_the_command_imports_no_private_name_of_another_module(path):
    name = module_name(path)
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    bad = sorted(
        f"{resolve_from(name, node, MODULES)}.{alias.name}"
        for node in runtime_imports(tree)
        if isinstance(node, ast.ImportFrom)
        for alias in node.names
        if alias.name.startswith("_") and f"{resolve_from(name, node, MODULES)}.{alias.name}" not in MODULES
    )
    assert not bad, f"{name} imports private names: {bad} (make them public where they are defined)"


def package_graph(graph: dict[str, set[str]], packages: tuple[str, ...]) -> dict[str, set[str]]:
    """The import graph between ``packages``: an edge when any module of one imports any of the other."""

    def owner(name: str) -> str | None:
        return next((p for p in packages if name == p or name.startswith(p + ".")), None)

    edges: dict[str, set[str]] = {p: set() for p in packages}
    for name, deps in graph.items():
        source = owner(name)
        if source is not None:
            edges[source] |= {target for dep in deps if (target := owner(dep)) not in (None, source)}
    return edges


def test_the_command_and_the_benchmarks_do_not_import_each_other():
    bench = f"{PACKAGE}.bench"
    edges = package_graph(GRAPH, (CLI, bench))
    assert not (bench in edges[CLI] and CLI in edges[bench]), f"{CLI} and {bench} import each other: {edges}"
    assert CLI not in edges[bench], "the benchmark harness must not need the command"
