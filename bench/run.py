#!/usr/bin/env python3
"""corral side by side with other WebSocket servers: CPU per message, throughput, handshakes
and memory per idle connection, all measured the same way.

    bench/setup.sh                                         # once: bench/.venv, the C programs
    bench/.venv/bin/python bench/run.py                    # 3 reps, 2 s runs, 10,000 idle conns
    bench/.venv/bin/python bench/run.py --quick            # 1 rep, 1 s runs, 1,000 idle conns
    bench/.venv/bin/python bench/run.py --only corral,picows --reps 5

Each server (bench/servers/) runs pinned to CPU 1 in its own process group; the load
generator (bench/loadgen.c, built into bench/build/) runs pinned to CPU 0 and talks to
127.0.0.1 only. Repetitions go round-robin over the servers with a fresh server process each
time, so a slow phase of the machine touches one repetition of every server rather than all
of one. The server's CPU time comes from its own /proc/PID/stat over the measured window
(read by the load generator at the window's edges), its memory from VmRSS summed over its
process tree. ``corral`` in --only selects every corral row (compiled, CORRAL_PURE=1, and
the ``async for`` style).

The tables go to stdout and, unless --no-write, into the "## Echo and handshakes vs peers"
section of bench/RESULTS.md (other sections are left alone).
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.metadata
import importlib.util
import json
import os
import resource
import select
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from _common import HERE, all_ticks, median, other_cpu, replace_section, rss_kib, spread
from compression import machine_info

ROOT = HERE.parent
BUILD = HERE / "build"
LOADGEN = BUILD / "loadgen"
C_ECHO = BUILD / "c_echo"
LOGS = BUILD / "logs"
SECTION = "## Echo and handshakes vs peers"
SERVER_CPU, CLIENT_CPU = 1, 0
SATURATED = 90.0  # % busy of the load generator's core from which its numbers are suspect


# -- what is measured --------------------------------------------------------------------------


@dataclass(frozen=True)
class Server:
    name: str
    argv: list[str]  # relative to bench/servers for scripts; absolute for binaries
    module: str | None  # the peer's package, for its version and to skip it when missing
    env: dict[str, str] = field(default_factory=dict)
    note: str = ""

    def command(self) -> list[str]:
        if self.argv[0].endswith(".py"):
            return [sys.executable, str(HERE / "servers" / self.argv[0]), *self.argv[1:]]
        return list(self.argv)


SERVERS = [
    Server("corral", ["echo_corral.py"], "corral", {"CORRAL_PURE": ""},
           "callback handler of corral.examples.echo, uvloop, compiled fast path"),
    Server("corral-pure", ["echo_corral.py"], "corral", {"CORRAL_PURE": "1"},
           "the same with CORRAL_PURE=1 (pure-Python frame code)"),
    Server("corral-async", ["echo_corral.py", "--style", "async"], "corral", {"CORRAL_PURE": ""},
           "`async for message in ws: await ws.send(message)` on corral, compiled fast path"),
    Server("websockets", ["echo_websockets.py"], "websockets", {},
           "websockets.asyncio.server, `async for m in ws: await ws.send(m)`, asyncio loop"),
    Server("aiohttp", ["echo_aiohttp.py"], "aiohttp", {},
           "web.WebSocketResponse, send_str/send_bytes, asyncio loop"),
    Server("picows", ["echo_picows.py"], "picows", {},
           "frame-level WSListener echoing each frame, uvloop"),
    Server("socketify", ["echo_socketify.py"], "socketify", {},
           "uWebSockets through CFFI, one Python callback per message"),
    Server("c_echo", [str(C_ECHO)], None, {},
           "bench/servers/c_echo.c: single-threaded epoll C server, the floor"),
]


@dataclass(frozen=True)
class Scenario:
    key: str
    title: str  # column title
    mode: str  # loadgen mode
    args: tuple[str, ...]
    size: int = 0  # message size (echo)


SCENARIOS = [
    Scenario("e64p1", "64 B echo C=100 P=1", "echo", ("-c", "100", "-P", "1", "-s", "64"), 64),
    Scenario("e64p16", "64 B echo C=100 P=16", "echo", ("-c", "100", "-P", "16", "-s", "64"),
             64),
    Scenario("e16k", "16 KiB echo C=20", "echo", ("-c", "20", "-P", "1", "-s", "16k"), 16384),
    Scenario("e1m", "1 MiB echo C=10", "echo", ("-c", "10", "-P", "1", "-s", "1m"), 2**20),
    Scenario("hs", "handshakes C=50", "connect", ("-c", "50")),
]
IDLE_TITLE = "idle connections"


@dataclass
class Run:
    """One loadgen run against one server process."""

    ok: bool
    result: dict[str, Any]
    other: float  # % of one core used by other processes meanwhile
    error: str = ""

    def count(self) -> float:
        r = self.result
        return float(r.get("msgs", r.get("handshakes", 0)))

    def rate(self) -> float:
        r = self.result
        if r.get("mode") == "connect":
            return float(r.get("handshakes_per_s", 0.0))
        return float(r.get("msgs_per_s", 0.0))

    def us_per(self) -> float | None:
        """Server CPU µs per message (per handshake in connect mode)."""
        r = self.result
        if "server_user_s" not in r or not self.count():
            return None
        return 1e6 * float(r["server_user_s"] + r["server_sys_s"]) / self.count()

    def user_us_per(self) -> float | None:
        r = self.result
        if "server_user_s" not in r or not self.count():
            return None
        return 1e6 * float(r["server_user_s"]) / self.count()

    def server_pct(self) -> float:
        r = self.result
        window = r.get("window_s") or 0.0
        if "server_user_s" not in r or not window:
            return 0.0
        return 100.0 * float(r["server_user_s"] + r["server_sys_s"]) / float(window)

    def client_core(self) -> float:
        busy = self.result.get("core_busy_pct") or []
        return float(busy[CLIENT_CPU]) if len(busy) > CLIENT_CPU else 0.0


@dataclass
class Memory:
    ok: bool
    kib_per_conn: float
    before_kib: int
    after_kib: int
    opened: int
    open_secs: float
    other: float
    error: str = ""


@dataclass
class Results:
    runs: dict[tuple[str, str], list[Run]] = field(default_factory=dict)
    memory: dict[str, list[Memory]] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)
    retries: int = 0


# -- processes ---------------------------------------------------------------------------------


def _taskset(cpu: int, argv: list[str]) -> list[str]:
    return ["taskset", "-c", str(cpu), *argv] if shutil.which("taskset") else argv


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class ServerProcess:
    """A server pinned to SERVER_CPU in its own process group; stopped by that group."""

    def __init__(self, server: Server, log_name: str) -> None:
        self.port = _free_port()
        env = dict(os.environ)
        for key, value in server.env.items():
            if value:
                env[key] = value
            else:
                env.pop(key, None)
        LOGS.mkdir(parents=True, exist_ok=True)
        self.log = open(LOGS / f"{log_name}.log", "wb")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            _taskset(SERVER_CPU, [*server.command(), "--port", str(self.port)]),
            stdout=self.log, stderr=subprocess.STDOUT, env=env, cwd=ROOT,
            start_new_session=True,
        )
        self.pid = self.proc.pid  # taskset execs the server: the same pid
        try:
            self._wait_port(20.0)
        except BaseException:
            self.stop()
            raise

    def _wait_port(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"exited with status {self.proc.returncode} at start-up "
                                   f"(log: {Path(self.log.name).relative_to(ROOT)})")
            with contextlib.suppress(OSError), socket.create_connection(
                    ("127.0.0.1", self.port), timeout=0.5):
                return
            time.sleep(0.05)
        raise RuntimeError(f"not listening on port {self.port} after {timeout:.0f} s")

    def stop(self) -> None:
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.pid, signal.SIGTERM)
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.pid, signal.SIGKILL)
                self.proc.wait(5)
        else:  # the leader is gone; anything left in its group goes too
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.pid, signal.SIGKILL)
        self.log.close()


def _loadgen(args: list[str]) -> list[str]:
    return _taskset(CLIENT_CPU, [str(LOADGEN), *args])


def _parse_json(out: str) -> dict[str, Any]:
    for line in reversed(out.splitlines()):
        if line.startswith("{"):
            result: dict[str, Any] = json.loads(line)
            return result
    return {}


def run_loadgen(args: list[str], timeout: float, server_pid: int) -> Run:
    mine = {os.getpid(), server_pid}
    before, t0 = all_ticks(mine), time.monotonic()
    try:
        done = subprocess.run(_loadgen(args), capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return Run(False, {}, 0.0, f"loadgen {' '.join(args[:1])} did not finish in {timeout} s")
    other = other_cpu(before, all_ticks(mine), time.monotonic() - t0)
    result = _parse_json(done.stdout)
    error = "" if done.returncode == 0 else (
        result.get("first_error") or done.stderr.strip()[-300:] or f"exit {done.returncode}")
    return Run(done.returncode == 0 and bool(result), result, other, str(error))


def measure_memory(server: Server, rep: int, count: int, settle: float) -> Memory:
    """VmRSS of the server's process tree with ``count`` idle connections open, minus the
    same after start-up and a short warm-up echo, divided by ``count``."""
    proc = ServerProcess(server, f"{server.name}-idle-rep{rep}")
    try:
        port = str(proc.port)
        warm = run_loadgen(["echo", "-p", port, "-c", "1", "-P", "1", "-s", "64", "-d", "0.1",
                            "-w", "0"], 30, proc.pid)
        if not warm.ok:
            return Memory(False, 0, 0, 0, 0, 0, 0, f"warm-up echo: {warm.error}")
        time.sleep(settle)
        before = rss_kib(proc.pid)
        mine = {os.getpid(), proc.pid}
        ticks0, t0 = all_ticks(mine), time.monotonic()
        hold = subprocess.Popen(
            _loadgen(["hold", "-p", port, "-n", str(count), "-c", "100",
                      "-d", f"{settle + 0.3:.2f}", "-t", "120"]),
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        assert hold.stdout is not None
        ready: dict[str, Any] = {}
        after = 0
        deadline = time.monotonic() + 100
        while time.monotonic() < deadline:
            if not select.select([hold.stdout], [], [], deadline - time.monotonic())[0]:
                break
            line = hold.stdout.readline()
            if not line:
                break
            if line.startswith("READY "):
                ready = json.loads(line[6:])
                time.sleep(settle)
                after = rss_kib(proc.pid)
                break
        try:
            out, err = hold.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            hold.kill()
            out, err = hold.communicate()
        other = other_cpu(ticks0, all_ticks(mine | {hold.pid}), time.monotonic() - t0)
        result = _parse_json(out)
        opened = int(ready.get("open", 0))
        error = ""
        if hold.returncode != 0 or not ready or opened < count:
            error = str(result.get("first_error") or err.strip()[-300:]
                        or f"hold exited {hold.returncode}")
        kib = (after - before) / opened if opened else 0.0
        return Memory(not error, kib, before, after, opened, float(ready.get("secs", 0.0)),
                      other, error)
    finally:
        proc.stop()


# -- the run -----------------------------------------------------------------------------------


def build_c(log: Callable[[str], None]) -> None:
    """Build the load generator and the C floor server when missing or older than source."""
    BUILD.mkdir(exist_ok=True)
    for source, target in ((HERE / "loadgen.c", LOADGEN),
                           (HERE / "servers" / "c_echo.c", C_ECHO)):
        if target.exists() and target.stat().st_mtime >= source.stat().st_mtime:
            continue
        log(f"building {target.relative_to(ROOT)}")
        subprocess.run(["gcc", "-O2", "-Wall", "-o", str(target), str(source)], check=True)


def available(servers: list[Server], results: Results) -> list[Server]:
    chosen = []
    for server in servers:
        if server.module and importlib.util.find_spec(server.module) is None:
            results.skipped[server.name] = f"`{server.module}` is not installed (bench/setup.sh)"
            continue
        if server.name == "c_echo" and not C_ECHO.exists():
            results.skipped[server.name] = "not built (no gcc?)"
            continue
        chosen.append(server)
    return chosen


def wait_quiet(budget: list[float], limit: float) -> None:
    """Wait (out of a shared budget of seconds) until other processes use < limit % CPU."""
    while budget[0] > 0:
        t0, before = time.monotonic(), all_ticks({os.getpid()})
        time.sleep(0.5)
        elapsed = time.monotonic() - t0
        budget[0] -= elapsed
        if other_cpu(before, all_ticks({os.getpid()}), elapsed) < limit:
            return


def run_all(args: argparse.Namespace, servers: list[Server], results: Results,
            log: Callable[[str], None]) -> None:
    window = ["-d", f"{args.duration:g}", "-w", f"{args.warmup:g}"]
    timeout = args.duration + args.warmup + 40
    budget = [args.quiet_budget]
    for rep in range(1, args.reps + 1):
        for server in list(servers):
            if server.name in results.skipped:
                continue
            wait_quiet(budget, args.max_other)
            try:
                proc = ServerProcess(server, f"{server.name}-rep{rep}")
            except RuntimeError as exc:
                results.skipped[server.name] = f"did not start: {exc}"
                log(f"{server.name}: did not start: {exc}")
                continue
            try:
                for sc in SCENARIOS:
                    lg = [sc.mode, "-p", str(proc.port), *sc.args, *window,
                          "-S", str(proc.pid)]
                    run = run_loadgen(lg, timeout, proc.pid)
                    cost = args.warmup + args.duration + 0.5
                    while run.other > args.max_other and budget[0] >= cost:
                        budget[0] -= cost  # measure again, out of the same budget
                        log(f"rep {rep} {server.name:12} {sc.key:6} other load "
                            f"{run.other:.0f}%: measuring again")
                        results.retries += 1
                        run = run_loadgen(lg, timeout, proc.pid)
                    results.runs.setdefault((server.name, sc.key), []).append(run)
                    us = run.us_per()
                    log(f"rep {rep} {server.name:12} {sc.key:6} {run.rate():>12,.0f}/s "
                        f"{us if us is not None else float('nan'):8.1f} us "
                        f"lg core {run.client_core():3.0f}% other {run.other:3.0f}%"
                        + (f"  ERROR {run.error}" if not run.ok else ""))
                    if not run.ok:
                        results.problems.append(f"{server.name} rep {rep} {sc.title}: "
                                                f"{run.error}")
            finally:
                proc.stop()
            try:
                mem = measure_memory(server, rep, args.idle, 0.3 if args.quick else 0.5)
            except RuntimeError as exc:
                mem = Memory(False, 0, 0, 0, 0, 0, 0, f"did not start: {exc}")
            results.memory.setdefault(server.name, []).append(mem)
            log(f"rep {rep} {server.name:12} idle   {mem.kib_per_conn:8.2f} KiB/conn "
                f"({mem.before_kib} -> {mem.after_kib} KiB, {mem.opened} open in "
                f"{mem.open_secs:.1f} s, other {mem.other:.0f}%)"
                + (f"  ERROR {mem.error}" if not mem.ok else ""))
            if not mem.ok:
                results.problems.append(f"{server.name} rep {rep} idle: {mem.error}")


# -- report ------------------------------------------------------------------------------------


def _cell_us(runs: list[Run]) -> tuple[str, float | None]:
    us = [u for r in runs if r.ok and (u := r.us_per()) is not None]
    user = [u for r in runs if r.ok and (u := r.user_us_per()) is not None]
    if not us:
        return "err", None
    med = median(us)
    digits = 1 if med < 100 else 0
    return f"{med:.{digits}f} ({median(user):.{digits}f}){spread(us)}", med


def _cell_rate(runs: list[Run], scenario: Scenario) -> str:
    ok = [r for r in runs if r.ok]
    if not ok:
        return "err"
    star = "*" if max(r.client_core() for r in ok) >= SATURATED else ""
    if scenario.size >= 16384:
        mb = [r.result["mb_per_s"] for r in ok]
        return f"{median(mb):,.0f} MB/s{star}{spread(mb)}"
    rates = [r.rate() for r in ok]
    return f"{median(rates):,.0f}{star}{spread(rates)}"


def _mem_cell(mems: list[Memory]) -> tuple[str, float | None]:
    ok = [m.kib_per_conn for m in mems if m.ok]
    if not ok:
        return "err", None
    return f"{median(ok):.1f}{spread(ok)}", median(ok)


def _ratio(a: float | None, b: float | None) -> str:
    return f"{a / b:.2f}" if a is not None and b else "—"


def report(args: argparse.Namespace, servers: list[Server], results: Results,
           info: dict[str, str], versions: dict[str, str], seconds: float) -> str:
    names = [s.name for s in servers if (s.name, SCENARIOS[0].key) in results.runs
             or s.name in results.memory]
    cpu: dict[str, dict[str, float | None]] = {}
    rate: dict[str, dict[str, float | None]] = {}
    cpu_rows, rate_rows, detail_rows = [], [], []
    idle_title = f"KiB per idle conn ({args.idle:,} held)"
    for name in names:
        cpu[name], rate[name] = {}, {}
        cells, rcells, dcells = [], [], []
        for sc in SCENARIOS:
            runs = results.runs.get((name, sc.key), [])
            text, value = _cell_us(runs)
            cells.append(text)
            cpu[name][sc.key] = value
            rcells.append(_cell_rate(runs, sc))
            ok = [r for r in runs if r.ok]
            rate[name][sc.key] = median([r.rate() for r in ok]) if ok else None
            if ok:
                lat = ""
                if sc.mode == "echo":
                    lat = (f" p50/p99 {median([r.result['lat_p50_us'] for r in ok]) / 1000:.2f}"
                           f"/{median([r.result['lat_p99_us'] for r in ok]) / 1000:.2f} ms")
                else:
                    lat = (f" p50/p99 {median([r.result['hs_p50_us'] for r in ok]) / 1000:.2f}"
                           f"/{median([r.result['hs_p99_us'] for r in ok]) / 1000:.2f} ms")
                dcells.append(
                    f"sv {median([r.server_pct() for r in ok]):.0f} "
                    f"lg {max(r.client_core() for r in ok):.0f} "
                    f"ot {max(r.other for r in runs):.0f}{lat}")
            else:
                dcells.append("err")
        mtext, mvalue = _mem_cell(results.memory.get(name, []))
        cpu[name]["idle"] = mvalue
        cells.append(mtext)
        mems = [m for m in results.memory.get(name, []) if m.ok]
        if mems:
            mid = sorted(mems, key=lambda m: m.kib_per_conn)[len(mems) // 2]
            rcells.append(f"{mid.before_kib / 1024:.1f} → {mid.after_kib / 1024:.1f} MiB")
            dcells.append(f"open {median([m.open_secs for m in mems]):.1f} s "
                          f"ot {max(m.other for m in results.memory[name]):.0f}")
        else:
            rcells.append("err")
            dcells.append("err")
        cpu_rows.append(f"| {name} | " + " | ".join(cells) + " |")
        rate_rows.append(f"| {name} | " + " | ".join(rcells) + " |")
        detail_rows.append(f"| {name} | " + " | ".join(dcells) + " |")
    head = "| server | " + " | ".join(sc.title for sc in SCENARIOS)
    sep = "|---" * (len(SCENARIOS) + 2) + "|"

    def ratio_row(a: str, b: str) -> str | None:
        if a not in cpu or b not in cpu:
            return None
        cells = [_ratio(cpu[a][sc.key], cpu[b][sc.key]) for sc in SCENARIOS]
        cells.append(_ratio(cpu[a]["idle"], cpu[b]["idle"]))
        return f"| {a} / {b} | " + " | ".join(cells) + " |"

    pairs = [("corral", "picows"), ("corral", "socketify"), ("corral-pure", "picows"),
             ("corral-pure", "socketify"), ("corral-pure", "websockets"),
             ("corral", "c_echo"), ("corral-async", "corral"), ("corral-async", "websockets")]
    ratio_rows = [row for a, b in pairs if (row := ratio_row(a, b))]
    errors = len(results.problems)
    others = [r.other for runs in results.runs.values() for r in runs]
    others += [m.other for mems in results.memory.values() for m in mems]
    noisy = sum(o > args.max_other for o in others)
    peer_versions = ", ".join(f"{k} {v}" for k, v in versions.items())
    lines = [
        SECTION,
        "",
        f"`bench/run.py{' --quick' if args.quick else ''}` on {info['date']}, corral "
        f"{info['commit']}. Machine: {info['cpu']}, {info['nproc']} CPUs, kernel "
        f"{info['kernel']}, Python {info['python']}. Versions: {peer_versions}. "
        f"{args.reps} repetition(s) round-robin over the servers (a fresh server process "
        f"each), {args.duration:g} s measured after {args.warmup:g} s warm-up per scenario; "
        f"servers pinned to CPU {SERVER_CPU}, the load generator (bench/loadgen.c) to CPU "
        f"{CLIENT_CPU}. The run took {seconds:.0f} s; failed runs: {errors}.",
        "",
        "Other load: the machine was not reserved for this run. Other processes used at most "
        f"{max(others, default=0):.0f} % of one core during a measurement (median "
        f"{median(others) if others else 0:.0f} %); {noisy} of {len(others)} measurements "
        f"saw more than {args.max_other:.0f} % (kernel threads not counted: ksoftirqd does "
        "the benchmark's own loopback work), after waiting up to "
        f"{args.quiet_budget:.0f} s in all for quiet and re-measuring {results.retries} "
        "time(s) out of that budget. Per-message CPU is less affected by that "
        "than throughput; treat differences under ~10 % as noise.",
        "",
        "**Server CPU per message** in µs (user + system, from the server's /proc/PID/stat "
        "over the measured window, divided by the messages echoed in it; the user-space part "
        "in parentheses; ± half the min-max spread over repetitions). Handshakes: µs per full "
        "open/handshake/close cycle. Idle: server VmRSS (summed over its process tree) with "
        f"{args.idle:,} idle connections open, minus after start-up and a warm-up echo, "
        f"divided by {args.idle:,}. Lower is better everywhere.",
        "",
        f"{head} | {idle_title} |",
        sep,
        *cpu_rows,
        "",
        "**Throughput** (msgs/s for 64 B, payload MB/s one way for 16 KiB and 1 MiB, "
        "handshakes/s; `*` = the load generator's core was ≥ "
        f"{SATURATED:.0f} % busy, so the number may be the client's limit, not the "
        "server's) and server RSS before → with the idle connections.",
        "",
        f"{head} | RSS with {args.idle:,} idle |",
        sep,
        *rate_rows,
        "",
        "**Ratios of server CPU per message** (corral's over the peer's; below 1 = corral "
        "spends less). The targets of the engine redesign (issue 10): 64 B P=1 and 16 KiB "
        "≤ 0.9x picows, 64 B P=16 ≤ 0.5x socketify, 1 MiB ≤ 1.0x the better of picows and "
        "the C floor (c_echo), handshakes ≤ 0.6x picows and ≤ 1.5x socketify, ≤ 3 KiB per "
        "idle connection with 10,000 held, the `async for` style ≤ 1.3x the callback style, "
        "pure-Python no slower than websockets.",
        "",
        f"| ratio | {' | '.join(sc.title for sc in SCENARIOS)} | idle KiB/conn |",
        sep,
        *ratio_rows,
        "",
        *targets(cpu, rate, args),
        "",
        "Detail: sv = server CPU % of one core (median; about 100 = the server was the "
        "bottleneck), lg = the load generator's core busy % incl. softirq (max), ot = other "
        "processes' CPU % (max), latency p50/p99 (median over repetitions; for P=16 it "
        "includes queueing behind the other 15).",
        "",
        f"| server | {' | '.join(sc.title for sc in SCENARIOS)} | idle |",
        sep,
        *detail_rows,
        "",
        "Servers (bench/servers/, each `--port`, path `/`, compression off, 64 MiB limits, "
        "keepalive pings off): " + "; ".join(
            f"**{s.name}**: {s.note}" for s in servers) + ".",
    ]
    if results.skipped:
        lines += ["", "Skipped: " + "; ".join(f"{k}: {v}" for k, v in results.skipped.items())
                  + "."]
    if results.problems:
        lines += ["", "Failed runs:", *(f"- {p}" for p in results.problems[:20])]
    return "\n".join(lines) + "\n"


def targets(cpu: dict[str, dict[str, float | None]], rate: dict[str, dict[str, float | None]],
            args: argparse.Namespace) -> list[str]:
    def get(name: str, key: str, table: dict[str, dict[str, float | None]]) -> float | None:
        return table.get(name, {}).get(key)

    # (title, corral's server, the peers (the best of them counts), scenario, ratio limit)
    checks: list[tuple[str, str, tuple[str, ...], str, float]] = [
        ("64 B P=1 ≤ 0.9x picows", "corral", ("picows",), "e64p1", 0.9),
        ("64 B P=16 ≤ 0.5x socketify", "corral", ("socketify",), "e64p16", 0.5),
        ("16 KiB ≤ 0.9x picows", "corral", ("picows",), "e16k", 0.9),
        ("1 MiB ≤ 1.0x the better of picows and c_echo", "corral", ("picows", "c_echo"),
         "e1m", 1.0),
        ("handshakes ≤ 0.6x picows", "corral", ("picows",), "hs", 0.6),
        ("handshakes ≤ 1.5x socketify", "corral", ("socketify",), "hs", 1.5),
        ("async for ≤ 1.3x callback, 64 B P=1", "corral-async", ("corral",), "e64p1", 1.3),
        ("async for ≤ 1.3x callback, 16 KiB", "corral-async", ("corral",), "e16k", 1.3),
        ("async for ≤ 1.3x callback, handshakes", "corral-async", ("corral",), "hs", 1.3),
    ]
    lines = ["| target | CPU/msg ratio | throughput ratio | met (by CPU/msg) |",
             "|---|---|---|---|"]
    for title, a, peers, key, limit in checks:
        measured = [p for p in peers if get(p, key, cpu)]
        if not measured:
            lines.append(f"| {title} | — | — | — |")
            continue
        b = min(measured, key=lambda p: get(p, key, cpu) or 0.0)
        ca, cb = get(a, key, cpu), get(b, key, cpu)
        ra, rb = get(a, key, rate), get(b, key, rate)
        met = "—" if ca is None or not cb else ("yes" if ca / cb <= limit else "no")
        thr = f"{ra / rb:.2f}x ({a} {ra:,.0f} vs {b} {rb:,.0f}/s)" if ra and rb else "—"
        lines.append(f"| {title} | {_ratio(ca, cb)} (vs {b}) | {thr} | {met} |")
    kib = get("corral", "idle", cpu)
    held = f"{args.idle:,} held" + ("" if args.idle >= 10000 else ", fewer than the 10,000 "
                                    "of the target")
    lines.append(f"| ≤ 3 KiB per idle connection | {kib:.1f} KiB ({held}) | — | "
                 f"{'yes' if kib <= 3 else 'no'} |" if kib is not None
                 else "| ≤ 3 KiB per idle connection | — | — | — |")
    pure_rows = []
    for sc in SCENARIOS:
        p, w = get("corral-pure", sc.key, cpu), get("websockets", sc.key, cpu)
        if p is not None and w:
            pure_rows.append((sc.title, p / w))
    if pure_rows:
        worst = max(r for _, r in pure_rows)
        detail = ", ".join(f"{t} {r:.2f}" for t, r in pure_rows)
        lines.append(f"| pure-Python no slower than websockets | {detail} | — | "
                     f"{'yes' if worst <= 1.0 else 'no'} |")
    return lines


def peer_versions(servers: list[Server]) -> dict[str, str]:
    versions = {}
    for server in servers:
        if server.module:
            with contextlib.suppress(importlib.metadata.PackageNotFoundError):
                versions[server.module] = importlib.metadata.version(server.module)
    with contextlib.suppress(importlib.metadata.PackageNotFoundError):
        versions["uvloop"] = importlib.metadata.version("uvloop")
    return versions


def _raise_fd_limit() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true",
                        help="1 rep, 1 s runs, 1,000 idle connections (about a minute)")
    parser.add_argument("--only", default="",
                        help="comma-separated servers (corral = every corral row); "
                             f"of: {', '.join(s.name for s in SERVERS)}")
    parser.add_argument("--reps", type=int, default=None, help="repetitions (3; quick 1)")
    parser.add_argument("--duration", type=float, default=None, help="measured s (2; quick 1)")
    parser.add_argument("--warmup", type=float, default=None, help="warm-up s (0.5; quick 0.25)")
    parser.add_argument("--idle", type=int, default=None,
                        help="idle connections held (10000; quick 1000)")
    parser.add_argument("--max-other", type=float, default=20.0,
                        help="other processes' CPU (%% of a core) above which to wait first")
    parser.add_argument("--quiet-budget", type=float, default=None,
                        help="seconds the run may spend in all waiting for other load to pass "
                             "or re-measuring under it (90; quick 0)")
    parser.add_argument("--no-write", action="store_true", help="do not write bench/RESULTS.md")
    parser.add_argument("--quiet", "-q", action="store_true", help="no progress on stderr")
    args = parser.parse_args(argv)
    defaults = {"reps": (1, 3), "duration": (1.0, 2.0), "warmup": (0.25, 0.5),
                "idle": (1000, 10000), "quiet_budget": (0.0, 90.0)}
    for name, (quick, full) in defaults.items():
        if getattr(args, name) is None:
            setattr(args, name, quick if args.quick else full)

    def log(text: str) -> None:
        if not args.quiet:
            print(text, file=sys.stderr, flush=True)

    started = time.monotonic()
    _raise_fd_limit()
    build_c(log)
    results = Results()
    servers = SERVERS
    if args.only:
        wanted = {w.strip() for w in args.only.split(",") if w.strip()}
        unknown = wanted - {s.name for s in SERVERS}
        if unknown:
            parser.error(f"unknown server(s): {', '.join(sorted(unknown))}")
        servers = [s for s in SERVERS if s.name in wanted
                   or ("corral" in wanted and s.name in ("corral-pure", "corral-async"))]
    servers = available(servers, results)
    info = machine_info()
    versions = peer_versions(servers)
    try:
        run_all(args, servers, results, log)
    except KeyboardInterrupt:
        log("interrupted: reporting what was measured")
    section = report(args, servers, results, info, versions, time.monotonic() - started)
    print(section)
    if not args.no_write:
        replace_section(SECTION, section)
        log(f"written to {HERE / 'RESULTS.md'}")
    return 0 if not results.problems else 1


if __name__ == "__main__":
    sys.exit(main())
