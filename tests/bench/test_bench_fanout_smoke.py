"""Smoke test of the fan-out benchmark: bench/fanout.c built with gcc and run tiny (50
subscribers, a few messages, 0.3 s of throughput) against the echo example's ``/broadcast``,
on one process and on two sharing a Redis server; then bench/fanout.py --quick end to end
against corral alone. Checks exit status and the JSON / table they print, never timings.
Needs only the project's own venv (not bench/.venv)."""

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
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
BENCH = ROOT / "bench"
SUBSCRIBERS = 50

pytestmark = [
    pytest.mark.timeout(90),
    pytest.mark.skipif(shutil.which("gcc") is None, reason="gcc is needed to build fanout"),
]


@pytest.fixture(scope="module")
def fanout(tmp_path_factory: pytest.TempPathFactory) -> Path:
    target = tmp_path_factory.mktemp("bench") / "fanout"
    subprocess.run(["gcc", "-O2", "-Wall", "-Werror", "-o", str(target),
                    str(BENCH / "fanout.c")], check=True, timeout=60)
    return target


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def _echo_example(*extra: str) -> Iterator[tuple[int, int]]:
    """``python -m corral.examples.echo`` in its own process group: (port, pid)."""
    port = _free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "corral.examples.echo", "--port", str(port), "--no-compression",
         *extra], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True,
        cwd=ROOT)
    try:
        deadline = time.monotonic() + 15
        while True:
            assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                break
            except OSError:
                assert time.monotonic() < deadline, "the echo example did not start"
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


def _run(fanout: Path, *args: str) -> dict[str, Any]:
    done = subprocess.run([str(fanout), *args], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, (done.stdout, done.stderr)
    lines = done.stdout.strip().splitlines()
    assert len(lines) == 1, done.stdout  # one line of JSON, nothing else
    result: dict[str, Any] = json.loads(lines[0])
    assert result.get("first_error") is None, result
    return result


def _tiny(ports: list[int], pids: list[int]) -> list[str]:
    return ["-p", ",".join(map(str, ports)), "-n", str(SUBSCRIBERS), "-m", "5", "-P", "4",
            "-w", "0.1", "-d", "0.3", "-S", ",".join(map(str, pids))]


def _sane(result: dict[str, Any], pids: list[int]) -> None:
    assert result["mode"] == "fanout"
    assert result["subscribers"] == SUBSCRIBERS
    assert result["opened"] == SUBSCRIBERS + 1  # and the publisher
    assert result["closed_clean"] == SUBSCRIBERS + 1
    for key in ("failed", "dropped", "closed_unclean", "closed_forced", "protocol_errors",
                "check_errors", "order_errors", "lost", "late"):
        assert result[key] == 0, key
    assert result["deadline_hit"] is False
    assert result["probes"] >= 1
    # Latency phase: every message reached everybody; per message first <= last.
    assert result["lat_complete"] == result["lat_msgs"] == 5
    assert 0 < result["first_p50_us"] <= result["all_p50_us"] <= result["all_p99_us"]
    assert result["all_p99_us"] <= result["all_max_us"]
    # Throughput phase.
    assert result["completed"] > 0 and result["deliveries"] >= result["completed"]
    assert result["deliveries_per_s"] > 0 and result["msgs_per_s"] > 0
    assert 0.2 < result["window_s"] < 5
    assert result["copies"] >= result["deliveries"]
    assert result["publisher_copies"] > 0  # the sender gets its own message too
    for prefix in ("", "lat_"):
        rows = result[f"{prefix}server_cpu"]
        assert [row["pid"] for row in rows] == pids
        assert all(row["user_s"] >= 0 and row["sys_s"] >= 0 for row in rows)
        assert result[f"{prefix}server_user_s"] >= 0 and result[f"{prefix}server_sys_s"] >= 0
        assert result[f"{prefix}client_cpu_s"] >= 0


def test_one_worker(fanout: Path) -> None:
    with _echo_example() as (port, pid):
        result = _run(fanout, *_tiny([port], [pid]))
    _sane(result, [pid])
    assert result["ports"] == [port]


def test_two_workers_over_redis(fanout: Path, redis_server: Any) -> None:
    pytest.importorskip("redis", reason="the Redis broker needs the redis package")
    with ExitStack() as stack:
        workers = [stack.enter_context(_echo_example("--broker", redis_server.url))
                   for _ in range(2)]
        ports, pids = [w[0] for w in workers], [w[1] for w in workers]
        result = _run(fanout, *_tiny(ports, pids))
    _sane(result, pids)
    assert result["ports"] == ports


@pytest.mark.parametrize("args", [[], ["-p", "1", "-s", "8"], ["-p", "1,x"], ["-p", "1", "x"]])
def test_bad_usage(fanout: Path, args: list[str]) -> None:
    done = subprocess.run([str(fanout), *args], capture_output=True, text=True, timeout=10)
    assert done.returncode == 2 and "fanout:" in done.stderr


def test_refused_connection_fails_cleanly(fanout: Path) -> None:
    done = subprocess.run([str(fanout), "-p", str(_free_port()), "-n", "3"],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 1
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["opened"] == 0 and result["failed"] == 4
    assert "refused" in result["first_error"]


def test_quick_run_prints_the_table_and_writes_nothing() -> None:
    results = BENCH / "RESULTS.md"
    before = results.read_bytes() if results.exists() else None
    done = subprocess.run(
        [sys.executable, str(BENCH / "fanout.py"), "--quick", "--only", "corral",
         "--subscribers", "20,40", "--no-write", "--quiet"],
        cwd=ROOT, capture_output=True, text=True, timeout=80)
    assert done.returncode == 0, done.stderr[-3000:]
    out = done.stdout
    assert out.startswith("## Fan-out (pub/sub)")
    assert "| corral | 20 |" in out and "| corral | 40 |" in out
    assert "Failed runs" not in out
    assert (results.read_bytes() if results.exists() else None) == before
