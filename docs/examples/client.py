"""Clients for the chat rooms of chat.py: one says something and leaves, one listens."""

import asyncio
import sys

import corral


async def say(url: str, text: str) -> list[str]:
    """Send ``text`` to the room and return what the room said until it came back."""
    heard: list[str] = []
    async with corral.connect(url) as ws:  # closes the connection (1000) on the way out
        await ws.send(text)
        async for message in ws:  # everything said in the room, ours included
            heard.append(message)
            if message.endswith(f": {text}"):
                break
    return heard


async def listen(url: str) -> None:
    """Print what the room says, forever: reconnects when the server goes away."""
    async with corral.connect(url, reconnect=True) as ws:
        async for message in ws:
            print(message, flush=True)


if __name__ == "__main__":
    room = "ws://127.0.0.1:8000/room/lobby"
    if sys.argv[1:] == ["listen"]:
        asyncio.run(listen(f"{room}?name=listener"))
    else:
        for line in asyncio.run(say(f"{room}?name=ada", " ".join(sys.argv[1:]) or "hello")):
            print(line)
