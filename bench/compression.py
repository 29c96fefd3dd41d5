#!/usr/bin/env python3
"""What permessage-deflate costs a corral server: throughput, CPU per message, bytes on the
wire, and memory per idle connection, for each of ``corral.COMPRESSION_PRESETS``.

    .venv/bin/python bench/compression.py            # 3 reps x 3 s, 2000 idle connections
    .venv/bin/python bench/compression.py --quick    # smoke run: 1 rep x 1 s, 200 connections

The echo server (bench/servers/corral_echo.py) runs as a subprocess pinned to CPU 1; the
clients run here, in one asyncio loop pinned to CPU 0. Server CPU time comes from the server
process's own accounting (/proc/PID/stat), its memory from /proc/PID/status (VmRSS), bytes
on the wire from the client sockets' TCP_INFO. Clients offer permessage-deflate the way
browsers do (``permessage-deflate; client_max_window_bits``), so the server's preset alone
decides the windows. Everything talks to 127.0.0.1; every phase is bounded in time.

The table goes to stdout and, unless ``--no-write``, into the "## Compression" section of
bench/RESULTS.md (other sections are left alone).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime
import importlib.metadata
import importlib.util
import json
import os
import platform
import random
import re
import resource
import select
import shutil
import signal
import socket
import statistics
import string
import struct
import subprocess
import sys
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import corral
from corral import DeflateSettings, Handler, Options, WebSocket

HERE = Path(__file__).resolve().parent
SERVER_SCRIPT = HERE / "servers" / "corral_echo.py"
RESULTS = HERE / "RESULTS.md"
SECTION = "## Compression"

MESSAGE_SIZE = 16384
POOL_SIZE = 32
SEED = 20261121
HZ = os.sysconf("SC_CLK_TCK")
SERVER_CPU, CLIENT_CPU = 1, 0

# What browsers offer (Chrome, Firefox, Safari): "permessage-deflate; client_max_window_bits",
# i.e. no limit of its own and none asked of the server, so the server's preset decides both
# windows. (corral's own client limits its compressor to 12 bits by default, which would
# change the max-compression row.)
BROWSER_LIKE = DeflateSettings(server_max_window_bits=15, client_max_window_bits=15)
CLIENT_OPTIONS = Options(idle_timeout=None, compression=BROWSER_LIKE)


@dataclass(frozen=True)
class Config:
    label: str
    preset: str  # "off" or a COMPRESSION_PRESETS key
    no_context_takeover: str | None = None  # None, "server" or "both"
    level: int | None = None  # None: the preset's

    def server_args(self) -> list[str]:
        args = ["--compression", self.preset]
        if self.no_context_takeover:
            args += ["--no-context-takeover", self.no_context_takeover]
        if self.level is not None:
            args += ["--level", str(self.level)]
        return args


OFF = Config("off", "off")
PRESETS = [Config(name, name) for name in ("low-memory", "balanced", "max-compression")]
SERVER_NCT = Config("balanced + server_no_context_takeover", "balanced", "server")
BOTH_NCT = Config("balanced + no context takeover both ways", "balanced", "both")
LEVEL_1 = Config("balanced at level 1", "balanced", level=1)
THROUGHPUT_CONFIGS = [OFF, *PRESETS, SERVER_NCT, LEVEL_1]
MEMORY_CONFIGS = [OFF, *PRESETS, SERVER_NCT, BOTH_NCT]


# -- the messages ------------------------------------------------------------------------------

_FIRST = ["ada", "bo", "cy", "dee", "eli", "fay", "gus", "hal", "ivy", "jo", "kai", "lu",
          "max", "nia", "otto", "pia", "quin", "rex", "sol", "tia"]
_LAST = ["smith", "jones", "garcia", "muller", "rossi", "kim", "nguyen", "silva", "novak",
         "ito", "berg", "kowalski"]
_TAGS = ["admin", "beta", "trial", "pro", "eu", "us", "apac", "mobile", "web", "api", "legacy",
         "vip"]


def _record(r: random.Random) -> dict[str, Any]:
    first, last = r.choice(_FIRST), r.choice(_LAST)
    return {
        "id": r.randrange(10**9),
        "name": f"{first.title()} {last.title()}",
        "email": f"{first}.{last}{r.randrange(1000)}@example.com",
        "score": round(r.uniform(0, 1000), 4),
        "lat": round(r.uniform(-90, 90), 6),
        "lon": round(r.uniform(-180, 180), 6),
        "active": r.random() < 0.7,
        "tags": r.sample(_TAGS, r.randrange(4)),
        "updated": f"2026-{r.randrange(1, 13):02d}-{r.randrange(1, 29):02d}T"
                   f"{r.randrange(24):02d}:{r.randrange(60):02d}:{r.randrange(60):02d}Z",
    }


def _dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"))


def _message(r: random.Random, seq: int) -> str:
    """One JSON document of exactly MESSAGE_SIZE bytes: records with random ids, names and
    floats, padded to size with a random ``note``."""
    items: list[dict[str, Any]] = []
    doc = {"type": "update", "seq": seq, "items": items, "note": ""}
    size = len(_dumps(doc))
    while True:
        record = _record(r)
        grow = len(_dumps(record)) + (1 if items else 0)  # and a comma
        if size + grow > MESSAGE_SIZE - 150:
            break
        items.append(record)
        size += grow
    letters = string.ascii_lowercase + " "
    doc["note"] = "".join(r.choice(letters) for _ in range(MESSAGE_SIZE - size))
    text = _dumps(doc)
    assert len(text.encode()) == MESSAGE_SIZE
    return text


def make_pool() -> list[str]:
    r = random.Random(SEED)
    return [_message(r, seq) for seq in range(POOL_SIZE)]


# -- the server process ------------------------------------------------------------------------


class Server:
    """The echo server subprocess, pinned to SERVER_CPU; stopped with SIGTERM."""

    def __init__(self, config: Config) -> None:
        cmd = [sys.executable, str(SERVER_SCRIPT), "--port", "0", *config.server_args()]
        if shutil.which("taskset"):
            cmd = ["taskset", "-c", str(SERVER_CPU), *cmd]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, start_new_session=True)
        self.port = self._wait_ready(10.0)
        self.pid = self.proc.pid  # taskset execs the server: same pid

    def _wait_ready(self, timeout: float) -> int:
        assert self.proc.stdout is not None
        fd = self.proc.stdout.fileno()
        buf = b""
        deadline = time.monotonic() + timeout
        while b"\n" not in buf:
            left = deadline - time.monotonic()
            if left <= 0 or self.proc.poll() is not None:
                self.stop()
                raise RuntimeError(f"echo server did not start: {buf!r}")
            if select.select([fd], [], [], left)[0]:
                chunk = os.read(fd, 256)
                if not chunk:
                    continue
                buf += chunk
        match = re.match(rb"READY (\d+)", buf)
        if match is None:
            self.stop()
            raise RuntimeError(f"unexpected output from the echo server: {buf!r}")
        return int(match.group(1))

    def cpu_ticks(self) -> int:
        return _proc_ticks(self.pid)

    def rss_kib(self) -> int:
        with open(f"/proc/{self.pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
        raise RuntimeError("no VmRSS")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.proc.stdout is not None:
            self.proc.stdout.close()


def _proc_ticks(pid: int) -> int:
    """utime + stime of one process, in clock ticks (fields 14 and 15 of /proc/PID/stat)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])


