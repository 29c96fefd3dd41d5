"""The ``corral`` command line: ``python -m corral run``, the console script, app loading."""

from __future__ import annotations

import asyncio
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import textwrap
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from websockets.asyncio.client import unix_connect

import corral
from corral.cli import AppLoadError, load_app, main
from helpers import free_port

pytestmark = pytest.mark.timeout(15)


async def start(*args: str, cwd: Path | None = None) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable, "-m", "corral", "run", *args, cwd=cwd,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )


async def connect_when_up(url: str, process: asyncio.subprocess.Process) -> corral.AsyncWebSocket:
    """Connect as soon as the server listens (it needs a moment to import and bind)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 5
    while True:
        try:
            ws = await corral.connect(url)
        except OSError:
            if process.returncode is not None or loop.time() > deadline:
                raise
            await asyncio.sleep(0.05)
        else:
            assert isinstance(ws, corral.AsyncWebSocket)
            return ws


async def stop(process: asyncio.subprocess.Process) -> tuple[int, str]:
    """SIGTERM, then the exit code and stderr; a process that hangs is killed and fails."""
    if process.returncode is None:
        process.send_signal(signal.SIGTERM)
    try:
        _, stderr = await asyncio.wait_for(process.communicate(), 5)
    except TimeoutError:
        process.kill()
        await process.wait()
        pytest.fail("the server did not exit within 5 s of SIGTERM")
    assert process.returncode is not None
    return process.returncode, stderr.decode()


@pytest.fixture
async def echo_server() -> AsyncIterator[tuple[str, asyncio.subprocess.Process]]:
    port = free_port()
    process = await start("corral.examples.echo:app", "--port", str(port), "--log-level", "info")
    try:
        yield f"ws://127.0.0.1:{port}/", process
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()


async def test_run_factory_echo_and_sigterm(
    echo_server: tuple[str, asyncio.subprocess.Process],
) -> None:
    url, process = echo_server
    ws = await connect_when_up(url, process)
    await ws.send("hello")
    assert await ws.recv() == "hello"
    await ws.send(b"\x00\xff")
    assert await ws.recv() == b"\x00\xff"
    loop = asyncio.get_running_loop()
    started = loop.time()
    process.send_signal(signal.SIGTERM)
    with pytest.raises(corral.ConnectionClosedOK) as info:
        await asyncio.wait_for(ws.recv(), 3)
    assert info.value.code == 1001
    returncode, stderr = await stop(process)
    assert returncode == 0, stderr
    assert loop.time() - started < 3
    assert "corral serving on ws://127.0.0.1:" in stderr


async def test_run_options_are_applied() -> None:
    port = free_port()
    process = await start("corral.examples.echo:Echo", "--port", str(port),
                          "--max-message-size", "100", "--idle-timeout", "none",
                          "--log-level", "warning")
    try:
        ws = await connect_when_up(f"ws://127.0.0.1:{port}/any/path", process)
        await ws.send("x" * 100)
        assert await ws.recv() == "x" * 100
        await ws.send("x" * 101)
        with pytest.raises(corral.ConnectionClosedError) as info:
            await asyncio.wait_for(ws.recv(), 3)
        assert info.value.code == 1009
    finally:
        returncode, stderr = await stop(process)
    assert returncode == 0, stderr
    assert "serving on" not in stderr  # --log-level warning hides the info line


class Pings(corral.Handler):
    """Records the server's keepalive pings."""

    def __init__(self) -> None:
        self.pinged = asyncio.Event()

    def on_ping(self, ws: corral.WebSocket, payload: bytes) -> None:
        self.pinged.set()


async def test_run_connection_flags_are_applied() -> None:
    port = free_port()
    process = await start("corral.examples.echo:Echo", "--port", str(port),
                          "--compression", "low-memory", "--ping-interval", "0.2",
                          "--allowed-origin", "https://a.example",
                          "--allowed-origin", "https://b.example")
    url = f"ws://127.0.0.1:{port}/"
    try:
        await connect_when_up(url, process)
        pings = Pings()
        ws = await corral.connect(url, handler=pings, origin="https://b.example")
        assert isinstance(ws, corral.WebSocket)
        try:
            # low-memory: the server compresses with a 10-bit window, and asks that of us.
            assert ws.extensions == ("permessage-deflate",)
            (deflate,) = ws.conn.extensions
            assert (deflate.remote_max_window_bits, deflate.local_max_window_bits) == (10, 10)
            await asyncio.wait_for(pings.pinged.wait(), 3)
        finally:
            ws.close()
            await ws.wait_closed()
        with pytest.raises(corral.InvalidStatus) as refused:
            await corral.connect(url, origin="https://c.example")
        assert refused.value.status == 403
        plain = await corral.connect(url, compression=None)
        assert isinstance(plain, corral.AsyncWebSocket)
        await plain.close()
    finally:
        returncode, stderr = await stop(process)
    assert returncode == 0, stderr


