# Stub of the C extension; the signature is that of corral._pure_http, its source of truth.
from ._pure_http import Head

REPEATING: frozenset[str]

def parse_head(
    data: bytes | bytearray,
    pos: int,
    max_request_line: int,
    max_header_count: int,
    max_header_bytes: int,
    /,
) -> Head | None: ...
