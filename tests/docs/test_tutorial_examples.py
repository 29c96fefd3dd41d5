"""The programs of the tutorial and the how-to guides (docs/examples/*.py), run as the pages
say: each server on 127.0.0.1 with corral's own client talking to it. The pages include
these files as they are (pymdownx.snippets), so a page that stops matching the library
fails here."""

from __future__ import annotations

import asyncio
import importlib.util
import json
import logging
import re
import signal
import sys
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

import corral
from helpers import free_port

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "docs" / "examples"

pytestmark = pytest.mark.timeout(20)


def example(name: str) -> ModuleType:
    """docs/examples/NAME.py, imported fresh (its module-level state is the test's own)."""
    spec = importlib.util.spec_from_file_location(f"docs_example_{name}", EXAMPLES / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(autouse=True)
def no_errors_logged(caplog: pytest.LogCaptureFixture) -> Iterator[None]:
    """An example whose handler crashes logs it on ``corral``: that fails the test."""
    caplog.set_level(logging.WARNING)
    yield
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert not errors, errors


async def serving(app: Any, **kwargs: Any) -> tuple[corral.Server, str]:
    server = await corral.serve(app, "127.0.0.1", 0, **kwargs)
    return server, f"ws://127.0.0.1:{server.port}"


async def recv(ws: Any, timeout: float = 2.0) -> str | bytes:
    message: str | bytes = await asyncio.wait_for(ws.recv(), timeout)
    return message


async def http_get(url: str) -> tuple[int, str, str]:
    """Status, content type and body of a GET (urllib in a thread: no extra dependency)."""
    def get() -> tuple[int, str, str]:
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                return response.status, response.headers["Content-Type"], response.read().decode()
        except urllib.error.HTTPError as error:
            return error.code, error.headers["Content-Type"], error.read().decode()
    return await asyncio.to_thread(get)


# -- the tutorial ------------------------------------------------------------------------------


async def test_echo_callback_style() -> None:
    server, base = await serving(example("echo").router)
    async with server, corral.connect(f"{base}/echo") as ws:
        await ws.send("hello")
        assert await recv(ws) == "hello"
        await ws.send(b"\x00\x01")
        assert await recv(ws) == b"\x00\x01"  # binary stays binary


async def test_echo_async_style_on_every_path() -> None:
    server, base = await serving(example("echo_async").echo)
    async with server:
        for path in ("/", "/anything"):
            async with corral.connect(base + path) as ws:
                await ws.send("hi")
                assert await recv(ws) == "hi"


async def test_app_websockets_and_http_on_one_port() -> None:
    server, base = await serving(example("app").router)
    http = base.replace("ws://", "http://")
    async with server:
        async with corral.connect(f"{base}/echo") as ws:
            await ws.send("same")
            assert await recv(ws) == "same"
        async with corral.connect(f"{base}/shout") as ws:
            await ws.send("louder")
            assert await recv(ws) == "LOUDER"
            await ws.send(b"bytes")
            with pytest.raises(corral.ConnectionClosedError) as closed:
                await recv(ws)
            assert closed.value.code == 1003
        status, content_type, body = await http_get(f"{http}/health")
        assert (status, content_type) == (200, "application/json")
        assert json.loads(body)["ok"] is True
        assert (await http_get(f"{http}/hello/ada"))[::2] == (200, "hello, ada\n")
        assert (await http_get(f"{http}/hello/ada?greeting=hi"))[2] == "hi, ada\n"
        assert (await http_get(f"{http}/nowhere"))[0] == 404
        assert (await http_get(f"{http}/echo"))[0] == 426  # a WebSocket route


async def test_chat_room_pubsub() -> None:
    chat = example("chat")
    server, base = await serving(chat.router)
    async with server, corral.connect(f"{base}/room/lobby?name=ada") as ada:
        assert await recv(ada) == "* ada joined"
        async with corral.connect(f"{base}/room/lobby?name=bob") as bob:
            assert await recv(bob) == "* bob joined"
            assert await recv(ada) == "* bob joined"
            async with corral.connect(f"{base}/room/attic?name=eve") as eve:
                assert await recv(eve) == "* eve joined"
                await bob.send("hi all")
                assert await recv(ada) == "bob: hi all"
                assert await recv(bob) == "bob: hi all"  # the sender too
                await eve.send("anyone?")
                assert await recv(eve) == "eve: anyone?"  # rooms are apart
        assert await recv(ada) == "* bob left"
        await ada.send(b"binary")
        with pytest.raises(corral.ConnectionClosedError) as closed:
            await recv(ada)
        assert closed.value.code == 1003


async def test_chat_room_across_two_servers_on_redis(redis_server: Any) -> None:
    """What `corral run chat:router --workers 2 --broker redis://...` does: two processes
    on one Redis, here two servers in this one."""
    chat = example("chat")
    one, base_one = await serving(chat.router, broker=redis_server.url)
    two, base_two = await serving(chat.router, broker=redis_server.url)
    async with one, two, corral.connect(f"{base_one}/room/lobby?name=ada") as ada:
        assert await recv(ada) == "* ada joined"
        async with corral.connect(f"{base_two}/room/lobby?name=bob") as bob:
            assert await recv(bob) == "* bob joined"
            assert await recv(ada) == "* bob joined"
            await bob.send("from the other process")
            assert await recv(ada) == "bob: from the other process"


async def test_client_say_and_listen(capsys: pytest.CaptureFixture[str]) -> None:
    chat, client = example("chat"), example("client")
    port = free_port()
    server = await corral.serve(chat.router, "127.0.0.1", port)
    room = f"ws://127.0.0.1:{port}/room/lobby"
    printed: list[str] = []

    async def listener_printed(line: str, times: int = 1) -> None:
        deadline = asyncio.get_running_loop().time() + 5
        while printed.count(line) < times:
            assert asyncio.get_running_loop().time() < deadline, (line, printed)
            await asyncio.sleep(0.02)
            printed.extend(capsys.readouterr().out.splitlines())

    listener = asyncio.create_task(client.listen(f"{room}?name=listener"))
    try:
        await listener_printed("* listener joined")
        heard = await asyncio.wait_for(client.say(f"{room}?name=ada", "hello"), 2)
        assert heard == ["* ada joined", "ada: hello"]
        await listener_printed("ada: hello")
        # The server goes away (1001) and comes back on the same port: the listener too.
        await server.close()
        server = await corral.serve(chat.router, "127.0.0.1", port)
        await listener_printed("* listener joined", times=2)
        await asyncio.wait_for(client.say(f"{room}?name=bob", "back"), 2)
        await listener_printed("bob: back")
    finally:
        listener.cancel()
        await asyncio.gather(listener, return_exceptions=True)
        await server.close()


async def start_cli(*args: str) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable, "-m", "corral", "run", *args, cwd=EXAMPLES,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)


