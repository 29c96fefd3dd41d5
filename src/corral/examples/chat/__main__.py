"""``python -m corral.examples.chat``: see :func:`corral.examples.chat.main`."""

from . import main

main()
