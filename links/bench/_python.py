"""``python_command``: start ``python -m MODULE`` in a child that imports what this process imports.

``python -m`` puts the child's current directory first on ``sys.path``. Run from a folder that
holds a ``links/`` directory (the parent of a clone, say), every child would import that folder
instead of the ``links`` its parent runs, and fail in ways only its stderr shows. So the child
starts with the parent's own ``sys.path`` (made absolute), as ``multiprocessing`` does for the
processes it spawns, and then runs the module as ``-m`` would.
"""

from __future__ import annotations

import os
import sys

__all__ = ["python_command"]

_BOOT = "import runpy, sys; sys.path[:] = {path!r}; runpy.run_module({module!r}, run_name='__main__', alter_sys=True)"


def python_command(module: str, *args: str) -> list[str]:
    """The command line of ``python -m module *args`` with this interpreter and this ``sys.path``.

    The child imports the same ``links`` (and every other package) as the calling process,
    whatever its current directory; ``sys.argv[1:]`` in the child is ``args``.
    """
    path = [os.path.abspath(entry) for entry in sys.path]  # "" (the current directory) too
    return [sys.executable, "-c", _BOOT.format(path=path, module=module), *args]
