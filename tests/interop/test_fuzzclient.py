"""``python -m corral.examples.fuzzclient`` against a small fake fuzzing server.

The fake server (websockets' server) speaks the three endpoints of an Autobahn-style fuzzing
server: ``/getCaseCount``, ``/runCase?case=N&agent=A`` and ``/updateReports?agent=A``. Each
case sends messages of every kind and checks that they come back identical.
"""

from __future__ import annotations

import asyncio
import sys
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from websockets.asyncio.server import ServerConnection, serve
from websockets.exceptions import ConnectionClosed

pytestmark = pytest.mark.timeout(15)

CASES = 3
AGENT = "corral test/agent"  # a space and a slash: the client must escape it in the query
MiB = 2**20

# A list is sent fragmented, one frame per item; the echo comes back as one message.
SENT: list[Any] = [
    "hello",
    "",
    "é€😀",
    b"\x00\x01\xfe\xff",
    b"",
    ["frag", "men", "ted é"],
    [b"\x01", b"\x02\x03", b"\x04"],
    bytes(range(256)) * (2 * MiB // 256),  # over corral's default 1 MiB limit
]


def expected(message: Any) -> str | bytes:
    if isinstance(message, list):
        return "".join(message) if isinstance(message[0], str) else b"".join(message)
    return message  # type: ignore[no-any-return]


class FakeFuzzingServer:
    def __init__(self) -> None:
        self.results: dict[int, bool] = {}
        self.agents: set[str] = set()
        self.reports_updated = asyncio.Event()

    async def handler(self, ws: ServerConnection) -> None:
        assert ws.request is not None
        parts = urlsplit(ws.request.path)
        query = {name: values[0] for name, values in parse_qs(parts.query).items()}
        if parts.path == "/getCaseCount":
            await ws.send(str(CASES))
            await ws.close()
        elif parts.path == "/runCase":
            self.agents.add(query["agent"])
            await self.run_case(ws, int(query["case"]))
        elif parts.path == "/updateReports":
            self.agents.add(query["agent"])
            self.reports_updated.set()
            await ws.close()
        else:
            await ws.close(1011, "unknown path")

    async def run_case(self, ws: ServerConnection, case: int) -> None:
        self.results[case] = False
        for message in SENT:
            await ws.send(message)
        pong = await ws.ping(b"case %d" % case)
        echoes = [await ws.recv() for _ in SENT]
        await asyncio.wait_for(pong, 2)
        wanted = [expected(message) for message in SENT]
        self.results[case] = all(
            type(got) is type(want) and got == want
            for got, want in zip(echoes, wanted, strict=True)
        )
        if case == 2:
            # A case the client "fails": the server closes with a protocol error. The
            # client must carry on with the next case.
            await ws.close(1002, "protocol error")
        else:
            await ws.close()
        try:
            await asyncio.wait_for(ws.recv(), 2)
            self.results[case] = False  # nothing may follow the echoes
        except ConnectionClosed:
            pass


async def test_fuzzclient_runs_every_case() -> None:
    fake = FakeFuzzingServer()
    async with serve(fake.handler, "127.0.0.1", 0, compression=None, max_size=None,
                     ping_interval=None) as server:
        port = server.sockets[0].getsockname()[1]
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "corral.examples.fuzzclient", f"ws://127.0.0.1:{port}", AGENT,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )
        try:
            _, stderr = await asyncio.wait_for(process.communicate(), 10)
        finally:
            if process.returncode is None:
                process.kill()
                await process.wait()
    log = stderr.decode()
    assert process.returncode == 0, log
    assert fake.results == {case: True for case in range(1, CASES + 1)}, log
    assert fake.agents == {AGENT}
    assert fake.reports_updated.is_set()
    for case in range(1, CASES + 1):
        assert f"case {case}/{CASES}" in log
    assert "closed 1002" in log


async def test_fuzzclient_reports_unreachable_server() -> None:
    async with serve(lambda ws: ws.close(), "127.0.0.1", 0) as server:
        port = server.sockets[0].getsockname()[1]
    # The server is gone: nothing listens on the port any more.
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "corral.examples.fuzzclient", f"ws://127.0.0.1:{port}", AGENT,
        stderr=asyncio.subprocess.PIPE,
    )
    _, stderr = await asyncio.wait_for(process.communicate(), 10)
    assert process.returncode == 1
    assert b"cannot get the case count" in stderr
