"""What the fuzz targets share: reading a fuzzer input, cutting a stream into reads, running.

Every target reads its input the same way (:class:`Input`): a few configuration bytes
first, then a cut plan (how the stream is split into reads), then the stream itself. The
seed generator (``seeds.py``) writes seeds in that layout, so the fuzzer starts from
well-formed frames and requests and mutates the configuration and the cuts with them.

Nothing here imports corral: a target imports it inside ``atheris.instrument_imports`` so
that its Python code reports coverage. :func:`use_sanitized_speedups` must run first, so the
sanitizer build of ``corral._speedups`` (``scripts/fuzz.sh --sanitize``) is the one that
``corral.accel`` picks.
"""

from __future__ import annotations

import importlib.machinery
import importlib.util
import os
import sys
from collections.abc import Callable, Iterator, Sequence
from typing import Any

#: Where scripts/fuzz.sh --sanitize puts the ASan/UBSan build of corral._speedups.
SPEEDUPS_ENV = "CORRAL_FUZZ_SPEEDUPS"
#: ... and of corral._hotpath.
HOTPATH_ENV = "CORRAL_FUZZ_HOTPATH"
#: The modules whose Python code reports coverage (the rest of corral is not fuzzed here).
INSTRUMENTED = ["corral._pure", "corral.accel", "corral.exceptions", "corral.protocol"]


class Disagreement(AssertionError):
    """Two implementations, or two ways of feeding one, gave different results."""


def check(condition: bool, what: str, *details: object) -> None:
    """Raise :class:`Disagreement` (a crash for the fuzzer) unless ``condition`` holds."""
    if not condition:
        raise Disagreement(" | ".join([what, *(repr(d)[:2000] for d in details)]))


def use_sanitized_speedups() -> str | None:
    """Load the sanitizer builds named by ``CORRAL_FUZZ_SPEEDUPS`` and
    ``CORRAL_FUZZ_HOTPATH`` as ``corral._speedups`` and ``corral._hotpath``.

    Put in ``sys.modules`` before corral is imported, they are what ``corral.accel`` imports
    (the editable install's own modules are never touched). Returns the first path, or None.
    """
    first = None
    for env, name in ((SPEEDUPS_ENV, "corral._speedups"), (HOTPATH_ENV, "corral._hotpath")):
        path = os.environ.get(env)
        if not path:
            continue
        loader = importlib.machinery.ExtensionFileLoader(name, path)
        spec = importlib.util.spec_from_file_location(name, path, loader=loader)
        if spec is None:
            raise ImportError(f"cannot load {path}")
        module = importlib.util.module_from_spec(spec)
        loader.exec_module(module)
        sys.modules[name] = module
        print(f"fuzz: {name} from {path}", file=sys.stderr)
        first = first or path
    return first


class Input:
    """A cursor over one fuzzer input. Reading past the end yields zeros, so every input,
    however short, is a valid one (the fuzzer wastes no time on rejected inputs)."""

    __slots__ = ("data", "pos")

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def byte(self) -> int:
        if self.pos >= len(self.data):
            return 0
        self.pos += 1
        return self.data[self.pos - 1]

    def flag(self, value: int, bit: int) -> bool:
        return bool(value >> bit & 1)

    def u16(self) -> int:
        return self.byte() << 8 | self.byte()

    def pick(self, choices: Sequence[Any]) -> Any:
        return choices[self.byte() % len(choices)]

    def take(self, n: int) -> bytes:
        piece = self.data[self.pos : self.pos + n]
        self.pos += len(piece)
        return piece

    def cuts(self) -> list[int]:
        """A cut plan: one byte for the number of reads, then one byte per read size.

        Sizes 0-127 are taken as they are (0: an empty read); 128-255 stand for large reads
        of (n - 127) * 512 bytes, so a plan of a few bytes can also walk through a 64 KiB
        payload (``Connection.payload_buffer`` only offers views that large)."""
        sizes = []
        for _ in range(self.byte() % 32):
            size = self.byte()
            sizes.append(size if size < 128 else (size - 127) * 512)
        return sizes

    def rest(self) -> bytes:
        piece = self.data[self.pos :]
        self.pos = len(self.data)
        return piece


def cut(data: bytes, sizes: Sequence[int]) -> Iterator[bytes]:
    """``data`` in reads of the planned sizes, the rest as one last read (always given, so
    an empty stream is still one empty read)."""
    pos = 0
    for size in sizes:
        yield data[pos : pos + size]
        pos = min(len(data), pos + size)
    yield data[pos:]


def outcome(fn: Callable[..., Any], *args: Any) -> tuple[str, Any]:
    """What a call returned, or the type and text of what it raised (to compare two)."""
    try:
        return "ok", fn(*args)
    except Exception as exc:
        return type(exc).__name__, str(exc)


def main(test_one_input: Callable[[bytes], None]) -> None:
    """Run ``test_one_input`` under atheris with the command line's libFuzzer flags."""
    import atheris

    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()
