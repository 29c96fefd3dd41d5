"""Chat rooms: /room/{room}?name=... Every message goes to everyone in the room (the
sender too), through the server's pub/sub broker: in memory, or Redis for several
processes."""

import corral


class Room(corral.Handler):
    def upgrade(self, request: corral.Request) -> corral.Accept:
        # Runs before the connection is open: keep what the request says about it.
        self.topic = "room:" + request.path_params["room"]
        self.name = request.query_param("name") or "anonymous"
        return corral.Accept()

    def on_open(self, ws: corral.WebSocket) -> None:
        ws.subscribe(self.topic)  # left by itself when the connection ends
        ws.publish(self.topic, f"* {self.name} joined")

    def on_message(self, ws: corral.WebSocket, message: str | bytes) -> corral.Close | None:
        if not isinstance(message, str):
            return corral.Close(1003, "text only")
        ws.publish(self.topic, f"{self.name}: {message}")
        return None

    def on_info(self, ws: corral.WebSocket, info: object) -> corral.Text | None:
        # A publish the broker could not take (Redis down) comes back here.
        if isinstance(info, corral.PublishFailed):
            return corral.Text(f"! not sent: {info.message!r}")
        return None

    def on_close(self, ws: corral.WebSocket, reason: corral.CloseReason) -> None:
        ws.publish(self.topic, f"* {self.name} left")


router = corral.Router().websocket("/room/{room}", Room)

if __name__ == "__main__":
    corral.run(router, "127.0.0.1", 8000)
