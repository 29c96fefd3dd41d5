#!/usr/bin/env python3
"""Fan-out (pub/sub): how long one published message takes to reach all of 1,000 and 10,000
subscribers, how many copies per second a server delivers, and the server CPU each copy
costs: corral (one worker; two workers over Redis) beside uWebSockets' own pub/sub
(socketify), websockets.broadcast and a plain send loop on picows.

    bench/setup.sh                                       # once: bench/.venv, the C programs
    bench/.venv/bin/python bench/fanout.py               # 3 reps, 1,000 and 10,000 subscribers
    bench/.venv/bin/python bench/fanout.py --quick       # 1 rep, 100 and 1,000, short phases
    bench/.venv/bin/python bench/fanout.py --only corral,socketify --subscribers 2000

Each server (bench/servers/broadcast_*.py) serves "/broadcast": every client there is
subscribed to one topic, every message one sends goes to all of them. The load generator,
bench/fanout.c (built into bench/build/fanout), opens the subscribers, checks with probe
messages that every subscription is in place, then publishes from one more connection: a
latency phase (one message at a time: time until the last subscriber has it) and a
throughput phase (-P messages in flight: copies delivered per second, server CPU per copy).

Pinning is run.py's: every server process on CPU 1 (both corral workers and redis-server
for corral-redis, so there they share that core), the generator on CPU 0. On 2 cores the
two-worker row cannot show a gain from the second worker; it shows what the Redis hop costs
(latency, and CPU per copy with redis-server's share counted). corral-redis needs the
``redis`` package in bench/.venv and /usr/bin/redis-server (or REDIS_SERVER=path); the
Redis server is started on a free port for each repetition and stopped after it.

Repetitions go round-robin over the servers, each a fresh server process (group) serving
every subscriber count in turn. The table goes to stdout and, unless --no-write, into the
"## Fan-out (pub/sub)" section of bench/RESULTS.md (other sections are left alone).
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.metadata
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from _common import HERE, HZ, all_ticks, median, other_cpu, replace_section, spread
from compression import machine_info
from run import (
    BUILD,
    CLIENT_CPU,
    LOGS,
    SATURATED,
    SERVER_CPU,
    Server,
    ServerProcess,
    _parse_json,
    _raise_fd_limit,
    _taskset,
    wait_quiet,
)

FANOUT = BUILD / "fanout"
SECTION = "## Fan-out (pub/sub)"
REDIS_SERVER = os.environ.get("REDIS_SERVER") or shutil.which("redis-server") or \
    "/usr/bin/redis-server"


# -- what is measured --------------------------------------------------------------------------


@dataclass(frozen=True)
class Peer:
    name: str
    script: str  # in bench/servers
    module: str | None  # its package: for the version, and to skip it when missing
    workers: int = 1  # processes, each on its own port, the subscribers split between them
    redis: bool = False  # the workers share a redis-server started for them
    note: str = ""


PEERS = [
    Peer("corral", "broadcast_corral.py", "corral", note=(
        "`corral.examples.echo.Broadcast` (`ws.subscribe` on open, `ws.publish` per message), "
        "memory broker: framed once, the same bytes written to every subscriber; uvloop")),
    Peer("corral-redis", "broadcast_corral.py", "corral", workers=2, redis=True, note=(
        "the same handler in two processes on two ports with `--broker redis://...`; the "
        "publisher on the first, subscribers alternating; redis-server's CPU counted in")),
    Peer("socketify", "broadcast_socketify.py", "socketify", note=(
        "uWebSockets' pub/sub: `ws.subscribe(topic)` on open, `app.publish(topic, msg)` per "
        "message (C++ fan-out)")),
    Peer("websockets", "broadcast_websockets.py", "websockets", note=(
        "a set of connections and `websockets.asyncio.server.broadcast(clients, msg)`, "
        "asyncio loop")),
    Peer("picows", "broadcast_picows.py", "picows", note=(
        "no pub/sub of its own: a set of transports and `transport.send` to each, uvloop")),
]


@dataclass
class Run:
    """One generator run against one server group at one subscriber count."""

    ok: bool
    result: dict[str, Any]
    other: float  # % of one core used by other processes meanwhile
    redis_pid: int | None = None
    error: str = ""

    def _cpu(self, prefix: str, redis: bool | None = None) -> float | None:
        """Server CPU seconds over a phase: all processes, or (redis=True/False) only
        redis-server / only the workers."""
        rows = self.result.get(f"{prefix}server_cpu") or []
        if f"{prefix}server_user_s" not in self.result or not rows:
            return None
        return sum(float(r["user_s"]) + float(r["sys_s"]) for r in rows
                   if redis is None or (r["pid"] == self.redis_pid) == redis)

    def us_per_copy(self) -> float | None:
        """Server CPU µs per delivered copy, throughput phase (-P in flight)."""
        cpu, copies = self._cpu(""), self.result.get("deliveries", 0)
        return 1e6 * cpu / copies if cpu is not None and copies else None

    def us_per_copy_one(self) -> float | None:
        """The same in the latency phase (one message at a time)."""
        cpu = self._cpu("lat_")
        copies = self.result.get("lat_complete", 0) * self.result.get("subscribers", 0)
        return 1e6 * cpu / copies if cpu is not None and copies else None

    def redis_share(self) -> float | None:
        """redis-server's part of all the server processes' CPU, in %, both phases."""
        mine = [self._cpu(prefix, redis=True) for prefix in ("", "lat_")]
        every = [self._cpu(prefix) for prefix in ("", "lat_")]
        if None in mine or None in every or not sum(c or 0.0 for c in every):
            return None
        return 100.0 * sum(c or 0.0 for c in mine) / sum(c or 0.0 for c in every)

    def lg_us_per_copy(self, prefix: str = "") -> float | None:
        """The generator's own CPU µs per copy read, in the throughput phase (prefix "") or
        the latency phase ("lat_")."""
        r = self.result
        copies = r.get("lat_complete", 0) * r.get("subscribers", 0) if prefix else \
            r.get("deliveries", 0)
        return 1e6 * r[f"{prefix}client_cpu_s"] / copies if copies else None

    def lg_pct(self) -> float:
        """The generator's own CPU (user + system) in % of one core, throughput phase."""
        window = self.result.get("window_s") or 0.0
        return 100.0 * self.result.get("client_cpu_s", 0.0) / window if window else 0.0

    def core(self, cpu: int, prefix: str = "") -> float:
        busy = self.result.get(f"{prefix}core_busy_pct") or []
        return float(busy[cpu]) if len(busy) > cpu else 0.0

    def server_pct(self) -> float:
        cpu, window = self._cpu(""), self.result.get("window_s") or 0.0
        return 100.0 * cpu / window if cpu is not None and window else 0.0


