"""Starting and stopping a server: TCP or Unix socket, TLS, graceful shutdown, signals."""

from __future__ import annotations

import asyncio
import inspect
import logging
import signal
import ssl as ssl_module
import sys
import warnings
from collections.abc import Callable, Generator, Iterable
from types import TracebackType
from typing import Any, cast

from ..asgi.app import INTERFACES, AsgiApp, is_asgi_app
from ..asgi.http import AsgiHttpProtocol
from ..exceptions import StartupError
from ..options import Options
from ..protocol.frames import CloseCode
from ..pubsub.broker import Broker, make_broker
from ..pubsub.topics import Message, Topics
from ..websocket import WebSocket
from .callables import name_of
from .forwarded import TrustedProxies
from .http import HttpProtocol
from .lifecycle import Hook, check_hooks, run_shutdown, run_startup
from .registry import Registry
from .router import App, Router, as_router
from .stats import Recorder, ServerStats, read_shared, share_stats, take

__all__ = ["Server", "install_uvloop", "run", "serve"]

logger = logging.getLogger("corral.server")


def ssl_context(certfile: str, keyfile: str | None = None) -> ssl_module.SSLContext:
    """A server TLS context from a PEM certificate (chain) and key."""
    context = ssl_module.create_default_context(ssl_module.Purpose.CLIENT_AUTH)
    context.load_cert_chain(certfile, keyfile)
    return context


