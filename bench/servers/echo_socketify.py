"""socketify echo server for bench/run.py: uWebSockets (C++ through CFFI), path "/".

One Python callback per message, which sends it back with its own opcode. Compression off,
64 MiB messages, no idle timeout, no automatic pings, a large backpressure limit. Needs the
system's libuv (Debian: libuv1). Stops on SIGTERM (the default action) or SIGINT.
"""

from __future__ import annotations

import argparse
from typing import Any

from socketify import App, AppListenOptions, CompressOptions, OpCode

MAX = 64 * 2**20


def echo(ws: Any, message: Any, opcode: OpCode) -> None:
    ws.send(message, opcode)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    port = parser.parse_args().port
    app = App()
    app.ws("/", {
        "compression": CompressOptions.DISABLED,
        "max_payload_length": MAX,
        "idle_timeout": 0,
        "max_backpressure": 4 * MAX,
        "send_pings_automatically": False,
        "message": echo,
    })
    app.listen(AppListenOptions(port=port, host="127.0.0.1"), lambda config: None)
    app.run()
