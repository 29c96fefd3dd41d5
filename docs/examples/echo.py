"""An echo server in the callback style: every message goes back as it came."""

import corral


class Echo(corral.Handler):
    """One instance per connection; corral calls it once per message."""

    def on_message(self, ws: corral.WebSocket, message: str | bytes) -> str | bytes:
        return message  # returned as it is, it is sent: str as text, bytes as binary


router = corral.Router().websocket("/echo", Echo)

if __name__ == "__main__":
    corral.run(router, "127.0.0.1", 8000)  # Ctrl-C closes the connections (1001) and exits
