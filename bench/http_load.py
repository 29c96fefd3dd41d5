"""HTTP/1.1 keep-alive load for bench/asgi.py: C connections each send ``GET PATH`` and the
next one as soon as the answer is whole, for a warm-up then a measured window; prints one
line of JSON in the shape of loadgen's (``msgs``, ``msgs_per_s``, ``server_user_s``,
``server_sys_s``, ``window_s``), the server's CPU read from /proc/PID/stat at the window's
edges. The server's CPU per request does not need the server to be saturated, so a Python
client is enough (run pinned to another core than the server's).

    python bench/http_load.py -p PORT -c 50 -d 2 -w 0.5 -S SERVER_PID [--path /hello]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import time


def proc_seconds(pid: int) -> tuple[float, float]:
    """The user and system CPU seconds of ``pid`` (all its threads)."""
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rpartition(")")[2].split()
    tick = os.sysconf("SC_CLK_TCK")
    return int(fields[11]) / tick, int(fields[12]) / tick


class Client(asyncio.Protocol):
    """One keep-alive connection asking again as soon as each answer is whole."""

    def __init__(self, request: bytes, counts: list[int], errors: list[str]) -> None:
        self.request = request
        self.counts = counts
        self.errors = errors
        self.buffer = b""
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.transport.write(self.request)  # type: ignore[union-attr]

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while True:
            end = self.buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            head = self.buffer[:end].lower()
            at = head.find(b"content-length:")
            if not head.startswith(b"http/1.1 200") or at < 0:
                self.errors.append(head[:80].decode(errors="replace"))
                assert self.transport is not None
                self.transport.close()
                return
            length = int(head[at + 15:].split(b"\r\n", 1)[0])
            whole = end + 4 + length
            if len(self.buffer) < whole:
                return
            self.buffer = self.buffer[whole:]
            self.counts[0] += 1
            assert self.transport is not None
            self.transport.write(self.request)

    def connection_lost(self, exc: Exception | None) -> None:
        self.errors.append(f"connection lost: {exc}")


async def run(args: argparse.Namespace) -> dict[str, object]:
    loop = asyncio.get_running_loop()
    request = (f"GET {args.path} HTTP/1.1\r\nHost: 127.0.0.1:{args.port}\r\n"
               "User-Agent: corral-bench\r\n\r\n").encode()
    counts = [0]
    errors: list[str] = []
    transports = []
    for _ in range(args.conns):
        transport, _ = await loop.create_connection(
            lambda: Client(request, counts, errors), "127.0.0.1", args.port)
        transports.append(transport)
    await asyncio.sleep(args.warmup)
    start_count, start = counts[0], time.monotonic()
    user0, sys0 = proc_seconds(args.server_pid) if args.server_pid else (0.0, 0.0)
    await asyncio.sleep(args.duration)
    user1, sys1 = proc_seconds(args.server_pid) if args.server_pid else (0.0, 0.0)
    done, window = counts[0] - start_count, time.monotonic() - start
    for transport in transports:
        transport.close()
    result: dict[str, object] = {"mode": "http", "conns": args.conns, "msgs": done,
                                 "msgs_per_s": done / window, "window_s": window}
    if args.server_pid:
        result.update(server_user_s=user1 - user0, server_sys_s=sys1 - sys0)
    failures = [e for e in errors if not e.startswith("connection lost: None")]
    if failures:
        result["first_error"] = failures[0]
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-p", "--port", type=int, required=True)
    parser.add_argument("-c", "--conns", type=int, default=50)
    parser.add_argument("-d", "--duration", type=float, default=2.0)
    parser.add_argument("-w", "--warmup", type=float, default=0.5)
    parser.add_argument("-S", "--server-pid", type=int, default=0)
    parser.add_argument("--path", default="/hello")
    args = parser.parse_args()
    try:
        import uvloop
        uvloop.install()
    except ImportError:
        pass
    result = asyncio.run(asyncio.wait_for(run(args), args.warmup + args.duration + 30))
    print(json.dumps(result), flush=True)
    return 1 if "first_error" in result or not result["msgs"] else 0


if __name__ == "__main__":
    raise SystemExit(main())
