"""Many machines in miniature: Redis, three corral server processes sharing it as their
broker, and Debian's nginx in front of them as the WebSocket reverse proxy.

Clients connected through the proxy land on different nodes and all receive every broadcast.
Then one node stops: its clients see 1001, reconnect through the proxy to the nodes left, and
keep receiving; nothing published after they are back is lost, nothing arrives twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

import corral
from helpers import free_port

ROOT = Path(__file__).resolve().parents[2]
NGINX = shutil.which("nginx") or ("/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists() else None)
NODES = 3
CLIENTS = 9  # three per node: nginx balances new connections round-robin

pytestmark = pytest.mark.skipif(NGINX is None, reason="nginx is not installed")


async def wait_listening(port: int, process: subprocess.Popen[bytes] | None = None) -> None:
    """Poll until something accepts TCP on ``port`` (bounded: 10 s)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 10
    while True:
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
        except OSError:
            if process is not None and process.poll() is not None:
                raise RuntimeError(f"process exited with {process.returncode}") from None
            if loop.time() > deadline:
                raise
            await asyncio.sleep(0.05)
        else:
            writer.close()
            return


async def stop_node(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM and wait, without blocking the loop: the clients in this test must answer the
    node's closing handshake meanwhile."""
    process.send_signal(signal.SIGTERM)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 15
    while process.poll() is None and loop.time() < deadline:
        await asyncio.sleep(0.02)


def stop_process(process: subprocess.Popen[bytes], sig: int = signal.SIGTERM) -> None:
    if process.poll() is None:
        process.send_signal(sig)
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


NGINX_CONF = """\
daemon off;
master_process on;
worker_processes 1;
user root;
pid {dir}/nginx.pid;
error_log {dir}/error.log info;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    client_body_temp_path {dir}/body;
    proxy_temp_path {dir}/proxy;
    fastcgi_temp_path {dir}/fastcgi;
    uwsgi_temp_path {dir}/uwsgi;
    scgi_temp_path {dir}/scgi;
    upstream corral {{
{servers}
    }}
    server {{
        listen 127.0.0.1:{port};
        location / {{
            proxy_pass http://corral;
            proxy_http_version 1.1;
            proxy_set_header Upgrade $http_upgrade;
            proxy_set_header Connection "upgrade";
            proxy_set_header Host $host;
            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
            proxy_set_header X-Forwarded-Proto $scheme;
            proxy_read_timeout 1h;
            proxy_connect_timeout 2s;
        }}
    }}
}}
"""


@contextlib.contextmanager
def nginx(tmp_path: Path, upstreams: list[int], stop: int = signal.SIGQUIT) -> Iterator[int]:
    """nginx in the foreground on a random port, proxying WebSocket upgrades to
    ``upstreams``; stopped with ``stop`` (graceful by default) on exit."""
    assert NGINX is not None
    port = free_port()
    servers = "\n".join(f"        server 127.0.0.1:{p} max_fails=1 fail_timeout=30s;"
                        for p in upstreams)
    conf = tmp_path / "nginx.conf"
    conf.write_text(NGINX_CONF.format(dir=tmp_path, servers=servers, port=port))
    process = subprocess.Popen([NGINX, "-p", str(tmp_path), "-c", str(conf),
                                "-e", str(tmp_path / "error.log")],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        yield port
    finally:
        stop_process(process, stop)  # SIGQUIT: graceful, lets proxied connections finish


@contextlib.contextmanager
def corral_nodes(broker: str, count: int) -> Iterator[list[tuple[int, subprocess.Popen[bytes]]]]:
    nodes = []
    try:
        for _ in range(count):
            port = free_port()
            process = subprocess.Popen(
                [sys.executable, "-m", "corral", "run", "tests.interop.multinode_app:app",
                 "--port", str(port), "--broker", broker, "--log-level", "warning"],
                cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
            )
            nodes.append((port, process))
        yield nodes
    finally:
        for _, process in nodes:
            stop_process(process)
            if process.stderr is not None:
                process.stderr.close()


class Client:
    """A reconnecting client of the proxy that records which node it is on and what it got."""

    def __init__(self, connecting: corral.connect) -> None:
        self._connect = connecting
        self.ws: corral.ReconnectingWebSocket | None = None
        self.nodes: list[int] = []  # the node of each connection, in order
        self.messages: list[str] = []
        self.changed = asyncio.Event()
        self.task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self.ws = await self._connect
        self.task = asyncio.create_task(self._read())

    async def _read(self) -> None:
        assert self.ws is not None
        async for message in self.ws:
            assert isinstance(message, str)
            if message.startswith("node "):
                self.nodes.append(int(message.split()[1]))
            else:
                self.messages.append(message)
            self.changed.set()

    async def wait_for(self, predicate: Callable[[], object], what: str) -> None:
        async def until() -> None:
            while not predicate():
                self.changed.clear()
                await self.changed.wait()

        try:
            await asyncio.wait_for(until(), 15)
        except TimeoutError:
            pytest.fail(f"a client never {what}: nodes {self.nodes}, messages {self.messages}")


async def send(client: Client, text: str) -> None:
    assert client.ws is not None
    await client.ws.send(text)


async def test_broadcast_through_nginx_survives_a_node_going_away(
    redis_server: Any, tmp_path: Path
) -> None:
    broker = redis_server.url
    with corral_nodes(broker, NODES) as nodes:
        for port, process in nodes:
            await wait_listening(port, process)
        with nginx(tmp_path, [port for port, _ in nodes]) as proxy:
            await wait_listening(proxy)
            policy = corral.Reconnect(initial_delay=0.05, max_delay=0.5)
            clients = [Client(corral.connect(f"ws://127.0.0.1:{proxy}/feed", reconnect=policy))
                       for _ in range(CLIENTS)]
            try:
                for client in clients:
                    await client.start()
                for client in clients:
                    await client.wait_for(lambda c=client: c.nodes, "landed on a node")
                pids = {process.pid for _, process in nodes}
                landed = {client.nodes[0] for client in clients}
                assert landed == pids  # round-robin: every node has clients

                # Every client gets a broadcast sent through any node, once.
                await send(clients[0], "before")
                for client in clients:
                    await client.wait_for(lambda c=client: "before" in c.messages,
                                          "received the first broadcast")

                # One node goes away: its clients get 1001 and come back through the proxy.
                port, gone = nodes[1]
                moved = [client for client in clients if client.nodes[0] == gone.pid]
                await stop_node(gone)
                assert gone.returncode == 0
                for client in moved:
                    await client.wait_for(lambda c=client: len(c.nodes) == 2, "reconnected")
                    assert client.nodes[1] != gone.pid and client.nodes[1] in pids
                    assert client.ws is not None and client.ws.reconnects == 1

                # Nothing published after they are back is lost or doubled, in order.
                sender = next(c for c in clients if c not in moved)
                sent = [f"after {i}" for i in range(20)]
                for text in sent:
                    await send(sender, text)
                for client in clients:
                    await client.wait_for(lambda c=client: c.messages[-1:] == [sent[-1]],
                                          "received every later broadcast")
                    after = [m for m in client.messages if m.startswith("after ")]
                    assert after == sent
                    assert client.messages.count("before") == 1
            finally:
                for client in clients:
                    if client.ws is not None:
                        await client.ws.close()
                    if client.task is not None:
                        client.task.cancel()
                        with contextlib.suppress(BaseException):
                            await client.task


# -- the client's address through nginx (forwarded_allow_ips) ---------------------------------


class TellsAddress(corral.Handler):
    """Sends the client's address and scheme as the server sees them, then closes."""

    def on_open(self, ws: corral.WebSocket) -> Any:
        assert ws.request is not None
        return [corral.Text(f"{ws.remote_address[0]} {ws.request.scheme}"), corral.Close()]


async def seen_as(port: int, source: str, extra: str = "") -> str:
    """What the server says the client is, connecting from ``source`` (a loopback address
    of its own, so that the client and nginx differ)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port, local_addr=(source, 0))
    try:
        writer.write(("GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
                      "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                      f"Sec-WebSocket-Version: 13\r\n{extra}\r\n").encode())
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
        assert head.startswith(b"HTTP/1.1 101"), head
        b0, b1 = await asyncio.wait_for(reader.readexactly(2), 5)
        assert b0 == 0x81, "a text frame"
        return (await reader.readexactly(b1 & 0x7F)).decode()
    finally:
        writer.close()


async def test_the_client_address_through_nginx_and_forged_headers(tmp_path: Path) -> None:
    """Behind the real nginx, trusted as a proxy: the handler sees the client's address
    (127.0.0.2), not nginx's; a client that forges X-Forwarded-For gets its own address,
    whether it goes through nginx (which appends the real one) or straight to the server
    (not a trusted proxy)."""
    router = corral.Router().websocket("/", TellsAddress)
    async with corral.serve(router, port=0, forwarded_allow_ips=["127.0.0.1"],
                            close_timeout=1) as server:
        with nginx(tmp_path, [server.port], signal.SIGTERM) as proxy:
            await wait_listening(proxy)
            assert await seen_as(proxy, "127.0.0.2") == "127.0.0.2 ws"
            forged = "X-Forwarded-For: 6.6.6.6\r\nX-Forwarded-Proto: https\r\n"
            assert await seen_as(proxy, "127.0.0.2", forged) == "127.0.0.2 ws"
            # Straight to the server from another address: not a proxy, headers ignored.
            assert await seen_as(server.port, "127.0.0.3", forged) == "127.0.0.3 ws"
    # Without forwarded_allow_ips, nobody is believed: the server sees nginx itself.
    async with corral.serve(router, port=0, close_timeout=1) as server:
        with nginx(tmp_path, [server.port], signal.SIGTERM) as proxy:
            await wait_listening(proxy)
            assert await seen_as(proxy, "127.0.0.2") == "127.0.0.1 ws"


HAPROXY = shutil.which("haproxy") or (
    "/usr/sbin/haproxy" if Path("/usr/sbin/haproxy").exists() else None)

HAPROXY_CONF = """\
defaults
    mode tcp
    timeout connect 2s
    timeout client 30s
    timeout server 30s
frontend front
    bind 127.0.0.1:{port}
    default_backend corral
backend corral
    server node 127.0.0.1:{upstream} {send}
"""


@contextlib.contextmanager
def haproxy(tmp_path: Path, upstream: int, send: str) -> Iterator[int]:
    """HAProxy in the foreground on a random port, passing TCP to ``upstream`` with the
    PROXY protocol (``send``: send-proxy or send-proxy-v2); stopped on exit."""
    assert HAPROXY is not None
    port = free_port()
    conf = tmp_path / f"haproxy-{send}.cfg"
    conf.write_text(HAPROXY_CONF.format(port=port, upstream=upstream, send=send))
    process = subprocess.Popen([HAPROXY, "-db", "-f", str(conf)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        yield port
    finally:
        stop_process(process)  # SIGTERM: haproxy stops at once


@pytest.mark.skipif(HAPROXY is None, reason="haproxy is not installed")
@pytest.mark.parametrize("send", ["send-proxy", "send-proxy-v2"])
async def test_the_client_address_through_haproxy_with_the_proxy_protocol(
    tmp_path: Path, send: str
) -> None:
    """Behind the real HAProxy in TCP mode, which names the client in a PROXY protocol
    header (version 1 or 2): the handler sees the client (127.0.0.2), not HAProxy; a
    client that skips the balancer cannot pass for another, it is refused."""
    router = corral.Router().websocket("/", TellsAddress)
    async with corral.serve(router, port=0, proxy_protocol=True) as server:
        with haproxy(tmp_path, server.port, send) as proxy:
            await wait_listening(proxy)
            assert await seen_as(proxy, "127.0.0.2") == "127.0.0.2 ws"
        with pytest.raises(AssertionError, match="400"):
            await seen_as(server.port, "127.0.0.3")