def _all_ticks(exclude: set[int]) -> dict[int, int]:
    """utime + stime of every other process (to see other load on the machine)."""
    ticks = {}
    for name in os.listdir("/proc"):
        if name.isdigit() and int(name) not in exclude:
            with contextlib.suppress(OSError, IndexError, ValueError):  # it exited
                ticks[int(name)] = _proc_ticks(int(name))
    return ticks


def _core_busy() -> dict[str, tuple[int, int]]:
    """(busy, total) jiffies per CPU from /proc/stat."""
    cores = {}
    with open("/proc/stat") as f:
        for line in f:
            if line.startswith("cpu") and line[3].isdigit():
                name, *values = line.split()
                v = [int(x) for x in values[:8]]
                idle = v[3] + v[4]
                cores[name] = (sum(v) - idle, sum(v))
    return cores


# -- the clients -------------------------------------------------------------------------------

# struct tcp_info (linux/tcp.h): tcpi_bytes_acked at offset 120, tcpi_bytes_received at 128.
_TCP_BYTES = struct.Struct("=QQ")


def _tcp_bytes(ws: WebSocket) -> tuple[int, int] | None:
    """(bytes sent and acknowledged, bytes received) on the connection's TCP socket.
    TCP payload, so WebSocket frame headers are included."""
    sock = ws.transport.get_extra_info("socket") if ws.transport else None
    if sock is None or not hasattr(socket, "TCP_INFO"):
        return None
    try:
        info = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 256)
    except OSError:
        return None
    if len(info) < 136:
        return None
    acked, received = _TCP_BYTES.unpack_from(info, 120)
    return acked, received


