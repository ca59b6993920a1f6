"""``python -m links.bench --child ...`` is one side of a measurement; anything else is ``links bench``."""

import sys

if len(sys.argv) > 1 and sys.argv[1] == "--child":
    from ._child import child_main

    sys.exit(child_main(sys.argv[2:]))

from ..cli import main

sys.exit(main(["bench", *sys.argv[1:]]))
