"""``python -m corral ...`` is the ``corral`` command."""

import sys

from .cli import main

sys.exit(main())
