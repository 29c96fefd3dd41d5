"""``corral run --workers N``: real processes on 127.0.0.1 sharing a port, supervised.

Every wait polls against a deadline; every process a test starts (the supervisor, and each
worker it logged) is killed by PID in teardown if it is still there.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import logging
import os
import re
import shutil
import signal
import socket
import sys
import urllib.request
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest

import corral
from corral.cli import _worker_argv, build_parser
from corral.server.workers import RestartPolicy, Supervisor, describe_exit, reserve_port

pytestmark = pytest.mark.timeout(30)

HERE = Path(__file__).parent
WAIT = 10.0  # seconds any one thing may take before the test fails


def alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie nobody has reaped yet counts as gone)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return not Path("/proc/self").exists()
    return stat.rpartition(")")[2].split()[0] != "Z"


def is_ours(pid: int) -> bool:
    """A PID we saw as a worker still runs corral (not a recycled PID), as far as we can tell."""
    try:
        return b"corral" in Path(f"/proc/{pid}/cmdline").read_bytes()
    except FileNotFoundError:
        return not Path("/proc/self").exists() and alive(pid)


async def until(condition: Callable[[], bool], what: str) -> None:
    deadline = asyncio.get_running_loop().time() + WAIT
    while not condition():
        if asyncio.get_running_loop().time() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)


class Cluster:
    """A ``corral run --workers`` supervisor and the lines its processes logged."""

    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self.process = process
        self.lines: list[str] = []
        assert process.stderr is not None
        self._reader = asyncio.create_task(self._read(process.stderr))

    async def _read(self, stream: asyncio.StreamReader) -> None:
        while line := await stream.readline():  # EOF: the supervisor and every worker left
            self.lines.append(line.decode(errors="replace").rstrip("\n"))

    @property
    def output(self) -> str:
        return "\n".join(self.lines)

    @property
    def eof(self) -> bool:
        return self._reader.done()

    async def line(self, pattern: str) -> re.Match[str]:
        """The first line matching ``pattern``, waiting for it."""
        found: list[re.Match[str]] = []

        def seen() -> bool:
            found[:] = [m for line in self.lines if (m := re.search(pattern, line))]
            if not found and self.process.returncode is not None and self.eof:
                pytest.fail(f"no line matches {pattern!r}; the processes said:\n{self.output}")
            return bool(found)

        await until(seen, f"a line matching {pattern!r}")
        return found[0]

    def started_pids(self) -> list[int]:
        """Every worker PID the supervisor logged, restarted ones included."""
        return [int(m[1]) for line in self.lines
                if (m := re.search(r"worker \d+ started \(pid (\d+)\)", line))]

    async def url(self) -> str:
        match = await self.line(r"corral supervisor \(pid \d+\): \d+ workers on (ws://\S+)")
        return match[1] + "/"

    async def serving(self, pid: int) -> None:
        """Wait until the worker ``pid`` listens."""
        await self.line(rf"\[{pid}\] corral\.server: corral serving on ")

    async def wait(self) -> int:
        """The supervisor's exit code once it and its workers have closed the log pipe."""
        await asyncio.wait_for(self.process.wait(), WAIT)
        await asyncio.wait_for(asyncio.shield(self._reader), WAIT)
        assert self.process.returncode is not None
        return self.process.returncode

    async def cleanup(self) -> None:
        for pid in {self.process.pid, *self.started_pids()}:
            if pid != self.process.pid and not is_ours(pid):
                continue
            if alive(pid):
                os.kill(pid, signal.SIGKILL)
        if self.process.returncode is None:
            await self.process.wait()
        # End-of-file comes once every process holding the log pipe is gone; it also lets
        # asyncio close the subprocess transport.
        await asyncio.wait([self._reader], timeout=WAIT)
        self._reader.cancel()


Start = Callable[..., Awaitable[Cluster]]


@pytest.fixture
async def start() -> AsyncIterator[Start]:
    clusters: list[Cluster] = []

    async def start(*args: str) -> Cluster:
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "corral", "run", *args, cwd=HERE,
            stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
        )
        clusters.append(Cluster(process))
        return clusters[-1]

    try:
        yield start
    finally:
        for cluster in clusters:
            await cluster.cleanup()


async def up(start: Start, *args: str, workers: int = 2) -> tuple[Cluster, str]:
    """Start ``workers_app`` on a port the OS picks; return once every worker listens."""
    cluster = await start("workers_app:make_app", "--workers", str(workers), "--port", "0",
                          *args)
    url = await cluster.url()
    await until(lambda: len(cluster.started_pids()) == workers, "every worker to start")
    for pid in cluster.started_pids():
        await cluster.serving(pid)
    return cluster, url