class Server:
    """A running corral server. ``close()`` shuts it down gracefully."""

    def __init__(
        self,
        router: Router,
        options: Options,
        broker: str | Broker | None = None,
        *,
        on_startup: Iterable[Hook] = (),
        on_shutdown: Iterable[Hook] = (),
        worker: int = 0,
        stats_dir: str | None = None,
        asgi: AsgiApp | None = None,
    ) -> None:
        self.router = router
        self.asgi = asgi  # an ASGI application served instead of the router's routes
        self.options = options
        # Whose forwarding headers are believed (None: nobody's); server-wide.
        proxies = options.forwarded_allow_ips
        self.trusted_proxies = TrustedProxies(proxies) if proxies else None
        # The router's hooks first, then those given to serve()/run().
        self._on_startup = (*router.on_startup, *check_hooks(on_startup, "startup"))
        self._on_shutdown = (*router.on_shutdown, *check_hooks(on_shutdown, "shutdown"))
        self._started = False  # the startup hooks ran: the shutdown hooks will
        self.closing = False
        self._servers: list[asyncio.base_events.Server] = []
        self.recorder = Recorder()  # what happened: handshakes, messages, closes...
        self.registry = Registry(self.recorder)  # what is open: connections and tasks
        # Under `corral run --workers`: this worker's number, and the directory where the
        # workers share their stats (see corral.server.stats).
        self.worker = worker
        self._stats_dir = stats_dir
        self._sharing: asyncio.Task[None] | None = None
        self._closed: asyncio.Event | None = None
        # Pub/sub: this process's subscriptions over the broker (memory unless told).
        self._topics = Topics(make_broker(broker))

    async def _start(
        self,
        host: str | None,
        port: int | None,
        *,
        ssl: ssl_module.SSLContext | None,
        uds: str | None,
        sock: Any,
        reuse_port: bool,
        backlog: int,
    ) -> None:
        loop = asyncio.get_running_loop()
        if ssl is not None and self.options.proxy_protocol:
            raise ValueError("proxy_protocol with TLS terminated by corral is not supported: "
                             "the PROXY header comes before the TLS handshake; terminate TLS "
                             "at the balancer, or pass TCP through without the PROXY protocol")
        if self._closed is None:
            self._closed = asyncio.Event()
            await self._topics.start()
            try:
                # Before anything listens: no connection is accepted until they are done.
                if self.asgi is not None:
                    await self.asgi.lifespan.startup()
                await run_startup(self._on_startup, self)
            except BaseException:
                if self.asgi is not None:
                    await self.asgi.lifespan.shutdown()
                await self._topics.close()
                raise
            self._started = True
            if self._stats_dir is not None:
                self._sharing = asyncio.create_task(share_stats(self._stats_dir, self.stats),
                                                    name="corral-stats")

        asgi = self.asgi

        def factory() -> HttpProtocol | AsgiHttpProtocol:
            if asgi is not None:
                return AsgiHttpProtocol(self, self.registry, asgi)
            return HttpProtocol(self, self.registry)

        # A client that never completes TLS is slow-loris too: bound it like the HTTP phase.
        tls: dict[str, Any] = {}
        if ssl is not None:
            tls["ssl_handshake_timeout"] = self.options.handshake_timeout
        try:
            if uds is not None:
                server = await loop.create_unix_server(factory, uds, ssl=ssl, backlog=backlog,
                                                       **tls)
            elif sock is not None:
                server = await loop.create_server(factory, sock=sock, ssl=ssl, backlog=backlog,
                                                  **tls)
            else:
                server = await loop.create_server(factory, host, port or 0, ssl=ssl,
                                                  backlog=backlog, reuse_port=reuse_port, **tls)
        except BaseException:
            if not self._servers:  # nothing is served: do not keep the broker connected
                await self._topics.close()
            raise
        self._servers.append(server)

    @property
    def sockets(self) -> list[Any]:
        """The listening sockets."""
        return [s for server in self._servers for s in server.sockets]

    @property
    def port(self) -> int:
        """The TCP port of the first listening socket (useful with port=0)."""
        for sock in self.sockets:
            name = sock.getsockname()
            if isinstance(name, tuple):
                return int(name[1])
        raise RuntimeError("not listening on TCP")

    @property
    def connections(self) -> frozenset[WebSocket]:
        """The open WebSocket connections."""
        return frozenset(self.registry.websockets)

    @property
    def topics(self) -> Topics:
        """The pub/sub topics of this server's connections (``ws.subscribe``)."""
        return self._topics

    @property
    def broker(self) -> Broker:
        """What carries publishes between processes (memory: this one only)."""
        return self._topics.broker

    def publish(self, topic: str, message: Message, *, keep: int = 0) -> asyncio.Future[int]:
        """Send ``message`` (text for ``str``, binary for bytes-like) to every subscriber of
        ``topic`` in every process sharing the broker; ``keep`` > 0 also keeps it in the
        topic's history (``broker.history``), trimmed to the last ``keep``.

        With the memory broker it is written before this returns, framed once, and the
        future already holds the count of subscribers it was written to. Await it to learn
        that a remote broker took it; failure raises :class:`~corral.PublishError` there
        (and is logged and counted in ``topics.failed_publishes`` even if nobody awaits)."""
        return self._topics.publish(topic, message, keep=keep)

    def stats(self) -> ServerStats:
        """What this server process has open and has done since it started (counters of
        handshakes, messages, bytes, drops, closes, publishes; the broker's state)."""
        topics = self._topics
        broker = topics.broker
        return take(self.recorder, worker=self.worker, http_connections=len(self.registry.http),
                    websockets=len(self.registry.websockets), publishes=topics.publishes,
                    publish_failures=topics.failed_publishes, broker=broker.name,
                    broker_connected=broker.connected, topics=len(topics.names()),
                    subscriptions=topics.subscription_count())

    def worker_stats(self) -> tuple[ServerStats, ...]:
        """``stats()`` of every worker under ``corral run --workers N``, by worker number:
        this one's now, the others' as they shared them at most a second ago. Only this
        one's in a single process."""
        mine = self.stats()
        if self._stats_dir is None:
            return (mine,)
        others = [s for s in read_shared(self._stats_dir) if s.worker != self.worker]
        return tuple(sorted([mine, *others], key=lambda stats: stats.worker))

    def subscriber_count(self, topic: str) -> int:
        """Subscribers of ``topic`` in this process."""
        return self._topics.subscriber_count(topic)

    def topic_names(self) -> frozenset[str]:
        """The topics with at least one subscriber in this process."""
        return self._topics.names()

    async def close(
        self, code: int = CloseCode.GOING_AWAY, reason: str = "server shutting down"
    ) -> None:
        """Stop accepting, close every WebSocket with ``code`` (1001), wait for them to end
        (up to the close timeout), then drop whatever is left."""
        if self.closing:
            if self._closed is not None:
                await self._closed.wait()
            return
        self.closing = True
        for server in self._servers:
            server.close()
        registry = self.registry
        for http in list(registry.http):
            http.close_if_idle()
        for ws in list(registry.websockets):
            ws.shutdown(code, reason)
        deadline = asyncio.get_running_loop().time() + self.options.close_timeout
        while registry:
            if asyncio.get_running_loop().time() >= deadline:
                break
            await asyncio.sleep(0.05)
        for ws in list(registry.websockets):
            ws.abort()
        for http in list(registry.http):
            http.abort()
        # Handler tasks still running once their connections are gone (an async-for handler
        # awaiting something else, a task started with ws.create_task): give them what is
        # left of the close timeout, then cancel them.
        tasks = registry.tasks
        if tasks:
            remaining = max(0.0, deadline - asyncio.get_running_loop().time())
            await asyncio.wait(list(tasks), timeout=remaining)
            for task in list(tasks):
                task.cancel()
            if tasks:
                await asyncio.wait(list(tasks), timeout=1.0)
        for server in self._servers:
            await server.wait_closed()
        if self._sharing is not None:
            self._sharing.cancel()
            self._sharing = None
        if self._started:  # after the last connection, while the broker is still there
            await run_shutdown(self._on_shutdown, self)
            if self.asgi is not None:
                await self.asgi.lifespan.shutdown()
        await self._topics.close()
        assert self._closed is not None
        self._closed.set()

    async def wait_closed(self) -> None:
        """Wait until :meth:`close` has finished (whoever called it)."""
        assert self._closed is not None
        await self._closed.wait()

    async def serve_forever(self) -> None:
        """Serve until the server is closed (``wait_closed``, as asyncio names it)."""
        await self.wait_closed()

    async def __aenter__(self) -> Server:
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()


