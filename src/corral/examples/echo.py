"""Echo server: every message back as it came (text as text, binary as binary), on path /.

    python -m corral.examples.echo --host 127.0.0.1 --port 9001

On ``/broadcast`` every client is subscribed to one topic, and every message a client sends
is published to it: all of them get it, the sender too. With ``--broker redis://...`` several
echo processes (on one machine or many) share that topic.

Messages up to 16 MiB (``--max-message-size``), the largest the conformance suite sends, in
any number of fragments. permessage-deflate and x-webkit-deflate-frame are accepted when a
client offers them (``--no-compression`` to refuse).
"""

from __future__ import annotations

import argparse
import logging

from corral import DeflateSettings, Handler, Options, PublishFailed, Router, WebSocket, run


class Echo(Handler):
    """Echo each message; the callback style, with no task or future per message."""

    def on_message(self, ws: WebSocket, message: str | bytes) -> None:
        ws.send(message)


class Broadcast(Handler):
    """Publish each message to everyone on ``/broadcast`` (the fan-out benchmark's path).

    A publish the broker cannot take (Redis away) is logged and counted by the server; the
    sender is told with an error message, so nothing is lost without a word."""

    topic = "broadcast"

    def on_open(self, ws: WebSocket) -> None:
        ws.subscribe(self.topic)

    def on_message(self, ws: WebSocket, message: str | bytes) -> None:
        ws.publish(self.topic, message)

    def on_info(self, ws: WebSocket, info: object) -> None:
        if isinstance(info, PublishFailed):
            ws.send(f"error: not broadcast: {info.error.reason}")


def app() -> Router:
    return Router().websocket("/", Echo).websocket("/broadcast", Broadcast)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9001)
    parser.add_argument("--max-message-size", type=int, default=16 * 2**20 + 1024)
    parser.add_argument("--no-compression", action="store_true")
    parser.add_argument("--broker", default=None,
                        help="what /broadcast publishes through: memory (default) or "
                             "redis://host:port/db to share it between processes")
    parser.add_argument("--log-level", default="WARNING")
    args = parser.parse_args(argv)
    logging.basicConfig(level=args.log_level.upper())
    options = Options(
        max_message_size=args.max_message_size,
        allowed_origins=("*",),
        compression=None if args.no_compression else DeflateSettings(),
    )
    run(app(), args.host, args.port, options=options, broker=args.broker)


if __name__ == "__main__":
    main()
