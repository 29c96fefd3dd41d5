"""Echo server: every message back as it came (text as text, binary as binary), on path /.

    python -m corral.examples.echo --host 127.0.0.1 --port 9001

Messages up to 16 MiB (``--max-message-size``), the largest the conformance suite sends, in
any number of fragments. permessage-deflate and x-webkit-deflate-frame are accepted when a
client offers them (``--no-compression`` to refuse).
"""

from __future__ import annotations

import argparse
import logging

from corral import DeflateSettings, Handler, Options, Router, WebSocket, run


class Echo(Handler):
    """Echo each message; the callback style, with no task or future per message."""

    def on_message(self, ws: WebSocket, message: str | bytes) -> None:
        ws.send(message)


def app() -> Router:
    return Router().websocket("/", Echo)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9001)
    parser.add_argument("--max-message-size", type=int, default=16 * 2**20 + 1024)
    parser.add_argument("--no-compression", action="store_true")
    parser.add_argument("--log-level", default="WARNING")
    args = parser.parse_args(argv)
    logging.basicConfig(level=args.log_level.upper())
    options = Options(
        max_message_size=args.max_message_size,
        max_fragments=None,
        allowed_origins=("*",),
        compression=None if args.no_compression else DeflateSettings(),
    )
    run(app(), args.host, args.port, options=options)


if __name__ == "__main__":
    main()