@pytest.mark.parametrize("flags", [[], ["--compression", "off"]], ids=["default", "off"])
async def test_run_compression_is_off_unless_asked(flags: list[str]) -> None:
    port = free_port()
    process = await start("corral.examples.echo:Echo", "--port", str(port), *flags)
    try:
        ws = await connect_when_up(f"ws://127.0.0.1:{port}/", process)
        assert ws.ws is not None and ws.ws.extensions == ()
        await ws.close()
    finally:
        returncode, stderr = await stop(process)
    assert returncode == 0, stderr


@pytest.mark.parametrize(("flags", "message"), [
    (["--compression", "fast"], "unknown preset 'fast' (choose from low-memory, balanced,"),
    (["--ping-interval", "soon"], "not a number of seconds: 'soon'"),
    (["--max-message-size", "0"], "must be at least 1"),
])
def test_run_bad_connection_flags_are_usage_errors(
    flags: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["run", "corral.examples.echo:app", *flags])
    assert exited.value.code == 2
    assert message in capsys.readouterr().err


async def test_run_coroutine_from_current_directory_on_unix_socket(tmp_path: Path) -> None:
    (tmp_path / "myapp.py").write_text(textwrap.dedent("""
        async def handler(ws):
            async for message in ws:
                await ws.send(message.upper())
    """))
    path = tmp_path / "corral.sock"
    process = await start("myapp:handler", "--uds", str(path), cwd=tmp_path)
    try:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 5
        while not path.exists():
            assert process.returncode is None and loop.time() < deadline
            await asyncio.sleep(0.05)
        async with unix_connect(str(path), uri="ws://localhost/", compression=None) as client:
            await client.send("shout")
            assert await client.recv() == "SHOUT"
    finally:
        returncode, stderr = await stop(process)
    assert returncode == 0, stderr


async def test_run_with_tls(tmp_path: Path) -> None:
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("openssl is needed to make a test certificate")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        [openssl, "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
         "-nodes", "-keyout", str(key), "-out", str(cert), "-days", "1",
         "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"],
        check=True, capture_output=True, timeout=5,
    )
    port = free_port()
    process = await start("corral.examples.echo:app", "--port", str(port),
                          "--tls-cert", str(cert), "--tls-key", str(key))
    try:
        context = ssl.create_default_context(cafile=str(cert))
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 5
        while True:
            try:
                ws = await corral.connect(f"wss://127.0.0.1:{port}/", ssl=context)
                break
            except OSError:
                assert process.returncode is None and loop.time() < deadline
                await asyncio.sleep(0.05)
        await ws.send("secret")
        assert await ws.recv() == "secret"
    finally:
        returncode, stderr = await stop(process)
    assert returncode == 0, stderr
    assert f"corral serving on wss://127.0.0.1:{port}" in stderr


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("no_such_module_here:app", "no module named 'no_such_module_here'"),
        ("corral.examples.echo:nothing", "has no attribute 'nothing'"),
        ("corral.examples.echo", "expected MODULE:ATTR"),
        ("corral:__version__", "not a Router"),
        ("corral:Options", "not a Router"),  # a class that is not a Handler subclass
    ],
)
async def test_run_refuses_what_it_cannot_serve(spec: str, message: str) -> None:
    process = await start(spec, "--port", str(free_port()))
    _, stderr = await asyncio.wait_for(process.communicate(), 5)
    assert process.returncode == 2
    assert message in stderr.decode()


async def test_run_reports_a_port_in_use() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        process = await start("corral.examples.echo:app", "--port",
                              str(taken.getsockname()[1]))
        _, stderr = await asyncio.wait_for(process.communicate(), 5)
    assert process.returncode == 1
    assert "cannot start the server" in stderr.decode()


