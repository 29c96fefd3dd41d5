"""The one place that picks corral's compiled fast path or its pure-Python reference.

``corral._speedups`` (C) and ``corral._pure`` implement the same frame functions with the
same results; ``corral._hotpath`` (C) and ``corral._pure_hotpath`` the base types of a
connection's transport adapter and handle, the pure ones delegating to the Python session,
which the C ones must match. The pure modules are the source of truth and the tests run the
whole suite in both modes. The compiled modules are used unless the environment sets
``CORRAL_PURE=1`` or they were not built (no C compiler at install time). ``COMPILED`` says
which ones are in use.
"""

from __future__ import annotations

import os

__all__ = [
    "COMPILED",
    "Counters",
    "HandleCore",
    "PayloadBuffer",
    "StreamCore",
    "apply_mask",
    "apply_mask_in_place",
    "build_frame",
    "configure_hot_path",
    "frame_header",
    "parse_frames",
    "parse_head",
]

COMPILED = False
if os.environ.get("CORRAL_PURE") != "1":
    try:
        from ._hotpath import Counters, HandleCore, StreamCore
        from ._hotpath import configure as configure_hot_path
        from ._http import parse_head
        from ._speedups import (
            PayloadBuffer,
            apply_mask,
            apply_mask_in_place,
            build_frame,
            frame_header,
            parse_frames,
        )

        COMPILED = True
    except ImportError:
        pass
if not COMPILED:
    from ._pure import (
        PayloadBuffer,
        apply_mask,
        apply_mask_in_place,
        build_frame,
        frame_header,
        parse_frames,
    )
    from ._pure_hotpath import Counters, HandleCore, StreamCore
    from ._pure_hotpath import configure as configure_hot_path
    from ._pure_http import parse_head