@dataclass
class Tally:
    measuring: bool = False
    stopping: bool = False
    count: int = 0
    errors: int = 0


class Pinger(Handler):
    """One message in flight: send, wait for the echo, check it, send the next."""

    def __init__(self, pool: list[str], start: int, tally: Tally, rounds: int | None) -> None:
        self.pool = pool
        self.i = start
        self.tally = tally
        self.rounds = rounds  # None: until tally.stopping
        self.sent = ""
        self.idle: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def _send(self, ws: WebSocket) -> None:
        self.i = (self.i + 1) % len(self.pool)
        self.sent = self.pool[self.i]
        ws.send(self.sent)

    def on_open(self, ws: WebSocket) -> None:
        self._send(ws)

    def again(self, ws: WebSocket, rounds: int) -> asyncio.Future[None]:
        """Exchange ``rounds`` more messages; the future is done after the last echo."""
        self.rounds = rounds
        self.idle = asyncio.get_running_loop().create_future()
        self._send(ws)
        return self.idle

    def on_message(self, ws: WebSocket, message: str | bytes) -> None:
        tally = self.tally
        if message != self.sent:
            tally.errors += 1
        if tally.measuring:
            tally.count += 1
        if self.rounds is not None:
            self.rounds -= 1
        if tally.stopping or self.rounds == 0:
            if not self.idle.done():
                self.idle.set_result(None)
            return
        self._send(ws)

    def on_close(self, ws: WebSocket, reason: Any) -> None:
        if not self.idle.done():
            self.idle.set_exception(RuntimeError(f"closed early: {reason}"))


async def _open(url: str, handler: Pinger) -> WebSocket:
    ws: WebSocket = await corral.connect(url, handler=handler, options=CLIENT_OPTIONS)
    return ws


def _check_negotiated(ws: WebSocket, config: Config) -> None:
    compressed = "permessage-deflate" in ws.extensions
    if compressed != (config.preset != "off"):
        raise RuntimeError(f"{config.label}: negotiated {ws.extensions}")


async def _close_all(sockets: list[WebSocket], concurrency: int) -> None:
    gate = asyncio.Semaphore(concurrency)

    async def close(ws: WebSocket) -> None:
        async with gate:
            ws.close()
            await ws.wait_closed()

    await asyncio.wait_for(asyncio.gather(*(close(ws) for ws in sockets)), 60)


# -- throughput --------------------------------------------------------------------------------


@dataclass
class Throughput:
    msgs_per_s: float
    server_us_per_msg: float
    server_cpu: float  # % of one core
    client_cpu: float
    wire_down: float | None  # bytes per message, server -> client, frame headers included
    others: float  # % of one core used by other processes
    cores: dict[str, float]
    errors: int