def what_to_serve(app: Any, interface: str = "auto", root_path: str = ""
                  ) -> tuple[Router, AsgiApp | None]:
    """The router to serve, and the ASGI application instead of its routes if ``app`` is
    one (``interface``: ``"auto"`` decides by its signature, ``"asgi"`` or ``"corral"``
    force the choice). Refuses, with the reason, what cannot be served."""
    if interface not in INTERFACES:
        raise ValueError(f"interface must be one of {', '.join(INTERFACES)}, not {interface!r}")
    if interface == "asgi" or (interface == "auto" and is_asgi_app(app)):
        if not callable(app):
            raise TypeError(f"not an ASGI application: {app!r}")
        return Router(), AsgiApp(app, root_path)
    if root_path:
        raise ValueError("root_path applies to ASGI applications: a Router's routes are "
                         "written with their whole path")
    return as_router(app), None


class serve:
    """Start a server: ``server = await serve(app, host, port)`` or
    ``async with serve(app, host, port) as server: ...``.

    ``app`` is a :class:`Router`, a :class:`~corral.Handler` subclass (one instance per
    connection, every path), an ``async def handler(ws)``, or an ASGI 3 application
    (FastAPI, Starlette, Django: recognised by its ``(scope, receive, send)`` signature, or
    with ``interface="asgi"``; ``root_path`` is where it is mounted, docs/how-to/fastapi.md).
    ``broker`` carries publishes between processes: None or ``"memory"`` (this process only), ``"redis://host:port/db"``,
    or a :class:`~corral.pubsub.Broker`. ``on_startup`` / ``on_shutdown``: hooks run after
    the router's own (:class:`Router`), before the first connection is accepted and after
    the last is closed; a failing startup hook raises :class:`~corral.StartupError` and
    nothing is served. ``worker`` and ``stats_dir``: this process's number among several
    serving one port, and a directory they share their stats in (``Server.worker_stats``);
    ``corral run --workers`` sets both. Keyword options not named here are
    :class:`Options` fields, e.g. ``max_message_size=16 * 2**20``.
    """

    def __init__(
        self,
        app: App,
        host: str | None = "127.0.0.1",
        port: int | None = 8000,
        *,
        options: Options | None = None,
        ssl: ssl_module.SSLContext | None = None,
        uds: str | None = None,
        sock: Any = None,
        reuse_port: bool = False,
        backlog: int = 1024,
        broker: str | Broker | None = None,
        on_startup: Iterable[Hook] = (),
        on_shutdown: Iterable[Hook] = (),
        worker: int = 0,
        stats_dir: str | None = None,
        interface: str = "auto",
        root_path: str = "",
        **option_changes: Any,
    ) -> None:
        caller = sys._getframe(1)
        self._called_at = (caller.f_code.co_filename, caller.f_lineno)
        opts = options or Options()
        if option_changes:
            opts = opts.replace(**option_changes)
        router, asgi = what_to_serve(app, interface, root_path)
        self._server = Server(router, opts, broker, on_startup=on_startup,
                              on_shutdown=on_shutdown, worker=worker, stats_dir=stats_dir,
                              asgi=asgi)
        self._args = (host, port)
        self._kwargs = dict(ssl=ssl, uds=uds, sock=sock, reuse_port=reuse_port, backlog=backlog)
        self._started = False  # set last: a serve() that raised above is not warned about

    async def _go(self) -> Server:
        self._started = True
        await self._server._start(*self._args, **self._kwargs)
        return self._server

    def __del__(self) -> None:
        # `corral.serve(app)` without await starts nothing and, unlike a coroutine, would
        # not even be warned about: say so where it was called.
        if not getattr(self, "_started", True):
            filename, lineno = self._called_at
            warnings.warn_explicit(
                "corral.serve(...) was never awaited, so no server started: write "
                "`server = await corral.serve(...)` or `async with corral.serve(...) as "
                "server:` inside async code, or call corral.run(...) from plain code",
                RuntimeWarning, filename, lineno,
            )

    def __await__(self) -> Generator[Any, None, Server]:
        return self._go().__await__()

    async def __aenter__(self) -> Server:
        return await self._go()

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self._server.close()


