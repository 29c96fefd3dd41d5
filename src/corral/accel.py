"""The one place that picks corral's compiled fast path or its pure-Python reference.

``corral._speedups`` (C) and ``corral._pure`` implement the same functions with the same
results; the pure module is the source of truth and the tests run the whole suite in both
modes. The compiled module is used unless the environment sets ``CORRAL_PURE=1`` or it was not
built (no C compiler at install time). ``COMPILED`` says which one is in use.
"""

from __future__ import annotations

import os

__all__ = [
    "COMPILED",
    "PayloadBuffer",
    "apply_mask",
    "apply_mask_in_place",
    "build_frame",
    "parse_frames",
]

COMPILED = False
if os.environ.get("CORRAL_PURE") != "1":
    try:
        from ._speedups import (
            PayloadBuffer,
            apply_mask,
            apply_mask_in_place,
            build_frame,
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
        parse_frames,
    )
