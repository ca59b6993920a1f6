"""``python -m links.bench --child ...`` is one side of a measurement, started by the harness.

The benchmark itself is the ``links bench`` command. This entry point does not run it, so
that ``links.bench`` never imports ``links.cli`` (which imports ``links.bench``).
"""

import sys

if len(sys.argv) > 1 and sys.argv[1] == "--child":
    from ._child import child_main

    sys.exit(child_main(sys.argv[2:]))

print("python -m links.bench --child ... is one side of a measurement; the benchmark is `links bench`", file=sys.stderr)
sys.exit(2)