def test_console_script_help() -> None:
    script = Path(sys.executable).parent / "corral"
    if not script.exists():
        pytest.skip("the corral console script is not installed next to this interpreter")
    result = subprocess.run([str(script), "--help"], capture_output=True, text=True, timeout=5,
                            check=False)
    assert result.returncode == 0
    assert "run" in result.stdout
    result = subprocess.run([str(script), "run", "--help"], capture_output=True, text=True,
                            timeout=5, check=False)
    assert result.returncode == 0
    for option in ("--host", "--port", "--tls-cert", "--tls-key", "--uds",
                   "--max-message-size", "--idle-timeout", "--log-level", "factory"):
        assert option in result.stdout


def test_main_without_command_is_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main([])
    assert info.value.code == 2


def test_main_returns_2_for_a_bad_app(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["run", "corral:__version__"]) == 2
    assert "corral: error:" in capsys.readouterr().err


# -- load_app, in process ----------------------------------------------------------------------


def test_load_app_accepts_each_kind(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "kinds.py").write_text(textwrap.dedent("""
        import corral

        class MyHandler(corral.Handler):
            pass

        async def handler(ws):
            pass

        router = corral.Router().websocket("/", MyHandler)

        def make_router():
            return router

        def make_handler(debug=False):
            return handler

        def make_nothing():
            return 42

        async def two_args(ws, extra):
            pass

        def needs_args(config):
            return router

        class Namespace:
            router = router
    """))
    monkeypatch.syspath_prepend(str(tmp_path))
    kinds = __import__("kinds")
    assert load_app("kinds:router") is kinds.router
    assert load_app("kinds:MyHandler") is kinds.MyHandler
    assert load_app("kinds:handler") is kinds.handler
    assert load_app("kinds:make_router") is kinds.router
    assert load_app("kinds:make_handler") is kinds.handler
    assert load_app("kinds:Namespace.router") is kinds.router
    assert isinstance(load_app("corral.examples.echo:app"), corral.Router)
    for spec in ("kinds:make_nothing", "kinds:two_args", "kinds:needs_args"):
        with pytest.raises(AppLoadError):
            load_app(spec)


def test_load_app_reports_errors_inside_the_module(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "broken.py").write_text("import no_such_dependency_xyz\n")
    (tmp_path / "raising.py").write_text("raise RuntimeError('boom at import')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(AppLoadError, match="error while importing 'broken'"):
        load_app("broken:app")
    with pytest.raises(AppLoadError, match="boom at import"):
        load_app("raising:app")


def test_python_dash_m_run_without_app_is_usage_error() -> None:
    result = subprocess.run([sys.executable, "-m", "corral", "run"], capture_output=True,
                            text=True, timeout=5, check=False)
    assert result.returncode == 2
    assert "MODULE:ATTR" in result.stderr


async def start_demo(*args: str) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable, "-m", "corral", "demo", *args,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )


@pytest.mark.parametrize("workers", ["1", "2"])
async def test_demo_serves_the_chat_page_and_its_websocket(workers: str) -> None:
    """``corral demo`` (the README's first command runs it): the page over plain HTTP and a
    chat room over WebSocket on one port, in one process or in two workers."""
    import json

    port = free_port()
    process = await start_demo("--port", str(port), "--workers", workers, "--history", "5")
    try:
        ws = await connect_when_up(f"ws://127.0.0.1:{port}/ws", process)
        await ws.send(json.dumps({"type": "join", "room": "lobby", "name": "ada"}))
        welcome = json.loads(await asyncio.wait_for(ws.recv(), 5))
        assert welcome["type"] == "welcome" and welcome["room"] == "lobby"
        await ws.send(json.dumps({"type": "say", "text": "hello"}))
        while True:  # a presence update may come first
            said = json.loads(await asyncio.wait_for(ws.recv(), 5))
            if said["type"] == "message":
                break
        assert (said["name"], said["text"]) == ("ada", "hello")
        await ws.close()
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        page = await asyncio.wait_for(reader.read(), 5)
        writer.close()
        assert page.startswith(b"HTTP/1.1 200") and b"<html" in page.lower()
    finally:
        code, stderr = await stop(process)
    assert code == 0, stderr


