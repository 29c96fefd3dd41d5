#!/usr/bin/env python3
"""One Starlette application on corral, uvicorn and granian: server CPU per WebSocket message,
per handshake and per HTTP request, and memory per idle WebSocket, measured the same way.

    bench/.venv/bin/python bench/asgi.py            # 3 reps, 2 s runs, 10,000 idle conns
    bench/.venv/bin/python bench/asgi.py --quick    # 1 rep, 1 s runs, 1,000 idle conns

The application is bench/servers/asgi_app.py (a WebSocket echo on "/", an HTTP "hello" on
"/hello"), each server with compression off and keepalive pings off. The WebSocket figures
come from bench/loadgen.c, as in bench/run.py (whose process handling and measurement this
reuses); the HTTP figure from bench/http_load.py (keep-alive GETs, 50 connections). corral's
own echo handler is measured beside them for reference. The tables go into the "## ASGI"
section of bench/RESULTS.md unless --no-write.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from typing import Any

import run as peers
from _common import HERE, median, replace_section
from compression import machine_info

SECTION = "## ASGI: one Starlette app on corral, uvicorn and granian"
HTTP_LOAD = HERE / "http_load.py"

SERVERS = [
    peers.Server("corral-asgi", ["asgi_app.py", "--server", "corral"], "corral",
                 {"CORRAL_PURE": ""}, "the Starlette app served by corral (compiled)"),
    peers.Server("uvicorn", ["asgi_app.py", "--server", "uvicorn"], "uvicorn", {},
                 "uvloop, httptools, its default WebSocket implementation"),
    peers.Server("granian", ["asgi_app.py", "--server", "granian"], "granian", {},
                 "embedded server (one process), its Rust HTTP and WebSocket stack"),
    peers.Server("corral-native", ["echo_corral.py"], "corral", {"CORRAL_PURE": ""},
                 "corral's own echo handler, for reference (no HTTP route)"),
]
WS_SCENARIOS = [sc for sc in peers.SCENARIOS if sc.key in ("e64p1", "e16k", "hs")]
HTTP = peers.Scenario("http", "HTTP request C=50 keep-alive", "http", ())
SCENARIOS = [*WS_SCENARIOS, HTTP]


def run_http(port: int, pid: int, args: argparse.Namespace) -> peers.Run:
    command = peers._taskset(peers.CLIENT_CPU, [
        sys.executable, str(HTTP_LOAD), "-p", str(port), "-c", "50", "-d", f"{args.duration:g}",
        "-w", f"{args.warmup:g}", "-S", str(pid)])
    try:
        done = subprocess.run(command, capture_output=True, text=True,
                              timeout=args.duration + args.warmup + 40)
    except subprocess.TimeoutExpired:
        return peers.Run(False, {}, 0.0, "http_load did not finish")
    result = peers._parse_json(done.stdout)
    error = "" if done.returncode == 0 else str(result.get("first_error")
                                                or done.stderr.strip()[-300:])
    # Other load is not measured here: the Python load generator is itself a process.
    return peers.Run(done.returncode == 0 and bool(result), result, 0.0, error)


def run_all(args: argparse.Namespace, servers: list[peers.Server], results: peers.Results,
            log: Any) -> None:
    window = ["-d", f"{args.duration:g}", "-w", f"{args.warmup:g}"]
    for rep in range(1, args.reps + 1):
        for server in servers:
            if server.name in results.skipped:
                continue
            try:
                proc = peers.ServerProcess(server, f"asgi-{server.name}-rep{rep}")
            except RuntimeError as exc:
                results.skipped[server.name] = f"did not start: {exc}"
                continue
            try:
                for sc in SCENARIOS:
                    if sc is HTTP:
                        if server.name == "corral-native":
                            continue
                        got = run_http(proc.port, proc.pid, args)
                    else:
                        got = peers.run_loadgen([sc.mode, "-p", str(proc.port), *sc.args,
                                                 *window, "-S", str(proc.pid)],
                                                args.duration + args.warmup + 40, proc.pid)
                    results.runs.setdefault((server.name, sc.key), []).append(got)
                    us = got.us_per()
                    log(f"rep {rep} {server.name:13} {sc.key:6} {got.rate():>10,.0f}/s "
                        f"{us if us is not None else float('nan'):8.1f} us"
                        + (f"  ERROR {got.error}" if not got.ok else ""))
                    if not got.ok:
                        results.problems.append(f"{server.name} rep {rep} {sc.title}: "
                                                f"{got.error}")
            finally:
                proc.stop()
            mem = peers.measure_memory(server, rep, args.idle, 0.3 if args.quick else 0.5)
            results.memory.setdefault(server.name, []).append(mem)
            log(f"rep {rep} {server.name:13} idle   {mem.kib_per_conn:8.2f} KiB/conn"
                + (f"  ERROR {mem.error}" if not mem.ok else ""))


def report(args: argparse.Namespace, servers: list[peers.Server], results: peers.Results,
           seconds: float) -> str:
    info = machine_info()
    versions = ", ".join(f"{k} {v}" for k, v in peers.peer_versions(servers).items())
    names = [s.name for s in servers if s.name not in results.skipped]
    cpu: dict[str, dict[str, float | None]] = {}
    cpu_rows, rate_rows = [], []
    for name in names:
        cpu[name] = {}
        cells, rcells = [], []
        for sc in SCENARIOS:
            runs = results.runs.get((name, sc.key), [])
            if not runs:
                cells.append("—")
                rcells.append("—")
                cpu[name][sc.key] = None
                continue
            text, value = peers._cell_us(runs)
            cells.append(text)
            cpu[name][sc.key] = value
            ok = [r for r in runs if r.ok]
            rcells.append(f"{median([r.rate() for r in ok]):,.0f}/s" if ok else "err")
        mtext, mvalue = peers._mem_cell(results.memory.get(name, []))
        cpu[name]["idle"] = mvalue
        cells.append(mtext)
        cpu_rows.append(f"| {name} | " + " | ".join(cells) + " |")
        rate_rows.append(f"| {name} | " + " | ".join(rcells) + " |")
    titles = " | ".join(sc.title for sc in SCENARIOS)
    sep = "|---" * (len(SCENARIOS) + 2) + "|"

    def ratio(a: str, b: str, key: str) -> float | None:
        x, y = cpu.get(a, {}).get(key), cpu.get(b, {}).get(key)
        return x / y if x is not None and y else None

    checks = []
    for key, title in (("e64p1", "64 B message"), ("e16k", "16 KiB message"),
                       ("hs", "handshake")):
        checks.append((f"{title} ≤ 0.7x uvicorn", ratio("corral-asgi", "uvicorn", key), 0.7))
        checks.append((f"{title} ≤ 1.0x granian", ratio("corral-asgi", "granian", key), 1.0))
    checks.append(("HTTP request ≤ 1.0x uvicorn", ratio("corral-asgi", "uvicorn", "http"), 1.0))
    checks.append(("KiB per idle WebSocket < uvicorn",
                   ratio("corral-asgi", "uvicorn", "idle"), 0.999))
    checks.append(("KiB per idle WebSocket < granian",
                   ratio("corral-asgi", "granian", "idle"), 0.999))
    target_rows = [f"| {title} | {f'{r:.2f}' if r is not None else '—'} | "
                   f"{'—' if r is None else ('yes' if r <= limit else 'no')} |"
                   for title, r, limit in checks]
    lines = [
        SECTION,
        "",
        f"`bench/asgi.py{' --quick' if args.quick else ''}` on {info['date']}, corral "
        f"{info['commit']}. Machine: {info['cpu']}, {info['nproc']} CPUs, kernel "
        f"{info['kernel']}, Python {info['python']}. Versions: {versions}. {args.reps} "
        f"repetition(s) round-robin, {args.duration:g} s measured after {args.warmup:g} s "
        f"warm-up; servers on CPU {peers.SERVER_CPU}, load on CPU {peers.CLIENT_CPU}. The run "
        f"took {seconds:.0f} s; failed runs: {len(results.problems)}.",
        "",
        "The same Starlette application (bench/servers/asgi_app.py) on each server. **Server "
        "CPU per operation** in µs (user + system from /proc/PID/stat over the window; user "
        "in parentheses; ± half the spread over repetitions): per echoed WebSocket message, "
        "per WebSocket open/handshake/close cycle, per HTTP keep-alive request "
        "(bench/http_load.py), and KiB of server RSS per idle WebSocket "
        f"({args.idle:,} held). Lower is better.",
        "",
        f"| server | {titles} | KiB per idle WebSocket |",
        sep,
        *cpu_rows,
        "",
        "Throughput (the load generator's limit where the server was not saturated):",
        "",
        f"| server | {titles} |",
        "|---" * (len(SCENARIOS) + 1) + "|",
        *rate_rows,
        "",
        "The targets of issue 12 (corral-asgi's CPU over the peer's):",
        "",
        "| target | ratio | met |",
        "|---|---|---|",
        *target_rows,
        "",
        "Servers: " + "; ".join(f"**{s.name}**: {s.note}" for s in servers) + ".",
    ]
    if results.skipped:
        lines += ["", "Skipped: " + "; ".join(f"{k}: {v}" for k, v in results.skipped.items())
                  + "."]
    if results.problems:
        lines += ["", "Failed runs:", *(f"- {p}" for p in results.problems[:20])]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--reps", type=int, default=None)
    parser.add_argument("--duration", type=float, default=None)
    parser.add_argument("--warmup", type=float, default=None)
    parser.add_argument("--idle", type=int, default=None)
    parser.add_argument("--no-write", action="store_true")
    parser.add_argument("--quiet", "-q", action="store_true")
    args = parser.parse_args(argv)
    for name, (quick, full) in {"reps": (1, 3), "duration": (1.0, 2.0),
                                "warmup": (0.25, 0.5), "idle": (1000, 10000)}.items():
        if getattr(args, name) is None:
            setattr(args, name, quick if args.quick else full)

    def log(text: str) -> None:
        if not args.quiet:
            print(text, file=sys.stderr, flush=True)

    started = time.monotonic()
    peers._raise_fd_limit()
    peers.build_c(log)
    results = peers.Results()
    servers = peers.available(SERVERS, results)
    run_all(args, servers, results, log)
    text = report(args, servers, results, time.monotonic() - started)
    print(text)
    if not args.no_write:
        replace_section(SECTION, text)
    return 1 if results.problems else 0


if __name__ == "__main__":
    raise SystemExit(main())