async def connect_when_up(url: str, process: asyncio.subprocess.Process) -> Any:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 10
    while True:
        try:
            return await corral.connect(url)
        except OSError:
            assert process.returncode is None, "the server exited"
            assert loop.time() < deadline, "the server did not listen in time"
            await asyncio.sleep(0.05)


@pytest.fixture
async def cli_chat() -> AsyncIterator[tuple[str, asyncio.subprocess.Process]]:
    port = free_port()
    process = await start_cli("chat:router", "--port", str(port))
    try:
        yield f"ws://127.0.0.1:{port}", process
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()


async def test_corral_run_serves_the_chat(
    cli_chat: tuple[str, asyncio.subprocess.Process],
) -> None:
    """`corral run chat:router`, from the folder that holds chat.py, as the tutorial says."""
    base, process = cli_chat
    ws = await connect_when_up(f"{base}/room/lobby?name=ada", process)
    assert await recv(ws) == "* ada joined"
    await ws.send("hi")
    assert await recv(ws) == "ada: hi"
    process.send_signal(signal.SIGTERM)  # what Ctrl-C does too: close 1001, exit 0
    with pytest.raises(corral.ConnectionClosedOK) as closed:
        await recv(ws, timeout=5)
    assert closed.value.code == 1001
    _, stderr = await asyncio.wait_for(process.communicate(), 5)
    assert process.returncode == 0, stderr.decode()
    assert re.search(r"corral serving on ws://127\.0\.0\.1:\d+", stderr.decode())


# -- how-to: a background feed -----------------------------------------------------------------


def clock_tasks() -> list[asyncio.Task[Any]]:
    return [task for task in asyncio.all_tasks()
            if getattr(task.get_coro(), "__qualname__", "") == "Clock.run"]


async def ticks(ws: Any, count: int) -> list[int]:
    return [json.loads(await recv(ws))["n"] for _ in range(count)]


async def test_feed_publishes_until_shutdown() -> None:
    server, base = await serving(example("feed").app(interval=0.02))
    async with server:
        assert clock_tasks()  # started by the startup hook
        async with corral.connect(f"{base}/ticks") as one, corral.connect(f"{base}/ticks") as two:
            first = await ticks(one, 3)
            assert first == list(range(first[0], first[0] + 3))  # every tick, in order
            assert (await ticks(two, 1))[0] >= first[0]
    assert not clock_tasks()  # the shutdown hook stopped it


async def test_feed_publisher_and_workers_on_redis(redis_server: Any) -> None:
    """One `publisher` process and `subscribers` workers on one Redis: each tick once."""
    feed = example("feed")
    publisher, _ = await serving(feed.publisher(interval=0.02), broker=redis_server.url)
    worker_one, base_one = await serving(feed.subscribers(), broker=redis_server.url)
    worker_two, base_two = await serving(feed.subscribers(), broker=redis_server.url)
    async with (publisher, worker_one, worker_two,
                corral.connect(f"{base_one}/ticks") as one,
                corral.connect(f"{base_two}/ticks") as two):
        for ws in (one, two):
            got = await ticks(ws, 4)
            assert got == list(range(got[0], got[0] + 4))  # no tick twice, none missed


def test_every_example_is_in_a_page() -> None:
    """Each program here is shown by a page (and so kept in step with it by this file)."""
    pages = "".join(p.read_text() for p in (ROOT / "docs").rglob("*.md"))
    for path in sorted(EXAMPLES.glob("*.py")):
        assert f'--8<-- "docs/examples/{path.name}"' in pages, f"{path.name} is in no page"
        assert f'example("{path.stem}")' in Path(__file__).read_text(), f"{path.name} untested"
