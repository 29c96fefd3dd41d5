#!/usr/bin/env python3
"""What a message's fragments cost the receiving connection, in the sans-I/O core alone.

    .venv/bin/python bench/fragments.py              # 65,536 frames per case, 3 reps
    .venv/bin/python bench/fragments.py --quick      # 4,096 frames per case, 1 rep
    CORRAL_PURE=1 .venv/bin/python bench/fragments.py

It is the measurement behind ``FRAME_CHARGE`` (docs/limits.md, "Fragments"): one message
in continuation frames of 0, 1, 16, 64 and 1024 bytes, against the same number of empty
pings and of one-byte messages, fed to a server-side ``Connection`` in 64 KiB reads. It
prints CPU time per frame and per byte on the wire. A tiny fragment costs about what a ping
or a one-byte message costs, so per byte received a flood of fragments is no worse than
those; the charge only bounds how many frames one message may take.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

from corral.accel import COMPILED
from corral.protocol.connection import Connection, Side
from corral.protocol.events import Failed
from corral.protocol.frames import Opcode, serialize_frame

MASK = b"\x01\x02\x03\x04"
READ = 64 * 1024


def fragmented(frames: int, size: int) -> bytes:
    """One binary message in ``frames`` frames of ``size`` bytes each."""
    first = serialize_frame(Opcode.BINARY, bytes(size), fin=False, mask=MASK)
    middle = serialize_frame(Opcode.CONTINUATION, bytes(size), fin=False, mask=MASK)
    last = serialize_frame(Opcode.CONTINUATION, bytes(size), fin=True, mask=MASK)
    return first + middle * (frames - 2) + last


def repeated(frames: int, opcode: Opcode, payload: bytes) -> bytes:
    return serialize_frame(opcode, payload, mask=MASK) * frames


def feed(wire: bytes) -> float:
    """Seconds of CPU to take ``wire`` in 64 KiB reads (answers to pings included)."""
    conn = Connection(Side.SERVER, max_message_size=None)
    start = time.process_time()
    for offset in range(0, len(wire), READ):
        events = conn.receive_data(wire[offset : offset + READ])
        conn.data_to_send()
        assert not any(isinstance(event, Failed) for event in events)
    return time.process_time() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="a smoke run")
    args = parser.parse_args()
    frames, reps = (4096, 1) if args.quick else (65536, 3)
    cases: list[tuple[str, Callable[[], bytes]]] = [
        (f"fragments of {size} B", lambda size=size: fragmented(frames, size))  # type: ignore[misc]
        for size in (0, 1, 16, 64, 1024)
    ]
    cases.append(("empty pings", lambda: repeated(frames, Opcode.PING, b"")))
    cases.append(("1-byte messages", lambda: repeated(frames, Opcode.BINARY, b"x")))
    print(f"{'compiled' if COMPILED else 'pure Python'}, {frames} frames per case, "
          f"best of {reps}")
    print("| case | wire bytes | us per frame | ns per wire byte |")
    print("|---|---|---|---|")
    for name, make in cases:
        wire = make()
        seconds = min(feed(wire) for _ in range(reps)) if reps > 1 else feed(wire)
        print(f"| {name} | {len(wire)} | {seconds / frames * 1e6:.2f} "
              f"| {seconds / len(wire) * 1e9:.1f} |")


if __name__ == "__main__":
    main()
