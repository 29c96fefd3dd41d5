"""socketify broadcast server for bench/fanout.py: uWebSockets' own pub/sub, path "/broadcast".

Every connection subscribes to one topic when it opens (``ws.subscribe``); every message one
sends is published to the topic with ``app.publish`` (through ``ws.publish``, which socketify
routes to it), so the sender gets it too, as in the other broadcast servers; uWebSockets
frames it once and writes it to every subscriber in C++. Compression off, 64 MiB messages, no
idle timeout, no automatic pings, a large backpressure limit (over it uWebSockets would skip a
subscriber). Needs the system's libuv (Debian: libuv1). Stops on SIGTERM (the default
action) or SIGINT.
"""

from __future__ import annotations

import argparse
from typing import Any

from socketify import App, AppListenOptions, CompressOptions, OpCode

MAX = 64 * 2**20
TOPIC = "broadcast"


def on_open(ws: Any) -> None:
    ws.subscribe(TOPIC)


def on_message(ws: Any, message: Any, opcode: OpCode) -> None:
    ws.publish(TOPIC, message, opcode)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    port = parser.parse_args().port
    app = App()
    app.ws("/broadcast", {
        "compression": CompressOptions.DISABLED,
        "max_payload_length": MAX,
        "idle_timeout": 0,
        "max_backpressure": 4 * MAX,
        "send_pings_automatically": False,
        "open": on_open,
        "message": on_message,
    })
    app.listen(AppListenOptions(port=port, host="127.0.0.1"), lambda config: None)
    app.run()