async def test_demo_scales_out_with_workers_and_redis(redis_server: Any) -> None:
    """``corral demo --workers 2 --broker redis://...``: one room across both workers.
    Six members join (SO_REUSEPORT spreads them over the workers); a message said by one
    reaches all six, and the history a late joiner gets is the same on either worker."""
    import json

    port = free_port()
    process = await start_demo("--port", str(port), "--workers", "2",
                               "--broker", redis_server.url, "--history", "10")
    members: list[corral.AsyncWebSocket] = []

    async def next_of(ws: corral.AsyncWebSocket, kind: str) -> dict[str, Any]:
        while True:
            event = json.loads(await asyncio.wait_for(ws.recv(), 5))
            if event["type"] == kind:
                return dict(event)

    try:
        for i in range(6):
            ws = await connect_when_up(f"ws://127.0.0.1:{port}/ws", process)
            await ws.send(json.dumps({"type": "join", "room": "hall", "name": f"m{i}"}))
            await next_of(ws, "welcome")
            members.append(ws)
        await members[0].send(json.dumps({"type": "say", "text": "to everyone"}))
        for ws in members:
            said = await next_of(ws, "message")
            assert (said["name"], said["text"]) == ("m0", "to everyone")
        for _ in range(4):  # late joiners, on whichever worker: the same history
            late = await connect_when_up(f"ws://127.0.0.1:{port}/ws", process)
            await late.send(json.dumps({"type": "join", "room": "hall", "name": "late"}))
            welcome = await next_of(late, "welcome")
            assert [m["text"] for m in welcome["history"]] == ["to everyone"]
            await late.close()
    finally:
        for ws in members:
            await ws.close()
        code, stderr = await stop(process)
    assert code == 0, stderr


# -- factories in the event loop, startup hooks, corral.run's log ----------------------------

_FEED_APP = """
import asyncio
import corral

class Subscriber(corral.Handler):
    def on_open(self, ws):
        ws.subscribe("prices")

async def make():
    # Called inside the server's loop: a task started here keeps running.
    loop = asyncio.get_running_loop()

    async def feed():
        while True:
            await asyncio.sleep(0.01)
            if SERVER[0] is not None:  # set by the startup hook
                SERVER[0].publish("prices", "tick")

    TASKS.append(loop.create_task(feed()))
    return corral.Router(on_startup=[remember]).websocket("/", Subscriber)

SERVER = [None]
TASKS = []

def remember(server):
    SERVER[0] = server

def broken_factory():
    raise RuntimeError("config missing")

async def failing_hook():
    raise ConnectionError("database unreachable")

failing = corral.Router(on_startup=[failing_hook]).websocket("/", Subscriber)
"""


async def test_run_calls_an_async_factory_in_the_loop(tmp_path: Path) -> None:
    """An `async def` factory runs inside the server's event loop, so a feed it starts
    publishes to subscribers (the issue's price feed)."""
    (tmp_path / "feedapp.py").write_text(_FEED_APP)
    port = free_port()
    process = await start("feedapp:make", "--port", str(port), cwd=tmp_path)
    try:
        ws = await connect_when_up(f"ws://127.0.0.1:{port}/", process)
        assert await asyncio.wait_for(ws.recv(), 3) == "tick"
        await ws.close()
    finally:
        returncode, stderr = await stop(process)
    assert returncode == 0, stderr


@pytest.mark.parametrize(("spec", "status", "says"), [
    ("feedapp:failing", 3, "startup hook failing_hook failed: ConnectionError: database "
                           "unreachable"),
    ("feedapp:broken_factory", 2, "calling the factory 'feedapp:broken_factory' failed"),
])
async def test_run_stops_with_a_clear_error_when_startup_fails(
    tmp_path: Path, spec: str, status: int, says: str
) -> None:
    (tmp_path / "feedapp.py").write_text(_FEED_APP)
    process = await start(spec, "--port", str(free_port()), cwd=tmp_path)
    _, stderr = await asyncio.wait_for(process.communicate(), 10)
    assert process.returncode == status, stderr.decode()
    assert says in stderr.decode()
    assert "serving on" not in stderr.decode()


def test_corral_run_logs_where_it_serves_without_logging_configured(tmp_path: Path) -> None:
    """corral.run() from a plain script says where it serves, as `corral run` does."""
    port = free_port()
    script = (f"import corral, signal, threading\n"
              f"async def h(ws):\n    pass\n"
              f"threading.Timer(1.0, lambda: signal.raise_signal(signal.SIGTERM)).start()\n"
              f"corral.run(h, '127.0.0.1', {port})\n")
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                            timeout=10, check=False)
    assert result.returncode == 0, result.stderr
    assert f"corral serving on ws://127.0.0.1:{port}" in result.stderr
