"""``python -m links`` runs the ``links`` command."""

import sys

from .cli import main

sys.exit(main())
