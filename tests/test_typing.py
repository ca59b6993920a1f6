"""A user's type checker accepts the code the documentation shows.

``links`` ships ``py.typed`` (PEP 561), so ``mypy --strict`` reads its annotations. These tests
check what a user sees: the package is copied to a folder that mypy takes for an installed
package (found on ``PYTHONPATH`` through ``--python-executable``, as site-packages would be),
so mypy reads it only if the ``py.typed`` marker is there and reports no error *inside* it,
exactly as after ``pip install links``; then one mypy run checks the README's Python snippets,
every file in ``examples/``, and ``tests/typed_usage.py``, where the mistakes the annotations
must catch are marked ``# type: ignore[code]`` (an ignore that silences nothing fails under
``--strict``, so loose types fail the check too).

The README's snippets are fragments of one program: the second and third use ``links`` and
the ``Chat`` protocol of the first, and ``tests/test_readme.py`` runs them in order in one
namespace. They are checked the same way, joined in order into one module, so each name is
checked against what the earlier snippets defined (checked alone, the later ones would fail
on names, not on types).

Skipped only if mypy is not installed (it is in the ``test`` extra).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
EXAMPLES = sorted((ROOT / "examples").glob("*.py"))
TYPED_USAGE = Path(__file__).resolve().parent / "typed_usage.py"


def readme_program() -> str:
    """The README's ```python blocks joined in order, each marked with where it starts."""
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(encoding="utf-8"), re.S)
    assert blocks, "the README has no python block"
    return "\n".join(f"# README.md, python block {i}\n{block}" for i, block in enumerate(blocks, 1))


def installed_copy(site: Path) -> None:
    """``links`` as a wheel would install it (sources and package data, no caches)."""
    shutil.copytree(ROOT / "links", site / "links", ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))


def run_mypy(site: Path, work: Path, files: list[Path]) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(site)}
    return subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "--no-color-output", "--python-executable", sys.executable,
         "--cache-dir", str(work / "mypy_cache"), *map(str, files)],  # fmt: skip
        cwd=work,  # not the repository: links must be found as an installed package
        env=env,
        capture_output=True,
        text=True,
        timeout=150,
        check=False,
    )


@pytest.mark.timeout(180)
def test_readme_snippets_examples_and_typed_usage_pass_mypy_strict(tmp_path):
    pytest.importorskip("mypy.api")
    site, work = tmp_path / "site", tmp_path / "work"
    work.mkdir()
    installed_copy(site)
    program = work / "readme_snippets.py"
    program.write_text(readme_program(), encoding="utf-8")
    assert EXAMPLES
    done = run_mypy(site, work, [program, *EXAMPLES, TYPED_USAGE])
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"no issues found in {2 + len(EXAMPLES)} source files" in done.stdout


def test_py_typed_is_shipped_as_package_data(tmp_path):
    # What a build puts in the package: setuptools' build_py is the step that copies package
    # data into wheels and installs.
    pytest.importorskip("setuptools")
    src = tmp_path / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    installed_copy(src)
    subprocess.run(
        [sys.executable, "-W", "ignore", "-c", "import setuptools; setuptools.setup()", "-q", "build_py",
         "-d", str(tmp_path / "build")],  # fmt: skip
        cwd=src,
        capture_output=True,
        check=True,
        timeout=60,
    )
    assert (tmp_path / "build" / "links" / "py.typed").is_file()
