"""FastAPI (and so Starlette under it) on corral, against real clients: httpx for HTTP, the
websockets library and corral's client for WebSockets; and the chat room of
``fastapi_app.py`` across two ``corral run --workers`` processes over a real Redis."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest
import websockets

import corral
from helpers import eventually

pytestmark = pytest.mark.usefixtures("no_leftover_tasks")

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE))
from fastapi_app import app  # noqa: E402


async def test_http_routes_json_and_streaming() -> None:
    async with (corral.serve(app, "127.0.0.1", 0) as server,
                httpx.AsyncClient(base_url=f"http://127.0.0.1:{server.port}") as client):
        hello = (await client.get("/hello")).json()
        assert hello == {"greeting": "hello from lifespan", "pid": os.getpid(),
                         "client": "127.0.0.1"}
        created = await client.post("/items", json={"name": "corral", "stars": 5})
        assert (created.status_code, created.json()) == (
            200, {"created": {"name": "corral", "stars": 5}})
        invalid = await client.post("/items", content=b"not json",
                                    headers={"content-type": "application/json"})
        assert invalid.status_code == 422
        streamed = await client.get("/count", params={"n": 5})
        assert streamed.headers["transfer-encoding"] == "chunked"
        assert streamed.text == "0\n1\n2\n3\n4\n"
        assert (await client.get("/missing")).status_code == 404
        metrics = await client.get("/metrics")
        assert metrics.status_code == 200
        assert 'corral_http_responses_total{status="200",worker="0"} 3.0' in metrics.text
        # keep-alive: those went over one connection
        assert server.stats().connections_accepted == 1


async def test_websockets_with_the_websockets_library_and_corrals_client() -> None:
    async with corral.serve(app, "127.0.0.1", 0) as server:
        base = f"ws://127.0.0.1:{server.port}"
        async with websockets.connect(f"{base}/echo", subprotocols=["v2", "v1"]) as ws:
            assert ws.subprotocol == "v1"
            await ws.send("ping")
            assert await ws.recv() == "ping"
        async with corral.connect(f"{base}/echo") as client:
            await client.send("ping 2")
            assert await client.recv() == "ping 2"
        with pytest.raises(websockets.InvalidStatus) as denied:
            async with websockets.connect(f"{base}/private"):
                pass
        response = denied.value.response
        assert response.status_code == 403
        assert json.loads(response.body) == {"error": "who are you?"}
        async with corral.connect(f"{base}/private",
                                  headers=[("Authorization", "Bearer secret")]) as client:
            assert json.loads(await client.recv()) == {"welcome": True}
            with pytest.raises(corral.ConnectionClosedOK):
                await client.recv()
        stats = server.stats()
        assert (stats.handshakes["accepted"], stats.handshakes["rejected"]) == (3, 1)


async def test_a_chat_room_across_two_workers_over_redis(redis_server: Any) -> None:
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "corral", "run", "fastapi_app:app", "--workers", "2",
        "--port", "0", "--broker", redis_server.url, cwd=HERE,
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE)
    lines: list[str] = []

    async def read() -> None:
        assert process.stderr is not None
        while line := await process.stderr.readline():
            lines.append(line.decode(errors="replace"))

    reader = asyncio.create_task(read())
    members: list[corral.AsyncWebSocket] = []
    try:
        def where() -> str | None:
            for line in lines:
                found = re.search(r"workers on (ws://\S+)", line)
                if found:
                    return found[1]
            return None

        await eventually(lambda: where() is not None and
                         sum("corral serving on" in line for line in lines) == 2, timeout=20)
        url = where()
        assert url is not None
        pids: set[str] = set()
        for _ in range(60):  # the kernel spreads connections over the workers
            member = await corral.connect(f"{url}/rooms/lobby")
            assert isinstance(member, corral.AsyncWebSocket)
            members.append(member)
            joined = await asyncio.wait_for(member.recv(), 10)
            assert isinstance(joined, str)
            pids.add(joined.rsplit(" ", 1)[1])
            if len(pids) == 2 and len(members) >= 3:
                break
        assert len(pids) == 2, f"every member joined the same worker: {pids}"

        await members[0].send("hello, lobby")
        for member in members:
            assert await asyncio.wait_for(member.recv(), 10) == "hello, lobby"
        async with httpx.AsyncClient(base_url=url.replace("ws://", "http://")) as client:
            answer = (await client.post("/announce/lobby", content=b"from HTTP")).json()
        assert answer == {"published": True, "processes": 2}
        for member in members:
            assert await asyncio.wait_for(member.recv(), 10) == "from HTTP"
    finally:
        for member in members:
            await member.close()
        if process.returncode is None:
            process.send_signal(signal.SIGTERM)
        await asyncio.wait_for(process.wait(), 20)
        await asyncio.wait_for(reader, 20)
    assert process.returncode == 0, "".join(lines)
