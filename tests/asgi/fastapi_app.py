"""The FastAPI application of tests/asgi/test_frameworks.py, importable by ``corral run``
(``fastapi_app:app``) as a user's would be. Every answer names the worker's PID, so a test
can tell workers apart."""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator
from typing import Any

from fastapi import FastAPI, Request, WebSocket, WebSocketDisconnect
from fastapi.responses import JSONResponse, StreamingResponse

import corral.asgi
import corral.metrics


@contextlib.asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[dict[str, Any]]:
    yield {"greeting": "hello from lifespan"}


app = FastAPI(lifespan=lifespan)
app.add_route("/metrics", corral.metrics.asgi_metrics())


@app.get("/hello")
async def hello(request: Request) -> dict[str, Any]:
    return {"greeting": request.state.greeting, "pid": os.getpid(),
            "client": request.client.host if request.client else None}


@app.post("/items")
async def create_item(item: dict[str, Any]) -> dict[str, Any]:
    return {"created": item}


@app.get("/count")
async def count(n: int = 3) -> StreamingResponse:
    async def numbers() -> AsyncIterator[bytes]:
        for i in range(n):
            yield f"{i}\n".encode()
            await asyncio.sleep(0)
    return StreamingResponse(numbers(), media_type="text/plain")


@app.post("/announce/{room}")
async def announce(room: str, request: Request) -> dict[str, Any]:
    """Publish to a room's WebSockets from plain HTTP (every worker, through the broker)."""
    heard = await corral.asgi.publish(request, f"room:{room}", (await request.body()).decode())
    return {"published": True, "processes": heard}


@app.websocket("/echo")
async def echo(websocket: WebSocket) -> None:
    offered = websocket.scope["subprotocols"]
    await websocket.accept(subprotocol="v1" if "v1" in offered else None)
    try:
        while True:
            await websocket.send_text(await websocket.receive_text())
    except WebSocketDisconnect:
        pass


@app.websocket("/private")
async def private(websocket: WebSocket) -> None:
    if websocket.headers.get("authorization") != "Bearer secret":
        await websocket.send_denial_response(
            JSONResponse({"error": "who are you?"}, status_code=403))
        return
    await websocket.accept()
    await websocket.send_json({"welcome": True})
    await websocket.close()


@app.websocket("/rooms/{room}")
async def chat(websocket: WebSocket, room: str) -> None:
    """A chat room: each message goes to every member in every worker, written by corral;
    no coroutine per member here."""
    await websocket.accept()
    corral.asgi.subscribe(websocket, f"room:{room}")
    await websocket.send_text(f"joined {room} in {os.getpid()}")
    try:
        while True:
            text = await websocket.receive_text()
            await corral.asgi.publish(websocket, f"room:{room}", text)
    except WebSocketDisconnect:
        pass
