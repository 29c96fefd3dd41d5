"""Client for an Autobahn-style fuzzing server: echo every case, then ask for the reports.

    python -m corral.examples.fuzzclient ws://127.0.0.1:9001 corral

Reads the number of cases from ``/getCaseCount``, runs each case on
``/runCase?case=N&agent=AGENT`` (every message echoed back as it came, text as text, binary
as binary, until the server closes), then asks for ``/updateReports?agent=AGENT``. A case the
server fails (a protocol error, a refused handshake) is reported and the next one runs.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from urllib.parse import quote

from corral import ConnectionClosed, CorralError, connect

# The fuzzing suite's largest messages are 16 MiB; leave room for its framing tests.
MAX_MESSAGE_SIZE = 16 * 2**20 + 64 * 1024


def _log(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


async def case_count(base: str) -> int:
    async with connect(f"{base}/getCaseCount") as ws:
        return int(await ws.recv())


async def run_case(base: str, case: int, agent: str) -> str:
    """Echo until the server closes; return how the case ended."""
    url = f"{base}/runCase?case={case}&agent={quote(agent, safe='')}"
    try:
        async with connect(url, max_message_size=MAX_MESSAGE_SIZE) as ws:
            try:
                async for message in ws:
                    await ws.send(message)
            except ConnectionClosed:
                pass  # the server failed the connection: the close code says why
            reason = ws.close_reason
    except (CorralError, OSError, TimeoutError) as exc:
        return f"error: {type(exc).__name__}: {exc}"
    if reason is None:
        return "closed"
    return f"closed {reason.code} ({reason.kind.value})"


async def update_reports(base: str, agent: str) -> None:
    async with connect(f"{base}/updateReports?agent={quote(agent, safe='')}") as ws:
        await ws.wait_closed()


async def fuzz(base: str, agent: str) -> int:
    base = base.rstrip("/")
    try:
        count = await case_count(base)
    except (CorralError, OSError, TimeoutError, ValueError) as exc:
        _log(f"cannot get the case count from {base}: {type(exc).__name__}: {exc}")
        return 1
    _log(f"{count} cases")
    for case in range(1, count + 1):
        outcome = await run_case(base, case, agent)
        _log(f"case {case}/{count}: {outcome}")
    try:
        await update_reports(base, agent)
    except (CorralError, OSError, TimeoutError) as exc:
        _log(f"updating the reports failed: {type(exc).__name__}: {exc}")
        return 1
    _log("reports updated")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m corral.examples.fuzzclient",
        description="Run every case of an Autobahn-style fuzzing server against corral.",
    )
    parser.add_argument("url", metavar="URL", help="the fuzzing server, e.g. ws://127.0.0.1:9001")
    parser.add_argument("agent", metavar="AGENT", help="the agent name in the reports")
    args = parser.parse_args(argv)
    return asyncio.run(fuzz(args.url, args.agent))


if __name__ == "__main__":
    sys.exit(main())
