# Stub of the C extension; the signatures are those of corral._pure_http, its source of truth.
from ._pure_http import REPEATING as REPEATING
from ._pure_http import parse_head as parse_head