async def ask_pid(ws: corral.AsyncWebSocket) -> int:
    await ws.send("which?")
    return int(await asyncio.wait_for(ws.recv(), WAIT))


async def open_until(url: str, wanted: Callable[[set[int]], bool]
                     ) -> tuple[list[corral.AsyncWebSocket], set[int]]:
    """Open connections until the worker PIDs answering satisfy ``wanted``. The kernel picks
    a worker by hashing the connection's addresses, so a few dozen reach every worker."""
    connections: list[corral.AsyncWebSocket] = []
    pids: set[int] = set()
    for _ in range(200):
        ws = await corral.connect(url)
        assert isinstance(ws, corral.AsyncWebSocket)
        connections.append(ws)
        pids.add(await ask_pid(ws))
        if wanted(pids):
            return connections, pids
    pytest.fail(f"200 connections reached only the workers {pids}")


async def close_all(connections: list[corral.AsyncWebSocket]) -> None:
    await asyncio.gather(*(ws.close() for ws in connections))


# -- the command line, real processes ----------------------------------------------------------


async def test_workers_share_the_port_and_a_killed_one_is_replaced(start: Start) -> None:
    cluster, url = await up(start)
    first = set(cluster.started_pids())
    connections, pids = await open_until(url, lambda pids: len(pids) == 2)
    assert pids == first and cluster.process.pid not in pids
    await close_all(connections)

    victim = min(first)
    os.kill(victim, signal.SIGKILL)
    await cluster.line(rf"worker \d \(pid {victim}\) was killed by SIGKILL; restarting it")
    await until(lambda: len(cluster.started_pids()) == 3, "the replacement worker")
    replacement = cluster.started_pids()[-1]
    await cluster.serving(replacement)
    connections, pids = await open_until(url, lambda pids: replacement in pids)
    assert victim not in pids
    await close_all(connections)

    cluster.process.send_signal(signal.SIGTERM)
    assert await cluster.wait() == 0, cluster.output


def scrape(url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """``/metrics`` of the cluster at ``url`` (whichever worker answers), as samples."""
    from prometheus_client.parser import text_string_to_metric_families

    address = url.replace("ws://", "http://").rstrip("/")
    with urllib.request.urlopen(f"{address}/metrics", timeout=WAIT) as response:
        page = response.read().decode()
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(page) for s in family.samples}


def per_worker(samples: dict[tuple[str, tuple[tuple[str, str], ...]], float],
               name: str) -> dict[str, float]:
    return {dict(labels)["worker"]: value for (n, labels), value in samples.items()
            if n == name}


async def test_one_scrape_sees_every_worker(start: Start) -> None:
    cluster, url = await up(start)
    connections, pids = await open_until(url, lambda pids: len(pids) == 2)
    asked = len(connections)  # one message each way on each connection

    async def scraped(check: Callable[[dict[tuple[str, tuple[tuple[str, str], ...]], float]],
                                      bool], what: str) -> None:
        deadline = asyncio.get_running_loop().time() + WAIT
        while True:
            samples = await asyncio.to_thread(scrape, url)
            if check(samples):
                return
            if asyncio.get_running_loop().time() > deadline:
                pytest.fail(f"the scrapes never showed {what}: {samples}")
            await asyncio.sleep(0.2)

    def both(samples: dict[tuple[str, tuple[tuple[str, str], ...]], float]) -> bool:
        info = {int(dict(labels)["pid"]) for (name, labels) in samples
                if name == "corral_worker_info"}
        received = per_worker(samples, "corral_messages_received_total")
        return (info == pids and set(received) == {"0", "1"}
                and sum(received.values()) == asked
                and sum(per_worker(samples, "corral_websockets").values()) == asked)

    await scraped(both, f"both workers {pids} and {asked} messages")
    await close_all(connections)

    # A worker killed: its figures go with it; its replacement reports under its number.
    victim = min(pids)
    os.kill(victim, signal.SIGKILL)
    await until(lambda: len(cluster.started_pids()) == 3, "the replacement worker")
    replacement = cluster.started_pids()[-1]

    def replaced(samples: dict[tuple[str, tuple[tuple[str, str], ...]], float]) -> bool:
        info = {int(dict(labels)["pid"]): dict(labels)["worker"]
                for (name, labels) in samples if name == "corral_worker_info"}
        return victim not in info and replacement in info and sorted(info.values()) == ["0", "1"]

    await scraped(replaced, f"worker {replacement} in place of {victim}")
    cluster.process.send_signal(signal.SIGTERM)
    assert await cluster.wait() == 0, cluster.output


