"""corral.options: what a caller who names an option that does not exist is told."""

from __future__ import annotations

import pytest

from corral import Options


def test_a_removed_option_names_what_replaced_it() -> None:
    with pytest.raises(TypeError, match="option max_fragments was removed: any number of"):
        Options().replace(max_fragments=None)


def test_an_unknown_option_is_named() -> None:
    with pytest.raises(TypeError, match="unknown option\\(s\\): max_fragmentz"):
        Options().replace(max_fragmentz=None)
