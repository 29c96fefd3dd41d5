"""corral broadcast server for bench/fanout.py: the echo example's ``/broadcast`` handler.

    python bench/servers/broadcast_corral.py --port 9001                  # memory broker
    python bench/servers/broadcast_corral.py --port 9001 --broker redis://127.0.0.1:6379/0

Every connection on ``/broadcast`` is subscribed to one topic; every message one sends is
published to it (``ws.publish``), so all of them get it, the sender included. Several
processes given the same ``--broker redis://...`` share the topic. The handler is
``corral.examples.echo.Broadcast`` itself; only the options differ from the example's, as
for the other bench servers: compression off, no idle timeout and no keepalive pings (the
subscribers never send), 64 MiB messages. Listens on 127.0.0.1; stops on SIGTERM/SIGINT.
"""

from __future__ import annotations

import argparse

import corral
import corral.accel
from corral import Options, Router
from corral.examples.echo import Broadcast

MAX = 64 * 2**20


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--broker", default=None, help="memory (default) or redis://host:port/db")
    args = parser.parse_args()
    options = Options(
        max_message_size=MAX,
        max_frame_size=MAX,
        idle_timeout=None,
        ping_interval=None,
        compression=None,
    )
    print(f"corral compiled={corral.accel.COMPILED} broker={args.broker or 'memory'}", flush=True)
    corral.run(Router().websocket("/broadcast", Broadcast), "127.0.0.1", args.port,
               options=options, broker=args.broker)


if __name__ == "__main__":
    main()