async def test_sigterm_closes_every_client_with_1001_and_stops_every_worker(
    start: Start,
) -> None:
    cluster, url = await up(start)
    connections, _ = await open_until(url, lambda pids: len(pids) == 2)
    cluster.process.send_signal(signal.SIGTERM)
    for ws in connections:
        with pytest.raises(corral.ConnectionClosedOK) as info:
            await asyncio.wait_for(ws.recv(), WAIT)
        assert info.value.code == 1001
    assert await cluster.wait() == 0, cluster.output
    assert not [pid for pid in cluster.started_pids() if alive(pid)]
    assert "stopping 2 workers" in cluster.output
    assert "killing it" not in cluster.output  # every worker stopped by itself


async def test_workers_stop_by_themselves_when_the_supervisor_is_killed(start: Start) -> None:
    cluster, url = await up(start)
    connections, _ = await open_until(url, lambda pids: len(pids) == 2)
    os.kill(cluster.process.pid, signal.SIGKILL)
    for ws in connections:  # each worker shut down gracefully
        with pytest.raises(corral.ConnectionClosedOK) as info:
            await asyncio.wait_for(ws.recv(), WAIT)
        assert info.value.code == 1001
    workers = cluster.started_pids()
    await until(lambda: not any(alive(pid) for pid in workers), "the orphaned workers to exit")
    assert cluster.output.count("the supervisor is gone: shutting down") == 2


async def test_options_reach_every_worker(start: Start) -> None:
    _, url = await up(start, "--max-message-size", "100")
    connections, _ = await open_until(url, lambda pids: len(pids) == 2)
    for ws in connections:
        await ws.send("x" * 101)
        with pytest.raises(corral.ConnectionClosedError) as info:
            await asyncio.wait_for(ws.recv(), WAIT)
        assert info.value.code == 1009


async def test_an_app_the_workers_cannot_load_stops_the_supervisor(start: Start) -> None:
    cluster = await start("workers_app:no_such_thing", "--workers", "2", "--port", "0")
    assert await cluster.wait() == 2
    assert "has no attribute 'no_such_thing'" in cluster.output
    assert "a usage error, not restarting" in cluster.output
    assert "restarting it" not in cluster.output


async def test_workers_with_a_unix_socket_is_a_usage_error(start: Start) -> None:
    cluster = await start("workers_app:app", "--workers", "2", "--uds", "/tmp/never.sock")
    assert await cluster.wait() == 2
    assert "--workers needs a TCP port" in cluster.output


async def test_a_port_in_use_is_reported_by_the_supervisor(start: Start) -> None:
    with socket.socket() as taken:  # no SO_REUSEPORT: nobody may share it
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        cluster = await start("workers_app:app", "--workers", "2",
                              "--port", str(taken.getsockname()[1]))
        assert await cluster.wait() == 1
    assert "cannot start the server" in cluster.output
    assert not cluster.started_pids()


@pytest.fixture
async def redis_url() -> AsyncIterator[str]:
    """A redis-server of our own on a free port, when there is one and a Redis broker."""
    executable = shutil.which("redis-server")
    if executable is None:
        pytest.skip("redis-server is not installed")
    if importlib.util.find_spec("corral.pubsub.redis") is None:
        pytest.skip("corral has no Redis broker yet")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = int(probe.getsockname()[1])
    process = await asyncio.create_subprocess_exec(
        executable, "--bind", "127.0.0.1", "--port", str(port), "--save", "",
        "--appendonly", "no", stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )
    try:
        def listening() -> bool:
            assert process.returncode is None, "redis-server exited"
            with socket.socket() as sock:
                return sock.connect_ex(("127.0.0.1", port)) == 0

        await until(listening, "redis-server")
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        if process.returncode is None:
            process.kill()
        await process.wait()


async def test_publish_reaches_subscribers_in_every_worker(start: Start, redis_url: str) -> None:
    _, url = await up(start, "--broker", redis_url)
    connections: list[corral.AsyncWebSocket] = []
    pids: set[int] = set()
    while len(pids) < 2:  # each /room connection says its worker's PID first
        assert len(connections) < 200, f"200 connections reached only the workers {pids}"
        ws = await corral.connect(url + "room")
        assert isinstance(ws, corral.AsyncWebSocket)
        connections.append(ws)
        pids.add(int(await asyncio.wait_for(ws.recv(), WAIT)))
    inboxes: list[list[str | bytes]] = [[] for _ in connections]

    async def read(ws: corral.AsyncWebSocket, inbox: list[str | bytes]) -> None:
        with contextlib.suppress(corral.ConnectionClosed):
            while True:
                inbox.append(await ws.recv())

    readers = [asyncio.create_task(read(ws, inbox))
               for ws, inbox in zip(connections, inboxes, strict=True)]
    # Subscribing through a remote broker takes a moment: publish again until all heard one.
    deadline = asyncio.get_running_loop().time() + WAIT
    while not all("news" in inbox for inbox in inboxes):
        assert asyncio.get_running_loop().time() < deadline, "a subscriber heard nothing"
        await connections[-1].send("news")
        await asyncio.sleep(0.05)
    await close_all(connections)
    await asyncio.wait(readers, timeout=WAIT)


