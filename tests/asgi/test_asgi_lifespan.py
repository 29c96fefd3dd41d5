"""The ASGI ``lifespan`` scope, telling an ASGI application from corral's own kinds, and
``corral run`` serving one (a real process)."""

from __future__ import annotations

import asyncio
import logging
import sys
import textwrap
import urllib.request
from pathlib import Path
from typing import Any

import pytest

import corral
from corral.asgi import is_asgi_app
from corral.cli import find_app
from helpers import Receive, Scope, Send, free_port

pytestmark = pytest.mark.usefixtures("clean_logs", "no_leftover_tasks")



def lifespan_app(log: list[str], *, fail: str = "") -> Any:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                log.append(message["type"])
                if message["type"] == "lifespan.startup":
                    if fail == "startup":
                        await send({"type": "lifespan.startup.failed", "message": "no db"})
                        return
                    scope["state"]["db"] = "connected"
                    await send({"type": "lifespan.startup.complete"})
                else:
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        elif scope["type"] == "http":
            await receive()
            log.append(f"request state={scope['state']}")
            scope["state"]["db"] = "changed by a request"  # its own copy
            await send({"type": "http.response.start", "status": 204, "headers": []})
            await send({"type": "http.response.body"})
    return app


def get(port: int, path: str = "/") -> int:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as response:
        return int(response.status)


async def test_startup_before_listening_state_per_request_shutdown_after() -> None:
    log: list[str] = []
    async with corral.serve(lifespan_app(log), "127.0.0.1", 0) as server:
        assert log == ["lifespan.startup"]
        assert await asyncio.to_thread(get, server.port) == 204
        assert await asyncio.to_thread(get, server.port) == 204
    assert log == ["lifespan.startup", "request state={'db': 'connected'}",
                   "request state={'db': 'connected'}", "lifespan.shutdown"]


async def test_a_failed_startup_serves_nothing(caplog: pytest.LogCaptureFixture) -> None:
    log: list[str] = []
    with pytest.raises(corral.StartupError, match="lifespan startup") as failed:
        await corral.serve(lifespan_app(log, fail="startup"), "127.0.0.1", 0)
    assert "no db" in str(failed.value.__cause__)


@pytest.mark.parametrize("kind", ["raises", "returns"])
async def test_an_application_without_lifespan_is_served(
    caplog: pytest.LogCaptureFixture, kind: str,
) -> None:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            if kind == "raises":
                raise ValueError(f"unknown scope {scope['type']}")
            return
        await receive()
        assert "state" not in scope
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    caplog.set_level(logging.INFO, "corral.asgi")
    async with corral.serve(app, "127.0.0.1", 0) as server:
        assert await asyncio.to_thread(get, server.port) == 200
    assert any("does not support lifespan" in r.getMessage() for r in caplog.records)


async def test_an_exception_in_startup_unanswered_serves_without_lifespan(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The spec: an exception on the lifespan scope means no lifespan, and the server goes
    on; stopping it is what lifespan.startup.failed is for (Starlette sends it)."""
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await receive()
            raise ConnectionRefusedError("database down")
        await receive()
        await send({"type": "http.response.start", "status": 204, "headers": []})
        await send({"type": "http.response.body"})

    async with corral.serve(app, "127.0.0.1", 0) as server:
        assert await asyncio.to_thread(get, server.port) == 204
    warned = [r for r in caplog.records if "raised in its lifespan startup" in r.getMessage()]
    assert len(warned) == 1 and warned[0].levelno == logging.WARNING


class Starlettish:
    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """An application object, as Starlette and FastAPI are."""


async def asgi_function(scope: Scope, receive: Receive, send: Send) -> None:
    """A plain ASGI function."""


async def corral_handler(ws: Any) -> None:
    """corral's async for style."""


def test_telling_an_asgi_application_apart() -> None:
    assert is_asgi_app(asgi_function) and is_asgi_app(Starlettish())
    assert not is_asgi_app(corral_handler) and not is_asgi_app(corral.Router())
    assert not is_asgi_app(corral.Handler) and not is_asgi_app(Starlettish)
    assert not is_asgi_app(lambda scope, receive, send: None)  # not a coroutine function


def test_corral_run_finds_an_asgi_application(tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "asgimod.py").write_text(textwrap.dedent("""
        async def app(scope, receive, send):
            pass

        def make():
            return app
    """))
    monkeypatch.syspath_prepend(str(tmp_path))
    found, factory = find_app("asgimod:app")
    assert (found.__name__, factory) == ("app", False)
    assert find_app("asgimod:make")[1] is True


async def test_corral_run_serves_an_asgi_application_with_its_root_path(
    tmp_path: Path,
) -> None:
    (tmp_path / "rootapp.py").write_text(textwrap.dedent("""
        async def app(scope, receive, send):
            if scope["type"] != "http":
                return
            await receive()
            body = (scope["root_path"] + " " + scope["path"]).encode()
            await send({"type": "http.response.start", "status": 200, "headers": []})
            await send({"type": "http.response.body", "body": body})
    """))
    port = free_port()
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "corral", "run", "rootapp:app", "--port", str(port),
        "--root-path", "/api", "--interface", "asgi", cwd=tmp_path,
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE)
    try:
        def fetch() -> bytes:
            for _ in range(100):
                try:
                    with urllib.request.urlopen(f"http://127.0.0.1:{port}/items",
                                                timeout=5) as response:
                        return bytes(response.read())
                except OSError:
                    import time
                    time.sleep(0.05)
            raise AssertionError("the server never answered")

        assert await asyncio.to_thread(fetch) == b"/api /api/items"
    finally:
        process.terminate()
        await asyncio.wait_for(process.communicate(), 15)
    assert process.returncode == 0
