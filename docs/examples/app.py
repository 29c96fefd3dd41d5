"""One port, several routes: two WebSocket endpoints and plain HTTP beside them."""

import time

import corral


class Echo(corral.Handler):
    def on_message(self, ws: corral.WebSocket, message: str | bytes) -> str | bytes:
        return message


async def shout(ws: corral.AsyncWebSocket) -> None:
    async for message in ws:
        if isinstance(message, bytes):
            await ws.close(1003, "text only")  # 1003: a kind of data this endpoint refuses
            return
        await ws.send(message.upper())


def health(request: corral.Request) -> corral.Response:
    return corral.Response.json({"ok": True, "time": time.time()})


def hello(request: corral.Request) -> corral.Response:
    name = request.path_params["name"]  # what {name} matched in the path
    greeting = request.query_param("greeting", "hello")  # ?greeting=...
    return corral.Response.text(f"{greeting}, {name}\n")


router = corral.Router()
router.websocket("/echo", Echo)
router.websocket("/shout", shout)
router.http("/health", health, methods=["GET"])  # other methods get 405
router.http("/hello/{name}", hello)

if __name__ == "__main__":
    corral.run(router, "127.0.0.1", 8000)