# glibc malloc parameters (mallopt): a freed large message would otherwise shrink the heap
# and the next one grow it again, page-faulting every page in (half of the server CPU of a
# 1 MiB echo, measured). Kept for a server process: it holds up to TRIM of freed memory.
_M_TRIM_THRESHOLD, _M_TOP_PAD, _M_MMAP_THRESHOLD = -1, -2, -3
MALLOC_TUNING = {_M_TRIM_THRESHOLD: 64 << 20, _M_TOP_PAD: 16 << 20, _M_MMAP_THRESHOLD: 32 << 20}


def tune_malloc() -> bool:
    """Keep freed large buffers in the heap (glibc only); say whether it was done."""
    try:
        import ctypes
        import ctypes.util

        name = ctypes.util.find_library("c")
        if name is None:
            return False
        libc = ctypes.CDLL(name)
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    return all(mallopt(param, value) == 1 for param, value in MALLOC_TUNING.items())


def install_uvloop() -> bool:
    """Use uvloop's event loop policy when it is installed; say whether it is."""
    try:
        import uvloop
    except ImportError:
        return False
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    return True


def run(
    app: App | Callable[[], Any],
    host: str | None = "127.0.0.1",
    port: int | None = 8000,
    *,
    tls_cert: str | None = None,
    tls_key: str | None = None,
    use_uvloop: bool = True,
    malloc_tuning: bool = True,
    factory: bool = False,
    configure_logging: bool = True,
    **kwargs: Any,
) -> None:
    """Serve ``app`` until SIGINT or SIGTERM, then shut down gracefully (close 1001).

    ``factory``: ``app`` is a function of no arguments, plain or ``async def``, called once
    inside the event loop to make what is served, so it may start tasks there (a feed that
    publishes to topics). ``on_startup`` / ``on_shutdown`` and the other keywords are those
    of :func:`serve`; a failing startup hook or factory raises :class:`~corral.StartupError`
    before anything is served. ``configure_logging``: when logging is not configured yet,
    log corral's INFO messages (where it serves, the shutdown) to stderr, as ``corral run``
    does. ``malloc_tuning`` (glibc): keep up to 64 MiB of freed memory in the heap rather than
    handing it back after every large message (see ``tune_malloc``)."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        pass
    else:
        raise RuntimeError("corral.run() starts its own event loop and cannot run inside "
                           "one: in async code, use `server = await corral.serve(...)`")
    interface = kwargs.get("interface", "auto")
    served: Any = None
    if not factory:
        # One that cannot work is refused before anything runs.
        what_to_serve(app, interface, kwargs.get("root_path", ""))
        served = app
    elif not callable(app):
        raise TypeError(f"factory=True needs a function that makes the app, not {app!r}")
    if configure_logging and not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO,
                            format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if use_uvloop:
        install_uvloop()
    if malloc_tuning:
        tune_malloc()
    ssl = ssl_context(tls_cert, tls_key) if tls_cert else None

    async def made_by_factory() -> Any:
        try:
            made = cast(Callable[[], Any], app)()
            if inspect.isawaitable(made):
                made = await made
            what_to_serve(made, interface, kwargs.get("root_path", ""))
            return made
        except Exception as exc:
            raise StartupError(f"the app factory {name_of(app)}", exc) from exc

    async def main() -> None:
        target = served if served is not None else await made_by_factory()
        server = await serve(target, host, port, ssl=ssl, **kwargs)
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        where = kwargs.get("uds") or f"{'wss' if ssl else 'ws'}://{host}:{server.port}"
        logger.info("corral serving on %s", where)
        await stop.wait()
        logger.info("shutting down")
        await server.close()

    asyncio.run(main())
