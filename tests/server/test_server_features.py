"""Server features around the WebSocket core: HTTP routes and static files on the same port,
TLS, Unix domain sockets, and graceful shutdown."""

from __future__ import annotations

import asyncio
import base64
import datetime
import importlib.util
import ipaddress
import json
import os
import ssl
import subprocess
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

import corral
from corral.protocol.frames import Opcode
from corral.server.serve import ssl_context
from helpers import close_raw, eventually, masked, read_frame, read_to_eof

# -- helpers --------------------------------------------------------------------------------------

pytestmark = pytest.mark.usefixtures("clean_logs", "no_leftover_tasks")



class Echo(corral.Handler):
    def on_message(self, ws: corral.WebSocket, message: str | bytes) -> Any:
        return corral.Text(message) if isinstance(message, str) else corral.Binary(message)


class Answer:
    def __init__(self, data: bytes) -> None:
        head, _, self.body = data.partition(b"\r\n\r\n")
        status_line, *fields = head.decode("latin-1").split("\r\n")
        self.status = int(status_line.split(" ")[1])
        self.headers = {name.lower(): value.strip() for name, _, value in
                        (line.partition(":") for line in fields)}


async def http(port: int, target: str, method: str = "GET", extra: str = "") -> Answer:
    """One request on a fresh connection, answer read to the end."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(f"{method} {target} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                     f"Connection: close\r\n{extra}\r\n".encode())
        return Answer(await asyncio.wait_for(reader.read(), 2))
    finally:
        await close_raw(writer)


def upgrade_request(path: str = "/", host: str = "127.0.0.1") -> bytes:
    key = base64.b64encode(os.urandom(16)).decode()
    return (f"GET {path} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
            "Sec-WebSocket-Version: 13\r\n\r\n").encode()


async def raw_websocket(
    server: corral.Server, path: str = "/"
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    writer.write(upgrade_request(path))
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 2)
    assert head.startswith(b"HTTP/1.1 101 ")
    return reader, writer


def url(server: corral.Server, path: str = "/") -> str:
    return f"ws://127.0.0.1:{server.port}{path}"


# -- HTTP routes ----------------------------------------------------------------------------------


def http_router() -> corral.Router:
    async def slow(request: corral.Request) -> corral.Response:
        await asyncio.sleep(0.02)
        return corral.Response.text(f"slow {request.query_param('n')}")

    def created(request: corral.Request) -> corral.Response:
        return corral.Response(201, b"", [("Location", "/things/1")])

    def broken(request: corral.Request) -> corral.Response:
        raise RuntimeError("application bug")

    def chat_page(request: corral.Request) -> corral.Response:
        return corral.Response.html("<h1>chat</h1>")

    router = corral.Router()
    router.http("/text", lambda r: corral.Response.text("héllo"))
    router.http("/json", lambda r: corral.Response.json({"path": r.path, "q": r.query}))
    router.http("/html", lambda r: corral.Response.html("<p>hi</p>"))
    router.http("/slow", slow)
    router.http("/created", created)
    router.http("/broken", broken)
    router.http("/echo-body", lambda r: corral.Response.text(f"{r.method} {r.http.body!r}"))
    router.http("/users/{name}", lambda r: corral.Response.text(r.path_params["name"]))
    router.http("/chat", chat_page)
    router.websocket("/chat", Echo)
    return router


async def test_http_responses_text_json_html() -> None:
    async with corral.serve(http_router(), port=0) as server:
        text = await http(server.port, "/text")
        assert (text.status, text.body) == (200, "héllo".encode())
        assert text.headers["content-type"] == "text/plain; charset=utf-8"
        assert text.headers["content-length"] == str(len("héllo".encode()))

        data = await http(server.port, "/json?a=1")
        assert data.headers["content-type"] == "application/json"
        assert json.loads(data.body) == {"path": "/json", "q": {"a": ["1"]}}

        page = await http(server.port, "/html")
        assert page.headers["content-type"] == "text/html; charset=utf-8"
        assert page.body == b"<p>hi</p>"

        made = await http(server.port, "/created")
        assert (made.status, made.headers["location"], made.body) == (201, "/things/1", b"")

        assert (await http(server.port, "/users/zoë")).status == 400  # raw UTF-8 in a target
        assert (await http(server.port, "/users/zo%C3%AB")).body == "zoë".encode()
        assert (await http(server.port, "/nothing-here")).status == 404


async def test_async_http_handler() -> None:
    async with corral.serve(http_router(), port=0) as server:
        answers = await asyncio.gather(*(http(server.port, f"/slow?n={i}") for i in range(5)))
        assert [a.body for a in answers] == [f"slow {i}".encode() for i in range(5)]


async def test_http_request_body_and_head() -> None:
    async with corral.serve(http_router(), port=0) as server:
        posted = await http(server.port, "/echo-body", "POST",
                            "Content-Length: 5\r\n\r\nhello")
        assert posted.body == b"POST b'hello'"
        head = await http(server.port, "/text", "HEAD")
        assert head.status == 200
        assert head.headers["content-length"] == str(len("héllo".encode()))
        assert head.body == b""


async def test_http_handler_error_is_500_and_server_goes_on(errors_expected: None) -> None:
    async with corral.serve(http_router(), port=0) as server:
        broken = await http(server.port, "/broken")
        assert broken.status == 500
        assert b"application bug" not in broken.body
        assert (await http(server.port, "/text")).status == 200


async def test_http_and_websocket_share_a_route() -> None:
    async with corral.serve(http_router(), port=0) as server:
        page = await http(server.port, "/chat")
        assert page.body == b"<h1>chat</h1>"
        async with corral.connect(url(server, "/chat")) as ws:
            await ws.send("same path")
            assert await asyncio.wait_for(ws.recv(), 2) == "same path"


# -- static files ---------------------------------------------------------------------------------


@pytest.fixture
def site(tmp_path: Path) -> Path:
    public = tmp_path / "public"
    (public / "css").mkdir(parents=True)
    (public / "docs").mkdir()
    (public / "index.html").write_text("<h1>home</h1>")
    (public / "css" / "site.css").write_text("body { color: red }")
    (public / "docs" / "index.html").write_text("<h1>docs</h1>")
    (public / "data.bin").write_bytes(bytes(range(256)))
    (public / "app.js").write_text("console.log(1)")
    (tmp_path / "secret.txt").write_text("top secret")
    (public / "escape").symlink_to(tmp_path / "secret.txt")
    return public


@pytest.fixture
async def static_server(site: Path) -> AsyncIterator[corral.Server]:
    router = corral.Router().static("/static", site)
    router.websocket("/ws", Echo)
    async with corral.serve(router, port=0) as server:
        yield server


@pytest.mark.parametrize(
    ("target", "body", "content_type"),
    [
        ("/static/css/site.css", b"body { color: red }", "text/css; charset=utf-8"),
        ("/static/data.bin", bytes(range(256)), "application/octet-stream"),
        ("/static/index.html", b"<h1>home</h1>", "text/html; charset=utf-8"),
        ("/static/", b"<h1>home</h1>", "text/html; charset=utf-8"),
        ("/static/docs", b"<h1>docs</h1>", "text/html; charset=utf-8"),
        ("/static/css/../css/site.css", b"body { color: red }", "text/css; charset=utf-8"),
    ],
)
async def test_static_file_served_with_content_type(
    static_server: corral.Server, target: str, body: bytes, content_type: str
) -> None:
    answer = await http(static_server.port, target)
    assert answer.status == 200
    assert answer.body == body
    assert answer.headers["content-type"] == content_type
    assert answer.headers["content-length"] == str(len(body))


async def test_static_javascript_type(static_server: corral.Server) -> None:
    answer = await http(static_server.port, "/static/app.js")
    assert answer.headers["content-type"].endswith("javascript; charset=utf-8")


async def test_static_head_has_headers_but_no_body(static_server: corral.Server) -> None:
    answer = await http(static_server.port, "/static/css/site.css", "HEAD")
    assert answer.status == 200
    assert answer.body == b""
    assert answer.headers["content-length"] == str(len(b"body { color: red }"))
    assert answer.headers["content-type"] == "text/css; charset=utf-8"


@pytest.mark.parametrize(
    "target",
    [
        "/static/../secret.txt",
        "/static/%2e%2e/secret.txt",
        "/static/%2E%2E/secret.txt",
        "/static/css/%2e%2e/%2e%2e/secret.txt",
        "/static/..%2fsecret.txt",
        "/static/css/..%2F..%2Fsecret.txt",
        "/static/%2fetc%2fpasswd",
        "/static//etc/passwd",
        "/static/escape",  # a symlink pointing out of the directory
        "/static/missing.txt",
        "/static/css/missing.css",
        "/static/index.html/more",
        "/static/a%00b",
        pytest.param("/static/" + "a" * 300, id="name-too-long"),
    ],
)
async def test_static_never_leaves_its_directory(
    static_server: corral.Server, target: str
) -> None:
    answer = await http(static_server.port, target)
    assert answer.status == 404
    assert b"secret" not in answer.body
    assert b"root:" not in answer.body


async def test_static_refuses_other_methods(static_server: corral.Server) -> None:
    answer = await http(static_server.port, "/static/index.html", "DELETE")
    assert answer.status == 405
    assert answer.headers["allow"] == "GET, HEAD"


async def test_static_files_handler_on_its_own_route(site: Path) -> None:
    router = corral.Router().http("/files/{path:path}", corral.StaticFiles(site, index="nope"))
    async with corral.serve(router, port=0) as server:
        assert (await http(server.port, "/files/css/site.css")).status == 200
        assert (await http(server.port, "/files/docs/")).status == 404  # no such index file


# -- TLS ------------------------------------------------------------------------------------------


def _make_cert_with_cryptography(cert: Path, key: Path) -> None:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    private = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(private.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([
                x509.DNSName("localhost"),
                x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
            ]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(private, hashes.SHA256())
    )
    cert.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key.write_bytes(private.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ))


def _make_cert_with_openssl(cert: Path, key: Path) -> None:
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
         "-nodes", "-keyout", str(key), "-out", str(cert), "-days", "1", "-subj", "/CN=localhost",
         "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"],
        check=True, capture_output=True, timeout=30,
    )


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    directory = tmp_path_factory.mktemp("tls")
    cert, key = directory / "cert.pem", directory / "key.pem"
    if importlib.util.find_spec("cryptography") is not None:
        _make_cert_with_cryptography(cert, key)
    else:
        _make_cert_with_openssl(cert, key)
    return cert, key


@pytest.fixture
def client_context(certificate: tuple[Path, Path]) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(certificate[0]))


@pytest.fixture
async def tls_server(certificate: tuple[Path, Path]) -> AsyncIterator[corral.Server]:
    router = http_router()
    router.websocket("/ws", Echo)
    context = ssl_context(str(certificate[0]), str(certificate[1]))
    async with corral.serve(router, port=0, ssl=context, handshake_timeout=0.5) as server:
        yield server


async def test_tls_websocket(tls_server: corral.Server, client_context: ssl.SSLContext) -> None:
    target = f"wss://127.0.0.1:{tls_server.port}/ws"
    async with corral.connect(target, ssl=client_context) as ws:
        for message in ("over tls", b"\x00" * 100_000):
            await ws.send(message)
            assert await asyncio.wait_for(ws.recv(), 2) == message
        assert ws.ws is not None and ws.ws.transport is not None
        assert ws.ws.transport.get_extra_info("ssl_object") is not None


async def test_tls_plain_http_route(
    tls_server: corral.Server, client_context: ssl.SSLContext
) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", tls_server.port,
                                                   ssl=client_context)
    try:
        writer.write(b"GET /text HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        answer = Answer(await asyncio.wait_for(reader.read(), 2))
    finally:
        await close_raw(writer)
    assert (answer.status, answer.body) == (200, "héllo".encode())


async def test_tls_client_refuses_an_unknown_certificate(tls_server: corral.Server) -> None:
    with pytest.raises(ssl.SSLCertVerificationError):
        await corral.connect(f"wss://127.0.0.1:{tls_server.port}/ws",
                             ssl=ssl.create_default_context())


async def test_plaintext_on_the_tls_port_is_dropped_quietly(
    tls_server: corral.Server, client_context: ssl.SSLContext
) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", tls_server.port)
    try:
        writer.write(upgrade_request("/ws"))
        assert b"101" not in await read_to_eof(reader)
    finally:
        await close_raw(writer)
    async with corral.connect(f"wss://127.0.0.1:{tls_server.port}/ws", ssl=client_context):
        pass


async def test_tls_handshake_is_bounded_by_handshake_timeout(tls_server: corral.Server) -> None:
    # A client that opens TCP and never starts TLS is slow-loris too.
    reader, writer = await asyncio.open_connection("127.0.0.1", tls_server.port)
    try:
        start = time.monotonic()
        assert await read_to_eof(reader) == b""
        assert time.monotonic() - start < 1.5
    finally:
        await close_raw(writer)


# -- Unix domain sockets --------------------------------------------------------------------------


@pytest.fixture
def socket_path(tmp_path: Path) -> str:
    path = tmp_path / "corral.sock"
    if len(str(path)) > 100:  # sun_path is about 108 bytes
        path = Path("/tmp") / f"corral-{os.getpid()}-{id(tmp_path)}.sock"
    return str(path)


async def test_unix_socket_server(socket_path: str) -> None:
    router = corral.Router().websocket("/ws", Echo)
    router.http("/health", lambda r: corral.Response.text("ok"))
    async with corral.serve(router, uds=socket_path) as server:
        with pytest.raises(RuntimeError):
            server.port  # noqa: B018 - no TCP port to report
        reader, writer = await asyncio.open_unix_connection(socket_path)
        try:
            writer.write(upgrade_request("/ws", host="localhost"))
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 2)
            assert head.startswith(b"HTTP/1.1 101 ")
            writer.write(masked(Opcode.TEXT, b"over a unix socket"))
            assert await read_frame(reader) == (Opcode.TEXT, b"over a unix socket")
            writer.write(masked(Opcode.CLOSE, (1000).to_bytes(2, "big")))
            assert await read_frame(reader) == (Opcode.CLOSE, (1000).to_bytes(2, "big"))
            assert await read_to_eof(reader) == b""
        finally:
            await close_raw(writer)

        reader, writer = await asyncio.open_unix_connection(socket_path)
        try:
            writer.write(b"GET /health HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
            assert Answer(await asyncio.wait_for(reader.read(), 2)).body == b"ok"
        finally:
            await close_raw(writer)


# -- graceful shutdown ----------------------------------------------------------------------------


async def test_shutdown_sends_1001_to_every_client() -> None:
    async with corral.serve(Echo, port=0, close_timeout=1) as server:
        clients = [await corral.connect(url(server)) for _ in range(3)]
        reader, writer = await raw_websocket(server)
        await eventually(lambda: len(server.connections) == 4)
        closing = asyncio.create_task(server.close())
        # The raw client answers like a well-behaved peer.
        opcode, payload = await read_frame(reader)
        assert opcode == Opcode.CLOSE
        assert payload[:2] == (1001).to_bytes(2, "big")
        writer.write(masked(Opcode.CLOSE, payload[:2]))
        await asyncio.wait_for(closing, 2)
        assert await read_to_eof(reader) == b""
        await close_raw(writer)
        for ws in clients:
            with pytest.raises(corral.ConnectionClosedOK) as info:
                await asyncio.wait_for(ws.recv(), 2)
            assert (info.value.code, info.value.reason) == (1001, "server shutting down")
        assert not server.connections


async def test_shutdown_refuses_new_connections() -> None:
    async with corral.serve(Echo, port=0, close_timeout=0.5) as server:
        port = server.port
        # A client that never answers keeps the shutdown going for a while.
        _, writer = await raw_websocket(server)
        closing = asyncio.create_task(server.close())
        try:
            await asyncio.sleep(0.05)
            assert not closing.done()
            with pytest.raises(OSError):
                await corral.connect(f"ws://127.0.0.1:{port}/")
            await asyncio.wait_for(closing, 2)
            with pytest.raises(OSError):
                await corral.connect(f"ws://127.0.0.1:{port}/")
        finally:
            await close_raw(writer)


async def test_shutdown_completes_within_close_timeout_if_a_client_never_answers() -> None:
    async with corral.serve(Echo, port=0, close_timeout=0.3) as server:
        reader, writer = await raw_websocket(server)
        try:
            start = time.monotonic()
            await asyncio.wait_for(server.close(), 2)
            elapsed = time.monotonic() - start
            assert 0.25 <= elapsed < 0.8
            assert await read_frame(reader) == (
                Opcode.CLOSE, (1001).to_bytes(2, "big") + b"server shutting down")
            assert await read_to_eof(reader) == b""  # dropped without its answer
        finally:
            await close_raw(writer)
        assert not server.connections


async def test_shutdown_closes_idle_http_connections_and_finishes_busy_ones() -> None:
    async with corral.serve(http_router(), port=0, close_timeout=1) as server:
        idle_reader, idle_writer = await asyncio.open_connection("127.0.0.1", server.port)
        busy_reader, busy_writer = await asyncio.open_connection("127.0.0.1", server.port)
        try:
            idle_writer.write(b"GET /text HTTP/1.1\r\nHost: x\r\n\r\n")  # keep-alive
            await asyncio.wait_for(idle_reader.readuntil(b"h\xc3\xa9llo"), 2)
            busy_writer.write(b"GET /slow?n=1 HTTP/1.1\r\nHost: x\r\n\r\n")
            await asyncio.sleep(0.005)  # the async handler is running
            await asyncio.wait_for(server.close(), 2)
            assert await read_to_eof(idle_reader) == b""
            answer = Answer(await read_to_eof(busy_reader))
            assert (answer.status, answer.body) == (200, b"slow 1")
            assert answer.headers["connection"] == "close"
        finally:
            await close_raw(idle_writer)
            await close_raw(busy_writer)


async def test_close_twice_and_concurrently() -> None:
    async with corral.serve(Echo, port=0, close_timeout=1) as server:
        ws = await corral.connect(url(server))
        await asyncio.wait_for(asyncio.gather(server.close(), server.close()), 2)
        await server.close()
        await server.wait_closed()
        with pytest.raises(corral.ConnectionClosedOK):
            await asyncio.wait_for(ws.recv(), 2)


# -- complete HTTP routes: methods, bodies, redirects, shadowed routes ------------------------


def methods_router() -> corral.Router:
    router = corral.Router()
    router.http("/items", lambda r: corral.Response.text(f"{r.method} {r.body!r}"),
                methods=["get", "POST"])
    router.http("/any", lambda r: corral.Response.text(r.method))
    return router


async def test_http_route_methods_others_get_405_with_allow() -> None:
    async with corral.serve(methods_router(), port=0) as server:
        assert (await http(server.port, "/items")).body == b"GET b''"
        head = await http(server.port, "/items", "HEAD")  # GET brings HEAD
        assert (head.status, head.body) == (200, b"")
        posted = await http(server.port, "/items", "POST", "Content-Length: 3\r\n\r\nabc")
        assert posted.body == b"POST b'abc'"
        refused = await http(server.port, "/items", "DELETE")
        assert refused.status == 405
        assert refused.headers["allow"] == "GET, HEAD, POST"
        assert (await http(server.port, "/any", "PATCH")).body == b"PATCH"  # no methods: all


def test_http_route_methods_must_be_method_names() -> None:
    for bad in ([], ["GET /"], ["G T"]):
        with pytest.raises(ValueError, match="methods are HTTP method names"):
            corral.Router().http("/", lambda r: corral.Response(), methods=bad)


async def test_request_body_content_length_and_chunked_bounded_by_max_body() -> None:
    async with corral.serve(methods_router(), port=0, max_body=10) as server:
        exact = await http(server.port, "/items", "POST", "Content-Length: 10\r\n\r\n0123456789")
        assert exact.body == b"POST b'0123456789'"
        chunked = await http(server.port, "/items", "POST",
                             "Transfer-Encoding: chunked\r\n\r\n4\r\nabcd\r\n2\r\nef\r\n0\r\n\r\n")
        assert chunked.body == b"POST b'abcdef'"
        # Over the limit: 413, by the declared length before the body is read...
        too_long = await http(server.port, "/items", "POST", "Content-Length: 11\r\n\r\n")
        assert too_long.status == 413
        # ...or as the chunks arrive.
        too_many = await http(server.port, "/items", "POST",
                              "Transfer-Encoding: chunked\r\n\r\n8\r\n01234567\r\n"
                              "8\r\n89abcdef\r\n0\r\n\r\n")
        assert too_many.status == 413
    with pytest.raises(ValueError, match="max_body"):
        corral.Options(max_body=-1)


async def test_static_prefix_without_slash_redirects(static_server: corral.Server) -> None:
    answer = await http(static_server.port, "/static?v=2")
    assert answer.status == 308
    assert answer.headers["location"] == "/static/?v=2"
    assert (await http(static_server.port, "/static", "POST")).status == 405


def test_static_relative_directory_is_taken_from_the_current_directory(
    site: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(site.parent)
    router = corral.Router().static("/s", "public")
    monkeypatch.chdir("/")
    files = router.routes[-1].http
    assert isinstance(files, corral.StaticFiles) and files.root == site.resolve()


def test_a_shadowed_route_is_warned_about_when_registered() -> None:
    router = corral.Router().http("/api/{name}", lambda r: corral.Response())
    with pytest.warns(corral.RouteShadowedWarning, match="'/api/list' is shadowed by the "
                                                         "earlier route '/api/{name}'"):
        router.http("/api/list", lambda r: corral.Response())
    catch_all = corral.Router().websocket("/{path:path}", Echo)
    with pytest.warns(corral.RouteShadowedWarning):
        catch_all.static("/static", ".")
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        # Specific first, then general; and one route for HTTP and WebSocket together.
        fine = corral.Router().http("/api/list", lambda r: corral.Response())
        fine.http("/api/{name}", lambda r: corral.Response()).websocket("/api/{name}", Echo)
