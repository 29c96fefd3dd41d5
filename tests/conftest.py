"""Fixtures shared by every test directory: a real Redis server of the test's own.

``redis_server`` starts ``redis-server`` (``$CORRAL_REDIS_SERVER``, else the one on PATH or
/usr/bin) on 127.0.0.1 and a free port, without persistence, in a temporary directory; it
yields a :class:`RedisServer` whose ``stop()`` and ``start()`` take that same server away and
bring it back on the same port (the reconnection tests), and kills it by PID at teardown.
Tests that request it are skipped, saying why, where there is no redis-server.

It also puts this folder on ``sys.path``, so that test modules (imported by pytest's
importlib mode, not as a package) share ``helpers.py``, and holds the fixtures the socket
tests opt in to with ``pytestmark = pytest.mark.usefixtures("clean_logs",
"no_leftover_tasks")``: no unexpected error logged, no task left behind.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))  # `from helpers import ...` in test modules
from helpers import free_port


def _redis_server_executable() -> str | None:
    configured = os.environ.get("CORRAL_REDIS_SERVER")
    for candidate in ([configured] if configured else
                      [shutil.which("redis-server"), "/usr/bin/redis-server"]):
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    return None


class RedisServer:
    """One redis-server process at a time on a fixed port: ``url``, ``stop``, ``start``,
    ``pause`` / ``resume`` (SIGSTOP / SIGCONT: a Redis that hangs without closing)."""

    START_TIMEOUT = 10.0

    def __init__(self, executable: str, directory: Path) -> None:
        self.executable = executable
        self.directory = directory
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def running(self) -> bool:
        return self.process is not None

    def start(self) -> None:
        """Start it and wait (bounded) until it answers PING."""
        assert self.process is None, "already running"
        log = open(self.directory / "redis.log", "ab")  # noqa: SIM115 - handed to the child
        try:
            self.process = subprocess.Popen(
                [self.executable, "--bind", "127.0.0.1", "--port", str(self.port),
                 "--save", "", "--appendonly", "no", "--dir", str(self.directory),
                 "--daemonize", "no", "--protected-mode", "yes"],
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
            )
        finally:
            log.close()
        deadline = time.monotonic() + self.START_TIMEOUT
        while not self.ping():
            if self.process.poll() is not None:
                self.process = None
                raise RuntimeError(f"redis-server exited at start; see {self.directory}")
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"redis-server did not answer within {self.START_TIMEOUT} s")
            time.sleep(0.01)

    def ping(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=1.0) as sock:
                sock.sendall(b"PING\r\n")
                return sock.recv(64).startswith(b"+PONG")
        except OSError:
            return False

    def stop(self) -> None:
        """Kill it (SIGKILL, by PID): a crash, as the clients see it."""
        process = self.process
        if process is None:
            return
        self.process = None
        if process.poll() is None:
            os.kill(process.pid, signal.SIGKILL)
        process.wait(timeout=10)

    def pause(self) -> None:
        assert self.process is not None
        os.kill(self.process.pid, signal.SIGSTOP)

    def resume(self) -> None:
        assert self.process is not None
        os.kill(self.process.pid, signal.SIGCONT)

    def __repr__(self) -> str:
        return f"<RedisServer {self.url} {'running' if self.running else 'stopped'}>"


@pytest.fixture
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    executable = _redis_server_executable()
    if executable is None:
        pytest.skip("no redis-server executable (install one, or point CORRAL_REDIS_SERVER "
                    "at it)")
    server = RedisServer(executable, tmp_path_factory.mktemp("redis"))
    server.start()
    try:
        yield server
    finally:
        server.stop()


# -- what the socket tests opt in to ----------------------------------------------------------


@pytest.fixture
def crash_expected() -> None:
    """Requested by tests where a handler crashes on purpose: its report is the one error."""


@pytest.fixture
def errors_expected() -> None:
    """Requested by tests where an application error is logged on purpose."""


@pytest.fixture
def clean_logs(caplog: pytest.LogCaptureFixture, request: pytest.FixtureRequest) -> Iterator[None]:
    """Fail the test on any ERROR record ("Task exception was never retrieved" included),
    except a handler's own crash report where ``crash_expected`` is requested, or any error
    where ``errors_expected`` is."""
    caplog.set_level(logging.WARNING)
    yield
    gc.collect()  # a task that failed unobserved reports itself when collected
    if "errors_expected" in request.fixturenames:
        return
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    if "crash_expected" in request.fixturenames:
        errors = [r for r in errors if not r.getMessage().endswith("crashed")]
    assert not errors, [r.getMessage() for r in errors]


@pytest.fixture
async def no_leftover_tasks() -> AsyncIterator[None]:
    yield
    for _ in range(3):
        await asyncio.sleep(0)
    leftovers = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
    assert not leftovers, leftovers
