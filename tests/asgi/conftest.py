"""The fixture of the ASGI tests: ``served(app, **options)`` starts a corral server for an
application on 127.0.0.1 (a free port) and closes it after the test."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest

import corral


@pytest.fixture
async def served() -> AsyncIterator[Callable[..., Awaitable[corral.Server]]]:
    servers: list[corral.Server] = []

    async def serve(app: Any, **options: Any) -> corral.Server:
        server = await corral.serve(app, "127.0.0.1", 0, **options)
        servers.append(server)
        return server

    yield serve
    for server in servers:
        await server.close()