def test_worker_arguments_override_the_supervisors() -> None:
    argv = ["run", "workers_app:app", "--port=0", "--work", "3", "--broker", "memory"]
    command = _worker_argv(argv, 4321, 7)
    assert command[:3] == [sys.executable, "-m", "corral"]
    args = build_parser().parse_args(command[3:])
    assert (args.app, args.port, args.workers, args.reuse_port, args.supervisor_pipe,
            args.broker) == ("workers_app:app", 4321, 1, True, 7, "memory")
    args = build_parser().parse_args(_worker_argv(["run", "--workers", "2", "--", "m:a"],
                                                  4321, 7)[3:])
    assert (args.app, args.port, args.workers) == ("m:a", 4321, 1)


# -- the supervisor and the port reservation, in process ---------------------------------------


def python(code: str) -> Callable[[int, int], list[str]]:
    return lambda pipe, slot: [sys.executable, "-c", code]


async def test_a_crash_loop_is_given_up(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, "corral.server.workers")
    policy = RestartPolicy(first_delay=0.01, max_restarts=3)
    supervisor = Supervisor(python("raise SystemExit(3)"), 2, policy=policy)
    assert await asyncio.wait_for(supervisor.run(), WAIT) == 1
    messages = [r.getMessage() for r in caplog.records]
    assert sum("exited with code 3; restarting it" in m for m in messages) == 3
    assert any("3 restarts within 60 s already, giving up" in m for m in messages)
    assert not supervisor.pids


@pytest.mark.parametrize("forced", [False, True], ids=["after-the-timeout", "second-stop"])
async def test_stragglers_are_killed(
    forced: bool, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    ignore_sigterm = (
        "import os, signal, sys, time\n"
        "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
        f"open(os.path.join({str(tmp_path)!r}, str(os.getpid())), 'w').close()\n"
        "time.sleep(60)\n"
    )
    caplog.set_level(logging.INFO, "corral.server.workers")
    supervisor = Supervisor(python(ignore_sigterm), 2,
                            shutdown_timeout=60 if forced else 0.1)
    running = asyncio.create_task(supervisor.run())
    await until(lambda: len(list(tmp_path.iterdir())) == 2, "both workers to ignore SIGTERM")
    pids = supervisor.pids
    supervisor.stop()
    if forced:  # Ctrl-C twice
        await until(lambda: any("stopping 2 workers" in r.getMessage() for r in caplog.records),
                    "the shutdown to begin")
        supervisor.stop(force=True)
    assert await asyncio.wait_for(running, WAIT) == 0
    assert not any(alive(pid) for pid in pids)
    assert sum("has not stopped: killing it" in r.getMessage() for r in caplog.records) == 2


def test_restart_delay_doubles_up_to_the_cap() -> None:
    policy = RestartPolicy(first_delay=0.1, max_delay=1.0)
    assert [policy.delay(n) for n in range(6)] == [0.1, 0.2, 0.4, 0.8, 1.0, 1.0]
    assert policy.delay(10_000) == 1.0
    with pytest.raises(ValueError):
        RestartPolicy(window=0)


def test_describe_exit() -> None:
    assert describe_exit(3) == "exited with code 3"
    assert describe_exit(-signal.SIGKILL) == "was killed by SIGKILL"


def test_a_reserved_port_takes_no_connections_but_workers_can_share_it() -> None:
    with reserve_port("127.0.0.1", 0) as port:
        assert port > 0
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", port), timeout=WAIT).close()
        with socket.socket() as plain, pytest.raises(OSError):
            plain.bind(("127.0.0.1", port))  # other programs cannot take it
        with socket.socket() as worker:
            worker.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            worker.bind(("127.0.0.1", port))
            worker.listen()
            socket.create_connection(("127.0.0.1", port), timeout=WAIT).close()
    with reserve_port("127.0.0.1", 0) as port:
        pass
    with socket.socket() as plain:
        plain.bind(("127.0.0.1", port))  # released
