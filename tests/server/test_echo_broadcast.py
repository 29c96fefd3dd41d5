"""The echo example's ``/broadcast`` path on one process (memory broker): every client is
subscribed, every message is published to all of them, the sender included, in order; ``/``
still echoes to the sender alone. (Across processes through Redis: test_redis_fanout.py.)"""

from __future__ import annotations

import asyncio

import pytest

import corral
from corral.examples import echo

pytestmark = pytest.mark.usefixtures("clean_logs", "no_leftover_tasks")


async def test_broadcast_reaches_every_client_sender_included() -> None:
    async with corral.serve(echo.app(), port=0) as server:
        url = f"ws://127.0.0.1:{server.port}"
        clients = [await corral.connect(f"{url}/broadcast") for _ in range(5)]
        plain = await corral.connect(f"{url}/")
        try:
            for _ in range(200):  # every client's subscription is in place once counted
                if server.subscriber_count("broadcast") == 5:
                    break
                await asyncio.sleep(0.01)
            assert server.subscriber_count("broadcast") == 5
            await clients[0].send("one")
            await clients[3].send(b"\x00two")
            for client in clients:
                assert await asyncio.wait_for(client.recv(), 5) == "one"
                assert await asyncio.wait_for(client.recv(), 5) == b"\x00two"
            await plain.send("just me")
            assert await asyncio.wait_for(plain.recv(), 5) == "just me"
            # The plain echo client is not subscribed: a broadcast does not reach it.
            await clients[1].send("three")
            for client in clients:
                assert await asyncio.wait_for(client.recv(), 5) == "three"
            await plain.send("still just me")
            assert await asyncio.wait_for(plain.recv(), 5) == "still just me"
        finally:
            for client in [*clients, plain]:
                await client.close()
        for _ in range(200):
            if server.subscriber_count("broadcast") == 0:
                break
            await asyncio.sleep(0.01)
        assert server.topic_names() == frozenset()
