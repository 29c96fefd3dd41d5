"""The same echo server in the `async for` style: code that reads top to bottom."""

import corral


async def echo(ws: corral.AsyncWebSocket) -> None:
    async for message in ws:  # ends when the client closes
        await ws.send(message)


if __name__ == "__main__":
    corral.run(echo, "127.0.0.1", 8000)  # one handler alone serves every path