@dataclass
class Results:
    runs: dict[tuple[str, int], list[Run]] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)
    retries: int = 0


# -- processes ---------------------------------------------------------------------------------


class ServerGroup:
    """``peer``'s worker processes (and its redis-server), each a ServerProcess of run.py:
    pinned to SERVER_CPU, in its own process group, on its own free port."""

    def __init__(self, peer: Peer, rep: int) -> None:
        self.procs: list[ServerProcess] = []
        self.redis_pid: int | None = None
        try:
            broker: list[str] = []
            if peer.redis:
                redis = ServerProcess(
                    Server("redis", [REDIS_SERVER, "--bind", "127.0.0.1", "--save", "",
                                     "--appendonly", "no"], None),
                    f"{peer.name}-redis-rep{rep}")
                self.procs.append(redis)
                self.redis_pid = redis.pid
                broker = ["--broker", f"redis://127.0.0.1:{redis.port}/0"]
            for worker in range(peer.workers):
                self.procs.append(ServerProcess(
                    Server(peer.name, [peer.script, *broker], peer.module),
                    f"{peer.name}-w{worker}-rep{rep}"))
        except BaseException:
            self.stop()
            raise
        self.ports = [p.port for p in self.procs if p.pid != self.redis_pid]
        self.pids = [p.pid for p in self.procs]

    def stop(self) -> None:
        for proc in reversed(self.procs):  # the workers first, redis-server last
            proc.stop()


