"""corral echo server for bench/run.py: the echo example's handler (callback style) on "/".

    python bench/servers/echo_corral.py --port 9001          # compiled fast path when built
    CORRAL_PURE=1 python bench/servers/echo_corral.py --port 9001

Compression off, messages and frames up to 64 MiB, no keepalive pings, no idle timeout (the
idle-connection test must keep its connections). Listens on 127.0.0.1; corral.run stops it
on SIGTERM/SIGINT.
"""

from __future__ import annotations

import argparse

import corral
import corral.accel
from corral import Options, Router
from corral.examples.echo import Echo

MAX = 64 * 2**20


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    options = Options(
        max_message_size=MAX,
        max_frame_size=MAX,
        idle_timeout=None,
        ping_interval=None,
        compression=None,
    )
    print(f"corral compiled={corral.accel.COMPILED}", flush=True)
    corral.run(Router().websocket("/", Echo), "127.0.0.1", args.port, options=options)


if __name__ == "__main__":
    main()
