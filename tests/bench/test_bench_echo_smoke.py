"""Smoke test of bench/loadgen.c (and bench/servers/c_echo.c): built with gcc, each mode run
for 0.3 s against a corral echo server subprocess. Checks exit status and the JSON it prints,
never timings. Needs only the project's own venv (not bench/.venv)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
BENCH = ROOT / "bench"

pytestmark = [
    pytest.mark.timeout(60),
    pytest.mark.skipif(shutil.which("gcc") is None, reason="gcc is needed to build loadgen"),
]


def _build(source: Path, target: Path) -> Path:
    subprocess.run(["gcc", "-O2", "-Wall", "-Werror", "-o", str(target), str(source)],
                   check=True, timeout=60)
    return target


@pytest.fixture(scope="module")
def loadgen(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _build(BENCH / "loadgen.c", tmp_path_factory.mktemp("bench") / "loadgen")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _serve(argv: list[str]) -> Iterator[tuple[int, int]]:
    port = _free_port()
    proc = subprocess.Popen([*argv, "--port", str(port)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, start_new_session=True, cwd=ROOT)
    try:
        deadline = time.monotonic() + 15
        while True:
            assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                break
            except OSError:
                assert time.monotonic() < deadline, "the echo server did not start"
                time.sleep(0.05)
        yield port, proc.pid
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(5)
        if proc.stderr:
            proc.stderr.close()


@pytest.fixture(scope="module")
def corral_server() -> Iterator[tuple[int, int]]:
    yield from _serve([sys.executable, str(BENCH / "servers" / "echo_corral.py")])


def _run(loadgen: Path, *args: str) -> tuple[dict[str, Any], str]:
    done = subprocess.run([str(loadgen), *args], capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, (done.stdout, done.stderr)
    lines = done.stdout.strip().splitlines()
    result = json.loads(lines[-1])
    assert result.get("first_error") is None, result
    return result, done.stdout


def _clean(result: dict[str, Any]) -> None:
    assert result["failed"] == 0
    assert result["protocol_errors"] == 0
    assert result["verify_errors"] == 0
    assert result["closed_unclean"] == 0
    assert result["closed_forced"] == 0
    assert result["deadline_hit"] is False
    assert result["closed_clean"] == result["opened"]


def test_selftest(loadgen: Path) -> None:
    result, _ = _run(loadgen, "selftest")
    assert result == {"mode": "selftest", "ok": True, "sha1": True, "histogram": True}


@pytest.mark.parametrize(("size", "text"), [("64", False), ("200", True), ("70000", False)])
def test_echo(loadgen: Path, corral_server: tuple[int, int], size: str, text: bool) -> None:
    port, pid = corral_server
    args = ["echo", "-p", str(port), "-c", "3", "-P", "2", "-s", size, "-d", "0.3",
            "-w", "0.1", "-S", str(pid)]
    result, _ = _run(loadgen, *args, *(["--text"] if text else []))
    _clean(result)
    assert result["mode"] == "echo"
    assert result["opened"] == 3
    assert result["size"] == int(size)
    assert result["text"] is text
    assert result["msgs"] > 0
    assert result["msgs_total"] >= result["msgs"]
    assert result["msgs_per_s"] > 0
    assert result["lat_p50_us"] <= result["lat_p99_us"] <= result["lat_max_us"]
    assert 0.2 < result["window_s"] < 5
    assert result["server_user_s"] >= 0 and result["server_sys_s"] >= 0


def test_connect(loadgen: Path, corral_server: tuple[int, int]) -> None:
    port, pid = corral_server
    result, _ = _run(loadgen, "connect", "-p", str(port), "-c", "4", "-d", "0.3",
                     "-S", str(pid))
    _clean(result)
    assert result["mode"] == "connect"
    assert result["handshakes"] > 0
    assert result["opened"] >= result["handshakes"]
    assert result["hs_p50_us"] <= result["hs_p99_us"]


def test_hold(loadgen: Path, corral_server: tuple[int, int]) -> None:
    port, _ = corral_server
    result, out = _run(loadgen, "hold", "-p", str(port), "-n", "50", "-c", "10", "-d", "0.3")
    _clean(result)
    ready = [line for line in out.splitlines() if line.startswith("READY ")]
    assert len(ready) == 1
    assert json.loads(ready[0][6:])["open"] == 50
    assert result["opened"] == 50 and result["dropped"] == 0
    assert result["held_s"] >= 0.3


def test_refused_connection_fails_cleanly(loadgen: Path) -> None:
    port = _free_port()  # nothing listens there
    done = subprocess.run([str(loadgen), "echo", "-p", str(port), "-c", "2", "-d", "0.3"],
                          capture_output=True, text=True, timeout=30)
    assert done.returncode == 1
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["failed"] == 2 and "refused" in result["first_error"]


def test_c_echo_floor(loadgen: Path, tmp_path: Path) -> None:
    c_echo = _build(BENCH / "servers" / "c_echo.c", tmp_path / "c_echo")
    for port, pid in _serve([str(c_echo)]):
        result, _ = _run(loadgen, "echo", "-p", str(port), "-c", "2", "-P", "4", "-s", "70000",
                         "-d", "0.3", "-w", "0.1", "-S", str(pid))
        _clean(result)
        assert result["msgs"] > 0
        result, _ = _run(loadgen, "connect", "-p", str(port), "-c", "2", "-d", "0.3")
        _clean(result)
        assert result["handshakes"] > 0


def test_corral_async_style(loadgen: Path) -> None:
    """The `async for` echo bench/run.py measures as corral-async."""
    argv = [sys.executable, str(BENCH / "servers" / "echo_corral.py"), "--style", "async"]
    for port, pid in _serve(argv):
        result, _ = _run(loadgen, "echo", "-p", str(port), "-c", "3", "-P", "2", "-s", "200",
                         "--text", "-d", "0.3", "-w", "0.1", "-S", str(pid))
        _clean(result)
        assert result["msgs"] > 0
        result, _ = _run(loadgen, "connect", "-p", str(port), "-c", "2", "-d", "0.3")
        _clean(result)
        assert result["handshakes"] > 0
