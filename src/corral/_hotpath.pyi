# Stub of the C extension; the signatures are those of corral._pure_hotpath, its twin.
from ._pure_hotpath import Counters as Counters
from ._pure_hotpath import HandleCore as HandleCore
from ._pure_hotpath import StreamCore as StreamCore
from ._pure_hotpath import configure as configure
