# Stub of the C extension; the signatures are those of corral._pure, its source of truth.
from ._pure import Buffer, FrameHead, ParsedFrame
from ._pure import PayloadBuffer as PayloadBuffer

def apply_mask(data: Buffer, mask: Buffer, offset: int = 0) -> bytes: ...
def apply_mask_in_place(data: Buffer, mask: Buffer, offset: int = 0) -> None: ...

def build_frame(
    opcode: int,
    payload: Buffer,
    fin: bool = True,
    rsv: int = 0,
    mask: Buffer | None = None,
) -> bytes: ...
def parse_frames(
    buf: Buffer, pos: int, require_mask: bool, max_frame_size: int, /
) -> tuple[list[ParsedFrame], int, int, str, FrameHead | None]: ...
def frame_header(opcode: int, length: int, fin: bool = True, rsv: int = 0) -> bytes: ...