def run_fanout(args: list[str], timeout: float, pids: list[int]) -> tuple[dict[str, Any], float,
                                                                             str]:
    """Run the generator pinned to CLIENT_CPU: (its JSON, other load %, error or "")."""
    mine = {os.getpid(), *pids}
    before, t0 = all_ticks(mine), time.monotonic()
    proc = subprocess.Popen(_taskset(CLIENT_CPU, [str(FANOUT), *args]), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        return {}, 0.0, f"fanout did not finish in {timeout:.0f} s"
    other = other_cpu(before, all_ticks(mine | {proc.pid}), time.monotonic() - t0)
    result = _parse_json(out)
    error = "" if proc.returncode == 0 and result else str(
        result.get("first_error") or result.get("error") or err.strip()[-300:]
        or f"exit {proc.returncode}")
    return result, other, error


# -- the run -----------------------------------------------------------------------------------


def build(log: Callable[[str], None]) -> None:
    source = HERE / "fanout.c"
    newest = max(source.stat().st_mtime, (HERE / "loadgen.c").stat().st_mtime)
    if FANOUT.exists() and FANOUT.stat().st_mtime >= newest:
        return
    BUILD.mkdir(exist_ok=True)
    log(f"building {FANOUT.relative_to(HERE.parent)}")
    subprocess.run(["gcc", "-O2", "-Wall", "-o", str(FANOUT), str(source)], check=True)


def available(peers: list[Peer], results: Results) -> list[Peer]:
    chosen = []
    for peer in peers:
        if peer.module and importlib.util.find_spec(peer.module) is None:
            results.skipped[peer.name] = f"`{peer.module}` is not installed (bench/setup.sh)"
        elif peer.redis and not os.access(REDIS_SERVER, os.X_OK):
            results.skipped[peer.name] = f"no redis-server ({REDIS_SERVER})"
        elif peer.redis and (importlib.util.find_spec("corral.pubsub.redis") is None
                             or importlib.util.find_spec("redis") is None):
            results.skipped[peer.name] = ("corral's Redis broker is not available here "
                                          "(corral.pubsub.redis and the `redis` package)")
        else:
            chosen.append(peer)
    return chosen


def lat_msgs(args: argparse.Namespace, subscribers: int) -> int:
    if args.msgs is not None:
        return int(args.msgs)
    if args.quick:
        return 20
    return 100 if subscribers <= 2000 else 30


def measure(args: argparse.Namespace, peers: list[Peer], results: Results,
            log: Callable[[str], None]) -> None:
    budget = [args.quiet_budget]
    for rep in range(1, args.reps + 1):
        for peer in peers:
            if peer.name in results.skipped:
                continue
            wait_quiet(budget, args.max_other)
            try:
                group = ServerGroup(peer, rep)
            except RuntimeError as exc:
                results.skipped[peer.name] = f"did not start: {exc}"
                log(f"{peer.name}: did not start: {exc}")
                continue
            try:
                for n in args.subscribers:
                    run = measure_one(args, group, n, budget, results, log, f"rep {rep} "
                                      f"{peer.name:12} {n:>6}")
                    results.runs.setdefault((peer.name, n), []).append(run)
                    log(progress(rep, peer.name, n, run))
                    if not run.ok:
                        results.problems.append(f"{peer.name} rep {rep} {n:,} subscribers: "
                                                f"{run.error}")
            finally:
                group.stop()


def measure_one(args: argparse.Namespace, group: ServerGroup, n: int, budget: list[float],
                results: Results, log: Callable[[str], None], label: str) -> Run:
    """One generator run at ``n`` subscribers, repeated (out of ``budget``) when other load
    was high."""
    msgs = lat_msgs(args, n)
    gen = ["-p", ",".join(map(str, group.ports)), "-n", str(n), "-s", str(args.size),
           "-m", str(msgs), "-P", str(args.inflight), "-w", f"{args.warmup:g}",
           "-d", f"{args.duration:g}", "-S", ",".join(map(str, group.pids))]
    timeout = 90 + n / 200 + msgs * 2 + args.warmup + args.duration
    result, other, error = run_fanout(gen, timeout, group.pids)
    cost = n / 2000 + msgs * n / 100_000 + args.warmup + args.duration + 1  # s, roughly
    while not error and other > args.max_other and budget[0] >= cost:
        budget[0] -= cost
        log(f"{label} other load {other:.0f}%: measuring again")
        results.retries += 1
        result, other, error = run_fanout(gen, timeout, group.pids)
    return Run(not error, result, other, group.redis_pid, error)


def progress(rep: int, name: str, n: int, run: Run) -> str:
    r = run.result
    us, one = run.us_per_copy(), run.us_per_copy_one()
    return (f"rep {rep} {name:12} {n:>6} subs: to all p50/p99 "
            f"{r.get('all_p50_us', 0) / 1000:7.1f}/{r.get('all_p99_us', 0) / 1000:7.1f} ms "
            f"{r.get('deliveries_per_s', 0):>10,.0f} copies/s "
            f"{us if us is not None else float('nan'):5.1f} us/copy "
            f"(1 in flight {one if one is not None else float('nan'):5.1f}) "
            f"sv {run.server_pct():3.0f}% lg core {run.core(CLIENT_CPU):3.0f}% "
            f"other {run.other:3.0f}% {r.get('total_s', 0):4.1f} s"
            + (f"  ERROR {run.error}" if not run.ok else ""))


# -- report ------------------------------------------------------------------------------------


def _med(values: list[float], fmt: str) -> str:
    return f"{median(values):{fmt}}{spread(values)}" if values else "err"


def _values(runs: list[Run], get: Callable[[Run], float | None]) -> list[float]:
    return [v for r in runs if r.ok and (v := get(r)) is not None]


def report(args: argparse.Namespace, peers: list[Peer], results: Results,
           info: dict[str, str], versions: dict[str, str], seconds: float) -> str:
    rows, cpu_rows, detail_rows = [], [], []
    medians: dict[tuple[str, int], dict[str, float]] = {}
    for n in args.subscribers:
        for peer in peers:
            runs = results.runs.get((peer.name, n), [])
            if not runs:
                continue
            ok = [r for r in runs if r.ok]
            star = "*" if ok and max(r.core(CLIENT_CPU) for r in ok) >= SATURATED else ""
            lat = _values(runs, lambda r: r.result["all_p50_us"] / 1000)
            p99 = _values(runs, lambda r: r.result["all_p99_us"] / 1000)
            first = _values(runs, lambda r: r.result["first_p50_us"] / 1000)
            rate = _values(runs, lambda r: r.result["deliveries_per_s"])
            msgs = _values(runs, lambda r: r.result["msgs_per_s"])
            us = _values(runs, lambda r: r.us_per_copy())
            one = _values(runs, lambda r: r.us_per_copy_one())
            lost = sum(int(r.result.get("lost", 0)) for r in runs)
            medians[(peer.name, n)] = {k: median(v) for k, v in
                                       (("lat", lat), ("rate", rate), ("us", us)) if v}
            rows.append(f"| {peer.name} | {n:,} | {_med(lat, ',.1f')} | {_med(p99, ',.1f')} | "
                        f"{_med(first, ',.2f')} | {_med(rate, ',.0f')}{star} | "
                        f"{_med(msgs, ',.1f')} | {lost:,} |")
            redis = "—"
            if peer.redis:
                redis = _med(_values(runs, lambda r: r.redis_share()), ".1f")
            lg_one = _values(runs, lambda r: r.lg_us_per_copy("lat_"))
            lg = _values(runs, lambda r: r.lg_us_per_copy())
            cpu_rows.append(f"| {peer.name} | {n:,} | {_med(one, '.2f')} | {_med(us, '.2f')} | "
                            f"{redis} | {_med(lg_one, '.2f')} | {_med(lg, '.2f')} |")
            detail_rows.append(
                f"| {peer.name} | {n:,} | "
                f"{_med(_values(runs, lambda r: r.result['open_s']), '.1f')} | "
                f"{max((r.result.get('probes', 0) for r in ok), default=0)} | "
                f"{_med(_values(runs, lambda r: r.result['thr_all_p50_us'] / 1000), ',.0f')} | "
                f"{median([r.server_pct() for r in ok]) if ok else 0:.0f} | "
                f"{max((r.lg_pct() for r in ok), default=0):.0f} | "
                f"{max((r.core(CLIENT_CPU) for r in ok), default=0):.0f} / "
                f"{max((r.core(CLIENT_CPU, 'lat_') for r in ok), default=0):.0f} | "
                f"{max(r.other for r in runs):.0f} |")
    ratio_rows = []
    for base in ("socketify", "websockets", "picows"):
        for name in ("corral", "corral-redis"):
            cells = []
            for n in args.subscribers:
                a, b = medians.get((name, n), {}), medians.get((base, n), {})
                cells += [f"{a[k] / b[k]:.2f}" if k in a and b.get(k) else "—"
                          for k in ("lat", "us", "rate")]
            if any(c != "—" for c in cells):
                ratio_rows.append(f"| {name} / {base} | " + " | ".join(cells) + " |")
    ratio_head = " | ".join(f"{n:,}: {t}" for n in args.subscribers
                            for t in ("to all p50", "CPU/copy", "copies/s"))
    others = [r.other for runs in results.runs.values() for r in runs]
    noisy = sum(o > args.max_other for o in others)
    version_text = ", ".join(f"{k} {v}" for k, v in versions.items())
    subs = " and ".join(f"{n:,}" for n in args.subscribers)
    counts = ", ".join(f"{lat_msgs(args, n)} at {n:,}" for n in args.subscribers)
    lines = [
        SECTION,
        "",
        f"`bench/fanout.py{' --quick' if args.quick else ''}` on {info['date']}, corral "
        f"{info['commit']}. Machine: {info['cpu']}, {info['nproc']} CPUs, kernel "
        f"{info['kernel']}, Python {info['python']}. Versions: {version_text}. "
        f"{args.reps} repetition(s) round-robin over the servers (a fresh server process "
        f"group each), {subs} subscribers, {args.size} B binary messages. Server processes "
        f"pinned to CPU {SERVER_CPU} (corral-redis: both workers and redis-server share it), "
        f"the generator (bench/fanout.c) to CPU {CLIENT_CPU}. The run took {seconds:.0f} s; "
        f"failed runs: {len(results.problems)}.",
        "",
        "Other load: the machine was not reserved for this run. Other processes used at most "
        f"{max(others, default=0):.0f} % of one core during a run (median "
        f"{median(others) if others else 0:.0f} %); {noisy} of {len(others)} runs saw more "
        f"than {args.max_other:.0f} %, after waiting up to {args.quiet_budget:.0f} s in all "
        f"for quiet and re-measuring {results.retries} time(s). CPU per copy is less "
        "affected by that than latency and throughput.",
        "",
        "What is measured: the subscribers open (a bounded number of handshakes at a time), "
        "probe messages go out until one has reached every subscriber (so every subscription "
        "is in place), then one more connection publishes. **Latency to all**: messages sent "
        f"one at a time ({counts}), each when the previous one has reached everybody: time from "
        "just before the publisher's write until the last subscriber has read the whole "
        "message (p50, p99 over the messages; to first: until the first has). **Copies/s**: "
        f"{args.inflight} messages kept in flight (a new one whenever one has reached "
        f"everybody), copies read by subscribers per second over {args.duration:g} s after "
        f"{args.warmup:g} s of warm-up; msgs/s = messages that reached everybody per second. "
        "Medians over repetitions, ± half the min-max spread. `*` = the generator's core was "
        f"≥ {SATURATED:.0f} % busy (incl. softirq and other processes), so the number may be "
        "its limit. Lost = copies that never arrived (given up after 5 s); each subscriber "
        "also checks it gets every message once, whole and in order. The servers send the "
        "publisher its own message too; that copy is not counted.",
        "",
        "| server | subscribers | to all p50 ms | to all p99 ms | to first p50 ms | "
        "copies/s | msgs/s | lost |",
        "|---|---|---|---|---|---|---|---|",
        *rows,
        "",
        "**Server CPU per delivered copy** in µs (user + system of the server processes, "
        "from their own /proc/PID/stat over the phase, divided by the copies read by "
        "subscribers in it; lower is better). With one message in flight each copy is its "
        f"own write; with {args.inflight} in flight a server may write several to a "
        "subscriber at once. corral-redis counts both workers and redis-server; "
        "redis-server's part of that is given in % (both phases; one PUBLISH per message "
        f"reaches both workers; CPU time is counted in 1/{HZ} s ticks, so 0 = under a "
        "tick). "
        "Generator: its own CPU per copy in each phase, to show it costs less than the "
        "servers it measures.",
        "",
        f"| server | subscribers | µs/copy, 1 in flight | µs/copy, {args.inflight} in flight "
        f"| redis-server % | generator µs/copy, 1 in flight | generator µs/copy, "
        f"{args.inflight} in flight |",
        "|---|---|---|---|---|---|---|",
        *cpu_rows,
        "",
        "**Ratios** (corral's over the peer's medians: latency to all p50 and CPU per copy "
        f"with {args.inflight} in flight, below 1 = corral better; copies/s, above 1 = corral "
        "better).",
        "",
        f"| ratio | {ratio_head} |",
        "|---" * (1 + 3 * len(args.subscribers)) + "|",
        *ratio_rows,
        "",
        "Detail: open = seconds to open every subscriber; probes = probe messages needed; "
        f"to all under load = latency to all p50 with {args.inflight} in flight (ms; "
        "queueing included); sv = server CPU % of one core in the throughput phase (all its "
        "processes); gen = the generator's own CPU % of one core in the throughput phase "
        "(max; about 100 would make it the limit); lg = its core's busy % (incl. softirq and "
        "other processes) in the throughput / latency phase (max); ot = other processes' "
        "CPU % (max).",
        "",
        "| server | subscribers | open s | probes | to all under load ms | sv | gen | lg | ot |",
        "|---|---|---|---|---|---|---|---|---|",
        *detail_rows,
        "",
        "Servers (bench/servers/broadcast_*.py, path `/broadcast`, compression off, "
        "keepalive pings off, every client subscribed to one topic, every message to all, "
        "the sender included): " + "; ".join(f"**{p.name}**: {p.note}" for p in peers) + ".",
    ]
    if results.skipped:
        lines += ["", "Skipped: " + "; ".join(f"{k}: {v}" for k, v in results.skipped.items())
                  + "."]
    if results.problems:
        lines += ["", "Failed runs:", *(f"- {p}" for p in results.problems[:20])]
    return "\n".join(lines) + "\n"


def peer_versions(peers: list[Peer]) -> dict[str, str]:
    versions = {}
    for module in dict.fromkeys([*(p.module for p in peers if p.module), "uvloop"]):
        with contextlib.suppress(importlib.metadata.PackageNotFoundError):
            versions[module] = importlib.metadata.version(module)
    if any(p.redis for p in peers):
        with contextlib.suppress(OSError, subprocess.SubprocessError, IndexError):
            out = subprocess.run([REDIS_SERVER, "--version"], capture_output=True, text=True,
                                 timeout=10).stdout
            versions["redis-server"] = out.split("v=")[1].split()[0]
        with contextlib.suppress(importlib.metadata.PackageNotFoundError):
            versions["redis-py"] = importlib.metadata.version("redis")
    return versions


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true",
                        help="1 rep, 100 and 1,000 subscribers, short phases (under a minute)")
    parser.add_argument("--only", default="",
                        help=f"comma-separated servers, of: {', '.join(p.name for p in PEERS)}")
    parser.add_argument("--subscribers", default=None,
                        help="comma-separated subscriber counts (1000,10000; quick 100,1000)")
    parser.add_argument("--reps", type=int, default=None, help="repetitions (3; quick 1)")
    parser.add_argument("--size", type=int, default=64, help="message bytes, ≥ 16 (64)")
    parser.add_argument("--msgs", type=int, default=None,
                        help="latency phase messages (100 up to 2,000 subscribers, 30 above; "
                             "quick 20)")
    parser.add_argument("--inflight", type=int, default=8,
                        help="messages in flight in the throughput phase (8)")
    parser.add_argument("--duration", type=float, default=None,
                        help="throughput phase measured s (1.5; quick 0.5)")
    parser.add_argument("--warmup", type=float, default=None,
                        help="throughput phase warm-up s (0.5; quick 0.2)")
    parser.add_argument("--max-other", type=float, default=20.0,
                        help="other processes' CPU (%% of a core) above which to wait first")
    parser.add_argument("--quiet-budget", type=float, default=None,
                        help="seconds the run may spend in all waiting for other load to pass "
                             "or re-measuring under it (30; quick 0)")
    parser.add_argument("--no-write", action="store_true", help="do not write bench/RESULTS.md")
    parser.add_argument("--quiet", "-q", action="store_true", help="no progress on stderr")
    args = parser.parse_args(argv)
    defaults = {"reps": (1, 3), "duration": (0.5, 1.5), "warmup": (0.2, 0.5),
                "quiet_budget": (0.0, 30.0), "subscribers": ("100,1000", "1000,10000")}
    for name, (quick, full) in defaults.items():
        if getattr(args, name) is None:
            setattr(args, name, quick if args.quick else full)
    try:
        args.subscribers = [int(n) for n in str(args.subscribers).split(",") if n.strip()]
    except ValueError:
        parser.error("--subscribers takes numbers separated by commas")
    if not args.subscribers or min(args.subscribers) < 1 or args.size < 16 or args.reps < 1:
        parser.error("need subscribers ≥ 1, --size ≥ 16 and --reps ≥ 1")

    def log(text: str) -> None:
        if not args.quiet:
            print(text, file=sys.stderr, flush=True)

    started = time.monotonic()
    _raise_fd_limit()  # the servers inherit it: 10,000 subscribers are 10,000 sockets
    build(log)
    LOGS.mkdir(parents=True, exist_ok=True)
    results = Results()
    peers = PEERS
    if args.only:
        wanted = {w.strip() for w in args.only.split(",") if w.strip()}
        unknown = wanted - {p.name for p in PEERS}
        if unknown:
            parser.error(f"unknown server(s): {', '.join(sorted(unknown))}")
        peers = [p for p in PEERS if p.name in wanted]
    peers = available(peers, results)
    info = machine_info()
    versions = peer_versions(peers)
    try:
        measure(args, peers, results, log)
    except KeyboardInterrupt:
        log("interrupted: reporting what was measured")
    raw = LOGS / "fanout-runs.json"  # every run's JSON, for a closer look
    raw.write_text(json.dumps([{"server": name, "subscribers": n, "ok": r.ok, "other": r.other,
                                "error": r.error, "result": r.result}
                               for (name, n), runs in results.runs.items() for r in runs],
                              indent=1) + "\n")
    section = report(args, peers, results, info, versions, time.monotonic() - started)
    print(section)
    if not args.no_write:
        replace_section(SECTION, section)
        log(f"written to {HERE / 'RESULTS.md'}")
    return 0 if not results.problems else 1


if __name__ == "__main__":
    sys.exit(main())
