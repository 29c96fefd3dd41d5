"""Fuzz target ``session``: the compiled hot path (corral._hotpath) does what the Python
session does, for any byte stream cut into any reads.

Two server connections get the input's stream, cut the same way: one reads through a bound
``StreamProtocol`` (whole plain messages go to the handler in C), the other through an
unbound one (every read goes to ``Session.data_received``). Their handler answers each
message by its first character (echo with ``ws.send``, return commands, close, raise,
pause, go async: ``tests/server/test_hot_path.py``'s ``Scripted``, whose driver this target
reuses). What they write, what their handlers see and how they end must be the same.

Without the compiled modules (pure mode) both sides are the same Python session: the
target then only checks that nothing escapes it. ``scripts/fuzz.sh --sanitize`` runs it
against ASan+UBSan builds of both C modules.
"""

from __future__ import annotations

import asyncio
import importlib.util
import logging
import sys
from pathlib import Path
from typing import Any

import atheris
from _harness import Input, check, main, use_sanitized_speedups

use_sanitized_speedups()
with atheris.instrument_imports(include=["corral.session", "corral.transport",
                                         "corral.websocket", "corral.protocol"]):
    import corral.accel
    import corral.session  # instrumented here, before the driver imports it


def _driver() -> Any:
    """tests/server/test_hot_path.py, for its scripted handler and its run(); with tests/
    on sys.path for the helpers it imports, as tests/conftest.py does under pytest."""
    tests = Path(__file__).resolve().parent.parent / "tests"
    if str(tests) not in sys.path:
        sys.path.insert(0, str(tests))
    path = tests / "server" / "test_hot_path.py"
    spec = importlib.util.spec_from_file_location("_hot_path_driver", path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load {path}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


if not corral.accel.COMPILED:
    print("fuzz_session: pure mode, no compiled hot path to compare", file=sys.stderr)
_run = _driver().run
logging.disable(logging.CRITICAL)  # the scripted handler's crashes are expected, not news
_loop = asyncio.new_event_loop()
_MAX_STREAM = 64 * 1024


def test_one_input(data: bytes) -> None:
    source = Input(data)
    sizes = source.cuts()
    stream = source.rest()[:_MAX_STREAM]
    cuts, pos = [], 0
    for size in sizes:
        pos = min(len(stream), pos + size)
        cuts.append(pos)
    hot = _loop.run_until_complete(_run(stream, cuts, hot=True))
    reference = _loop.run_until_complete(_run(stream, cuts, hot=False))
    check(hot == reference, "the hot path and the session disagree", stream[:200], cuts, hot,
          reference)


if __name__ == "__main__":
    main(test_one_input)
