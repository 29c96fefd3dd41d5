"""The Python half of scripts/autobahn.sh: wstest spec files, and what its reports say.

    autobahn_report.py spec fuzzingclient --url ws://127.0.0.1:9001 --cases quick --outdir D
    autobahn_report.py summary [--strict] [--results compliance/RESULTS.md --wstest TEXT] \\
        server=DIR client=DIR

Each side's DIR holds wstest's reports in DIR/reports (index.json, one JSON file per case), and
what autobahn.sh noted beside them: command.txt (what was tested) and seconds.txt (how long
it took). ``summary`` prints one line per side and every case that is not OK; with
``--results`` it writes the Markdown table (compliance/RESULTS.md). It exits 1 when a side left
no report or, with ``--strict`` (autobahn.sh always asks for it), when any case is FAILED,
NON-STRICT or UNIMPLEMENTED, or its closing handshake is not OK. Python 3 only (wstest itself
runs on 2.7).
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

AGENT = "corral"
BEHAVIOURS = ("OK", "INFORMATIONAL", "NON-STRICT", "FAILED", "UNIMPLEMENTED")
FAILING = frozenset({"FAILED", "NON-STRICT", "UNIMPLEMENTED"})
# wstest's verdicts on the closing handshake: anything else (FAILED, UNCLEAN, WRONG CODE,
# FAILED BY CLIENT) is a failure of the case too.
CLOSE_OK = frozenset({"OK", "INFORMATIONAL"})

# Quick mode: the core protocol (framing, pings, reserved bits, opcodes, fragmentation, UTF-8,
# closing, 9.x big messages, 10.x autofragmentation) and the first compression group of each
# deflate extension; the other 12.x/13.x groups repeat 12.1/13.1 under other parameters.
CASES = {
    "full": ["*"],
    "quick": [*(f"{section}.*" for section in range(1, 11)), "12.1.*", "13.1.*"],
    # The quick run against an ASGI app (autobahn.sh --quick --asgi): the sections the
    # issue compares with uvicorn's (1-10 and 12.1); 13.1 is the same engine's compression.
    "asgi": [*(f"{section}.*" for section in range(1, 11)), "12.1.*"],
    # Without the compression sections (autobahn.sh --quick --no-compression): the pure
    # path's run in scripts/test.sh, whose compression is the compiled run's zlib code.
    "core": [f"{section}.*" for section in range(1, 11)],
}


def make_spec(mode: str, url: str, outdir: str, cases: str) -> dict[str, Any]:
    """The spec for ``wstest -m MODE -s FILE``: fuzzingclient tests a server at ``url``,
    fuzzingserver listens on ``url`` for a client."""
    spec: dict[str, Any] = {"outdir": outdir, "cases": CASES[cases], "exclude-cases": [],
                            "exclude-agent-cases": {}}
    if mode == "fuzzingclient":
        spec["servers"] = [{"agent": AGENT, "url": url}]
    else:
        spec["url"] = url
    return spec


@dataclass(frozen=True)
class Case:
    id: str
    behavior: str
    close: str
    remote_code: int | None
    why: str  # wstest's own words on the result, for a case that is not OK

    @property
    def ok(self) -> bool:
        return self.behavior == "OK" and self.close == "OK"

    @property
    def failing(self) -> bool:
        return self.behavior in FAILING or self.close not in CLOSE_OK


@dataclass(frozen=True)
class Side:
    name: str
    directory: Path
    cases: list[Case] | None  # None: wstest left no report
    command: str
    seconds: str

    def counts(self) -> dict[str, int]:
        counts = dict.fromkeys(BEHAVIOURS, 0)
        for case in self.cases or []:
            counts[case.behavior] = counts.get(case.behavior, 0) + 1
        return counts

    @property
    def failing(self) -> list[Case]:
        return [case for case in self.cases or [] if case.failing]

    @property
    def bad_closes(self) -> int:
        return sum(case.close not in CLOSE_OK for case in self.cases or [])

    @property
    def not_ok(self) -> list[Case]:
        return [case for case in self.cases or [] if not case.ok]

    def summary(self) -> str:
        if self.cases is None:
            return (f"autobahn {self.name}: NO REPORT (wstest wrote no index.json; "
                    f"the logs are in {self.directory})")
        counts = " ".join(f"{name}={count}" for name, count in self.counts().items())
        closes = f", closing handshake not OK in {self.bad_closes}" if self.bad_closes else ""
        return f"autobahn {self.name}: {len(self.cases)} cases, {counts}{closes}"


def _case_key(case_id: str) -> tuple[int, ...]:
    return tuple(int(part) for part in case_id.split("."))


def _read_text(path: Path, default: str) -> str:
    try:
        return path.read_text().strip()
    except OSError:
        return default


def _why(reports: Path, entry: dict[str, Any]) -> str:
    """wstest's explanation from the case's own report file."""
    try:
        detail = json.loads((reports / entry["reportfile"]).read_text())
    except (OSError, KeyError, ValueError):
        return ""
    parts = [str(detail.get(key) or "").strip() for key in ("result", "resultClose")]
    return " / ".join(part for part in parts if part)


def load_side(name: str, directory: Path) -> Side:
    reports = directory / "reports"
    command = _read_text(directory / "command.txt", "?")
    seconds = _read_text(directory / "seconds.txt", "?")
    try:
        index = json.loads((reports / "index.json").read_text())
    except (OSError, ValueError):
        return Side(name, directory, None, command, seconds)
    # One agent is tested per run; a client's agent name is whatever it said in its URL.
    agent = AGENT if AGENT in index else next(iter(index), None)
    entries: dict[str, dict[str, Any]] = index.get(agent, {}) if agent is not None else {}
    cases = []
    for case_id in sorted(entries, key=_case_key):
        entry = entries[case_id]
        behavior, close = entry["behavior"], entry["behaviorClose"]
        why = "" if behavior == close == "OK" else _why(reports, entry)
        cases.append(Case(case_id, behavior, close, entry.get("remoteCloseCode"), why))
    return Side(name, directory, cases, command, seconds)


def describe(case: Case) -> str:
    code = "none" if case.remote_code is None else str(case.remote_code)
    text = f"{case.id}: {case.behavior} (close {case.close}, peer's close code {code})"
    return f"{text}: {case.why}" if case.why else text


def _git(*args: str) -> str:
    try:
        done = subprocess.run(["git", *args], capture_output=True, text=True, check=True)
    except (OSError, subprocess.CalledProcessError):
        return ""
    return done.stdout.strip()


def commit() -> str:
    """The short commit, ``-dirty`` when the tree differs from it (RESULTS.md aside: the last
    run's results do not make the code under test dirty)."""
    head = _git("rev-parse", "--short", "HEAD") or "unknown"
    changes = _git("status", "--porcelain", "--", ".", ":(exclude)compliance/RESULTS.md")
    return f"{head}-dirty" if changes else head


def _corral_build() -> str:
    try:
        import corral.accel  # the corral under test: this helper runs in the project's venv
    except ImportError:
        return "corral not importable"
    return f"corral.accel.COMPILED = {corral.accel.COMPILED}"


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def results_markdown(sides: list[Side], wstest: str) -> str:
    date = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    lines = [
        "# Autobahn|Testsuite results",
        "",
        "Written by `scripts/autobahn.sh --full`, which runs all of wstest's cases against",
        "corral's server and with corral's client; rerun it rather than editing this file.",
        "",
        "| | |",
        "|---|---|",
        f"| date | {date} |",
        f"| commit | {commit()} |",
        f"| wstest | {_cell(wstest)} |",
        f"| corral | Python {platform.python_version()}, {_corral_build()} |",
        "",
        "| side | cases | " + " | ".join(BEHAVIOURS) + " | close not OK | seconds |",
        "|---|---|" + "---|" * len(BEHAVIOURS) + "---|---|",
    ]
    for side in sides:
        if side.cases is None:
            lines.append(f"| {side.name} | no report |" + " |" * (len(BEHAVIOURS) + 1)
                         + f" {side.seconds} |")
            continue
        counts = " | ".join(str(count) for count in side.counts().values())
        lines.append(f"| {side.name} | {len(side.cases)} | {counts} | {side.bad_closes} | "
                     f"{side.seconds} |")
    for side in sides:
        lines += ["", f"## {side.name}: cases not OK", "", f"`{_cell(side.command)}`", ""]
        if side.cases is None:
            lines.append("wstest left no report.")
        elif not side.not_ok:
            lines.append("None: every case OK.")
        else:
            lines += ["| case | behaviour | close | peer's close code | wstest says |",
                      "|---|---|---|---|---|"]
            lines += [f"| {case.id} | {case.behavior} | {case.close} | "
                      f"{'' if case.remote_code is None else case.remote_code} | "
                      f"{_cell(case.why)} |" for case in side.not_ok]
    return "\n".join(lines) + "\n"


def _side_argument(text: str) -> tuple[str, Path]:
    name, sep, directory = text.partition("=")
    if not sep or not name or not directory:
        raise argparse.ArgumentTypeError(f"expected SIDE=DIR, got {text!r}")
    return name, Path(directory)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    spec = commands.add_parser("spec", help="print a wstest spec file (JSON)")
    spec.add_argument("mode", choices=("fuzzingclient", "fuzzingserver"))
    spec.add_argument("--url", required=True)
    spec.add_argument("--outdir", required=True)
    spec.add_argument("--cases", choices=sorted(CASES), default="full")
    summary = commands.add_parser("summary", help="summarize the reports of each side")
    summary.add_argument("sides", nargs="+", type=_side_argument, metavar="SIDE=DIR")
    summary.add_argument("--strict", action="store_true",
                         help="exit 1 on any FAILED, NON-STRICT or UNIMPLEMENTED case")
    summary.add_argument("--results", type=Path, metavar="FILE",
                         help="write the results as Markdown here")
    summary.add_argument("--wstest", default="?", help="wstest's version, for --results")
    args = parser.parse_args(argv)

    if args.command == "spec":
        print(json.dumps(make_spec(args.mode, args.url, args.outdir, args.cases), indent=2))
        return 0
    sides = [load_side(name, directory) for name, directory in args.sides]
    status = 0
    for side in sides:
        print(side.summary())
        for case in side.not_ok:
            print(f"  {describe(case)}")
        if side.cases is None or (args.strict and side.failing):
            status = 1
    if args.results is not None:
        args.results.write_text(results_markdown(sides, args.wstest))
        print(f"results written to {args.results}")
    return status


if __name__ == "__main__":
    sys.exit(main())
