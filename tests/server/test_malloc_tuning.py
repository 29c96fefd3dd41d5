"""corral.run() keeps freed large buffers in the heap on glibc (docs/speed.md)."""

from __future__ import annotations

import ctypes.util
import platform

import pytest

from corral.server.serve import MALLOC_TUNING, tune_malloc


@pytest.mark.skipif(platform.system() != "Linux" or platform.libc_ver()[0] != "glibc",
                    reason="mallopt tuning is for glibc")
def test_tune_malloc_sets_every_parameter_on_glibc() -> None:
    assert ctypes.util.find_library("c") is not None
    assert tune_malloc() is True
    assert set(MALLOC_TUNING) == {-1, -2, -3}  # M_TRIM_THRESHOLD, M_TOP_PAD, M_MMAP_THRESHOLD