async def measure_throughput(
    config: Config, pool: list[str], conns: int, warmup: float, duration: float
) -> Throughput:
    server = Server(config)
    try:
        url = f"ws://127.0.0.1:{server.port}/"
        tally = Tally()
        pingers = [Pinger(pool, i * 7, tally, None) for i in range(conns)]
        sockets = list(await asyncio.gather(*(_open(url, p) for p in pingers)))
        for ws in sockets:
            _check_negotiated(ws, config)
        await asyncio.sleep(warmup)
        mine = {os.getpid(), server.pid}
        others0, cores0 = _all_ticks(mine), _core_busy()
        wire0 = [_tcp_bytes(ws) for ws in sockets]
        s0, c0, t0 = server.cpu_ticks(), os.times(), time.perf_counter()
        tally.count, tally.measuring = 0, True
        await asyncio.sleep(duration)
        tally.measuring = False
        t1, s1, c1 = time.perf_counter(), server.cpu_ticks(), os.times()
        count = tally.count
        wire1 = [_tcp_bytes(ws) for ws in sockets]
        others1, cores1 = _all_ticks(mine), _core_busy()
        tally.stopping = True
        await asyncio.wait_for(asyncio.gather(*(p.idle for p in pingers)), 30)
        await _close_all(sockets, 50)
    finally:
        server.stop()
    elapsed = t1 - t0
    server_s = (s1 - s0) / HZ
    client_s = (c1.user + c1.system) - (c0.user + c0.system)
    other_ticks = sum(t - others0.get(pid, 0) for pid, t in others1.items())
    wire_down = None
    received = [(a[1], b[1]) for a, b in zip(wire0, wire1, strict=True) if a and b]
    if len(received) == len(sockets) and count:
        wire_down = sum(after - before for before, after in received) / count
    cores = {}
    for name, (busy1, total1) in cores1.items():
        busy0, total0 = cores0.get(name, (busy1, total1))
        cores[name] = 100.0 * (busy1 - busy0) / max(1, total1 - total0)
    return Throughput(
        msgs_per_s=count / elapsed,
        server_us_per_msg=1e6 * server_s / max(1, count),
        server_cpu=100.0 * server_s / elapsed,
        client_cpu=100.0 * client_s / elapsed,
        wire_down=wire_down,
        others=100.0 * other_ticks / HZ / elapsed,
        cores=cores,
        errors=tally.errors,
    )


# -- memory per idle connection ----------------------------------------------------------------


@dataclass
class Memory:
    kib_per_conn: float  # after one message each
    kib_per_conn_used: float  # after --steady-messages each
    rss_before: int  # KiB
    rss_after: int
    open_secs: float
    errors: int


async def measure_memory(
    config: Config, pool: list[str], count: int, steady: int, settle: float
) -> Memory:
    """Open ``count`` connections that each exchange one message, then sit idle; the
    server's VmRSS growth divided by ``count``. Then again after each has exchanged
    ``steady`` messages in all: zlib's buffers take real memory only once data has passed
    through them, and after 4 messages of 16 KiB even the 15-bit preset's 64 KiB deflate
    window has been filled, as on a long-lived connection (more messages add nothing)."""
    server = Server(config)
    try:
        url = f"ws://127.0.0.1:{server.port}/"
        tally = Tally()
        # Warm-up: the first connections load code paths and grow the allocator's pools.
        warm = [Pinger(pool, i, tally, 1) for i in range(10)]
        warm_sockets = list(await asyncio.gather(*(_open(url, p) for p in warm)))
        await asyncio.wait_for(asyncio.gather(*(p.idle for p in warm)), 30)
        await _close_all(warm_sockets, 10)
        await asyncio.sleep(settle)
        before = server.rss_kib()

        gate = asyncio.Semaphore(64)
        t0 = time.perf_counter()
        pingers = [Pinger(pool, i, tally, 1) for i in range(count)]

        async def one(pinger: Pinger) -> WebSocket:
            async with gate:
                ws = await _open(url, pinger)
                await asyncio.wait_for(pinger.idle, 30)
                return ws

        sockets = list(await asyncio.wait_for(asyncio.gather(*map(one, pingers)), 120))
        open_secs = time.perf_counter() - t0
        for ws in sockets:
            _check_negotiated(ws, config)
        await asyncio.sleep(settle)
        after = server.rss_kib()
        used = after
        if steady > 1:
            await asyncio.wait_for(asyncio.gather(
                *(p.again(ws, steady - 1) for p, ws in zip(pingers, sockets, strict=True))),
                120)
            await asyncio.sleep(settle)
            used = server.rss_kib()
        await _close_all(sockets, 64)
    finally:
        server.stop()
    return Memory((after - before) / count, (used - before) / count, before, after, open_secs,
                  tally.errors)


# -- report ------------------------------------------------------------------------------------


def _spread(values: list[float]) -> str:
    """± half the min-max range, as % of the median."""
    if len(values) < 2:
        return ""
    med = statistics.median(values)
    return f" ±{50.0 * (max(values) - min(values)) / med:.0f}%" if med else ""


def _median(values: list[float]) -> float:
    return statistics.median(values)


def _server_extension(config: Config) -> tuple[Any, str]:
    """The extension object and the Sec-WebSocket-Extensions answer the server produces for
    a browser-like offer: corral's negotiation with the server script's own settings."""
    from corral.protocol.extensions.negotiation import client_offers, server_accept

    spec = importlib.util.spec_from_file_location("corral_echo", SERVER_SCRIPT)
    assert spec is not None and spec.loader is not None
    echo = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(echo)
    settings = echo.settings(config.preset, config.no_context_takeover, config.level)
    extensions, header = server_accept(client_offers(BROWSER_LIKE), settings)
    return (extensions[0] if extensions else None), header or "(declined)"


def negotiated_header(config: Config) -> str:
    return _server_extension(config)[1]


def codec_ratios(configs: list[Config]) -> list[str]:
    """Compressed / original size for small messages too, computed in this process with the
    server's negotiated codec (no sockets): context takeover matters most for them."""
    r = random.Random(SEED + 1)
    sets = {n: [_dumps({"type": "update", "seq": r.randrange(10**6),
                        "items": [_record(r) for _ in range(n)]}).encode() for _ in range(300)]
            for n in (1, 4)}
    sets[0] = [m.encode() for m in make_pool()]
    names = {n: f"{statistics.mean(map(len, msgs)):,.0f} B" for n, msgs in sets.items()}
    lines = [
        "**Compression ratio by message size** (compressed payload / original, each set "
        "sent in order on one connection; computed in-process with the codec the server "
        "negotiates, no sockets). Messages of 1 and 4 records from the same generator, 300 "
        "each, and the 16 KiB messages above.",
        "",
        "| server compression | " + " | ".join(f"{names[n]} messages" for n in (1, 4, 0)) + " |",
        "|---|---|---|---|",
    ]
    for config in configs:
        cells = []
        for n in (1, 4, 0):
            extension, _ = _server_extension(config)
            msgs = sets[n]
            if extension is None:
                cells.append("1.00")
                continue
            size = sum(len(extension.encode(1, m, fin=True)[0]) for m in msgs)
            cells.append(f"{size / sum(map(len, msgs)):.2f}")
        lines.append(f"| {config.label} | " + " | ".join(cells) + " |")
    return lines


def machine_info() -> dict[str, str]:
    model = "?"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    commit = "?"
    root = HERE.parent
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=root,
                                capture_output=True, text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "--no-optional-locks", "status", "--porcelain", "--",
                                "src"], cwd=root, capture_output=True, text=True).stdout.strip()
        if dirty:
            commit += " (with uncommitted changes in src/)"
    except (OSError, subprocess.CalledProcessError):
        pass
    try:
        loop = "uvloop " + importlib.metadata.version("uvloop")
    except importlib.metadata.PackageNotFoundError:
        loop = "asyncio"
    return {
        "cpu": model,
        "nproc": str(os.cpu_count()),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "zlib": zlib.ZLIB_RUNTIME_VERSION,
        "loop": loop,
        "commit": commit,
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
    }


def report(
    args: argparse.Namespace,
    throughput: dict[Config, list[Throughput]],
    memory: dict[Config, list[Memory]],
    info: dict[str, str],
    seconds: float,
) -> str:
    errors = sum(r.errors for runs in throughput.values() for r in runs)
    errors += sum(m.errors for mems in memory.values() for m in mems)
    lines = [
        SECTION,
        "",
        f"`bench/compression.py{' --quick' if args.quick else ''}` on {info['date']}, corral "
        f"{info['commit']}. Machine: {info['cpu']}, {info['nproc']} CPUs, kernel "
        f"{info['kernel']}, Python {info['python']}, zlib {info['zlib']}, server loop "
        f"{info['loop']}. Server pinned to CPU {SERVER_CPU}, clients (one asyncio loop) to CPU "
        f"{CLIENT_CPU}. The run took {seconds:.0f} s; echo mismatches: {errors}.",
        "",
        *_throughput_table(args, throughput),
        "",
        *codec_ratios([c for c in MEMORY_CONFIGS if c is not OFF] + [LEVEL_1]),
        "",
        *_memory_table(args, memory),
        "",
    ]
    return "\n".join(lines)


def _throughput_table(args: argparse.Namespace, results: dict[Config, list[Throughput]]
                      ) -> list[str]:
    lines = [
        f"**Echo of {MESSAGE_SIZE // 1024} KiB JSON text messages**: {args.conns} connections, "
        f"one message in flight each, {args.duration:g} s measured after {args.warmup:g} s "
        f"warm-up, {args.reps} repetition(s), median shown (± half the min-max spread). "
        "Clients offer `permessage-deflate; client_max_window_bits` as browsers do and compress "
        "what they send; the server inflates it and deflates its echo. Server CPU from "
        "/proc/PID/stat (user + system, so loopback TCP included); wire bytes per message from "
        "the clients' TCP_INFO (frame header included). Core busy % includes softirq time; "
        "other = CPU used by all other processes (% of one core, max over repetitions).",
        "",
        "| server compression | msgs/s | server CPU µs/msg | server CPU % | client CPU % "
        "| wire bytes/msg (server → client) | ratio | busy % CPU 0 / 1 | other % |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for config, runs in results.items():
        rate = [r.msgs_per_s for r in runs]
        us = [r.server_us_per_msg for r in runs]
        down = [r.wire_down for r in runs if r.wire_down is not None]
        wire = f"{_median(down):,.0f} | {_median(down) / MESSAGE_SIZE:.2f}" if down else "? | ?"
        busy = " / ".join(f"{_median([r.cores.get(f'cpu{n}', 0.0) for r in runs]):.0f}"
                          for n in (CLIENT_CPU, SERVER_CPU))
        lines.append(
            f"| {config.label} | {_median(rate):,.0f}{_spread(rate)} "
            f"| {_median(us):.0f}{_spread(us)} | {_median([r.server_cpu for r in runs]):.0f} "
            f"| {_median([r.client_cpu for r in runs]):.0f} | {wire} | {busy} "
            f"| {max(r.others for r in runs):.0f} |"
        )
    if OFF in results:
        off_us = _median([r.server_us_per_msg for r in results[OFF]])
        extra = ", ".join(
            f"{c.label} +{_median([r.server_us_per_msg for r in runs]) - off_us:.0f} µs"
            for c, runs in results.items() if c is not OFF)
        lines += ["", f"Server CPU per message over `off`: {extra}."]
    return lines


def _memory_table(args: argparse.Namespace, results: dict[Config, list[Memory]]) -> list[str]:
    lines = [
        f"**Memory per idle connection**: {args.idle} connections each exchange one "
        f"{MESSAGE_SIZE // 1024} KiB message (so zlib's state exists on both sides), then sit "
        "idle; server VmRSS after minus before (before = after a 10-connection warm-up), "
        f"divided by {args.idle}. Then each exchanges {args.steady - 1} more and RSS is read "
        "again: zlib's buffers only take real memory once data has passed through them, so the "
        f"second figure is what long-lived connections hold. {args.mem_reps} repetition(s), "
        "median shown. The compression share is the difference to `off`.",
        "",
        "| server compression | negotiated (answer to a browser-like offer) "
        f"| KiB per idle conn, 1 message | after {args.steady} messages "
        f"| compression's share KiB (1 / {args.steady} msgs) "
        "| server RSS MiB before → after 1 msg | open + echo s |",
        "|---|---|---|---|---|---|---|",
    ]
    off = results.get(OFF)
    for config, runs in results.items():
        kib = [m.kib_per_conn for m in runs]
        used = [m.kib_per_conn_used for m in runs]
        share = "—"
        if config is not OFF and off:
            share = (f"{_median(kib) - _median([m.kib_per_conn for m in off]):.1f} / "
                     f"{_median(used) - _median([m.kib_per_conn_used for m in off]):.1f}")
        mid = sorted(runs, key=lambda m: m.kib_per_conn)[len(runs) // 2]
        lines.append(
            f"| {config.label} | `{negotiated_header(config)}` | {_median(kib):.1f}{_spread(kib)} "
            f"| {_median(used):.1f}{_spread(used)} | {share} "
            f"| {mid.rss_before / 1024:.1f} → {mid.rss_after / 1024:.1f} "
            f"| {_median([m.open_secs for m in runs]):.1f} |"
        )
    return lines


def write_results(section: str) -> None:
    if RESULTS.exists():
        text = RESULTS.read_text()
    else:
        text = ("# corral benchmark results\n\nWritten by the scripts in `bench/`; each script "
                "replaces only its own section.\n\n")
    pattern = re.compile(rf"^{re.escape(SECTION)}\n.*?(?=^## |\Z)", re.S | re.M)
    if pattern.search(text):
        text = pattern.sub(lambda _: section + "\n", text, count=1)
    else:
        text = text.rstrip("\n") + "\n\n" + section + "\n"
    RESULTS.write_text(text)


# -- main --------------------------------------------------------------------------------------


def _raise_fd_limit() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def _pin() -> None:
    if hasattr(os, "sched_setaffinity") and CLIENT_CPU in os.sched_getaffinity(0):
        os.sched_setaffinity(0, {CLIENT_CPU})


def _loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    try:
        import uvloop
    except ImportError:
        return None
    return uvloop.new_event_loop


class Quiet:
    """Waits for other processes to calm down before a measurement, and allows re-measuring
    a noisy one, both out of one time budget so the whole run stays bounded."""

    def __init__(self, budget: float, max_other: float, log: Callable[[str], None]) -> None:
        self.budget = budget
        self.max_other = max_other
        self.log = log

    async def wait(self) -> None:
        mine = {os.getpid()}
        while self.budget > 0:
            t0, before = time.perf_counter(), _all_ticks(mine)
            await asyncio.sleep(0.5)
            used = sum(t - before.get(pid, 0) for pid, t in _all_ticks(mine).items())
            elapsed = time.perf_counter() - t0
            self.budget -= elapsed
            if 100.0 * used / HZ / elapsed <= self.max_other:
                return
        self.log("  the machine is busy, measuring anyway")

    def retry(self, result: Throughput, cost: float) -> bool:
        """Whether to measure again: other load was high and the budget allows it."""
        if result.others <= self.max_other or self.budget < cost:
            return False
        self.budget -= cost
        self.log("  other load too high: measuring again")
        return True


async def run_all(args: argparse.Namespace, pool: list[str], log: Callable[[str], None]) -> tuple[
        dict[Config, list[Throughput]], dict[Config, list[Memory]]]:
    throughput: dict[Config, list[Throughput]] = {c: [] for c in THROUGHPUT_CONFIGS}
    memory: dict[Config, list[Memory]] = {c: [] for c in MEMORY_CONFIGS}
    quiet = Quiet(args.quiet_budget, args.max_other, log)
    # Round-robin: a slow phase of the machine hits one repetition of every row.
    for rep in range(args.reps):
        for config in THROUGHPUT_CONFIGS:
            while True:
                await quiet.wait()
                result = await measure_throughput(config, pool, args.conns, args.warmup,
                                                  args.duration)
                log(f"rep {rep + 1} {config.label}: {result.msgs_per_s:,.0f} msgs/s, "
                    f"{result.server_us_per_msg:.0f} us/msg, server {result.server_cpu:.0f}%, "
                    f"client {result.client_cpu:.0f}%, others {result.others:.0f}%")
                if not quiet.retry(result, args.warmup + args.duration + 0.5):
                    break
            throughput[config].append(result)
    for rep in range(args.mem_reps):
        for config in MEMORY_CONFIGS:
            mem = await measure_memory(config, pool, args.idle, args.steady,
                                       0.1 if args.quick else 0.3)
            log(f"rep {rep + 1} idle {config.label}: {mem.kib_per_conn:.1f} KiB/conn, "
                f"{mem.kib_per_conn_used:.1f} after {args.steady} msgs "
                f"({mem.rss_before} -> {mem.rss_after} KiB, open {mem.open_secs:.1f} s)")
            memory[config].append(mem)
    return throughput, memory


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="What permessage-deflate costs a corral server, per compression preset.")
    parser.add_argument("--quick", action="store_true",
                        help="smoke run: 1 rep, 1 s, 200 idle connections")
    parser.add_argument("--no-write", action="store_true", help="do not write bench/RESULTS.md")
    parser.add_argument("--reps", type=int, default=None, help="throughput repetitions (3)")
    parser.add_argument("--mem-reps", type=int, default=None, help="memory repetitions (2)")
    parser.add_argument("--duration", type=float, default=None, help="measured seconds (3)")
    parser.add_argument("--warmup", type=float, default=None, help="warm-up seconds (0.5)")
    parser.add_argument("--conns", type=int, default=20, help="echo connections (20)")
    parser.add_argument("--idle", type=int, default=None, help="idle connections held (2000)")
    parser.add_argument("--steady-messages", dest="steady", type=int, default=None,
                        help="messages each idle connection exchanges for the second figure"
                             " (4)")
    parser.add_argument("--max-other", type=float, default=20.0,
                        help="wait or re-measure when other processes use more CPU (%% of a core)")
    parser.add_argument("--quiet-budget", type=float, default=None,
                        help="seconds the whole run may spend waiting for other load to pass "
                             "or re-measuring under it")
    parser.add_argument("--verbose", "-v", action="store_true")
    args = parser.parse_args(argv)
    quick = args.quick
    defaults = {"reps": (1, 3), "mem_reps": (1, 2), "duration": (1.0, 3.0),
                "warmup": (0.25, 0.5), "idle": (200, 2000), "steady": (2, 4),
                "quiet_budget": (0.0, 45.0)}
    for name, (q, full) in defaults.items():
        if getattr(args, name) is None:
            setattr(args, name, q if quick else full)

    def log(text: str) -> None:
        if args.verbose:
            print(text, file=sys.stderr, flush=True)

    _raise_fd_limit()
    _pin()
    started = time.perf_counter()
    pool = make_pool()
    info = machine_info()
    with asyncio.Runner(loop_factory=_loop_factory()) as runner:
        throughput, memory = runner.run(run_all(args, pool, log))
    section = report(args, throughput, memory, info, time.perf_counter() - started)
    print(section)
    if not args.no_write:
        write_results(section)
        print(f"written to {RESULTS}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
