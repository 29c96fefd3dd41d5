"""The ``corral`` command line: ``corral run MODULE:ATTR`` serves an application,
``corral demo`` the chat demo.

Each command is one argparse subcommand with its own ``_cmd_*`` function, so a new one
(``corral demo`` is one) is one more ``add_parser`` call in :func:`build_parser`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib
import inspect
import logging
import os
import sys
import tempfile
import traceback
from collections.abc import Callable, Coroutine, Sequence
from typing import Any

from .asgi.app import INTERFACES, is_asgi_app
from .exceptions import StartupError
from .handler import Handler
from .options import COMPRESSION_PRESETS, DeflateSettings
from .server import Router, run
from .server.router import App
from .server.serve import ssl_context
from .server.workers import EXIT_USAGE, reserve_port, supervise, watch_supervisor

__all__ = ["EXIT_STARTUP", "AppLoadError", "app_factory", "build_parser", "find_app", "load_app",
           "main"]

#: The exit status when a startup hook or the app factory fails (as uvicorn's).
EXIT_STARTUP = 3

_RUN_EPILOG = """\
MODULE:ATTR names what to serve. ATTR (dotted for nested attributes) is one of:
  - a corral.Router;
  - a corral.Handler subclass (one instance per connection, on every path);
  - an `async def handler(ws)` coroutine function (on every path);
  - an ASGI 3 application (FastAPI, Starlette, Django...), recognised by its
    `(scope, receive, send)` signature or with --interface asgi;
  - a factory: any other callable taking no arguments, plain or `async def`, called
    once inside the event loop at start-up (so it may start tasks, e.g. a feed that
    publishes to topics), that returns one of the above,
    e.g. `corral run corral.examples.echo:app`. With --workers, in every worker.
A failing factory or startup hook (Router(on_startup=[...])) stops with exit status 3.
The current directory is put first on sys.path, so local modules can be named.
SIGINT or SIGTERM shuts the server down gracefully: open connections are closed with 1001.

--workers N starts N processes that share the port (SO_REUSEPORT), each loading
MODULE:ATTR itself; a worker that dies is restarted, and SIGINT or SIGTERM stops them all
gracefully. Pub/sub reaches subscribers in every worker only through a shared --broker.
"""


class AppLoadError(Exception):
    """MODULE:ATTR cannot be imported, or names something that cannot be served."""


def _describe(obj: Any) -> str:
    return f"{type(obj).__name__} {obj!r}"


def _is_handler_coroutine(obj: Any) -> bool:
    """An ``async def handler(ws)``: a coroutine function callable with one argument."""
    if not inspect.iscoroutinefunction(obj):
        return False
    try:
        inspect.signature(obj).bind(None)
    except (TypeError, ValueError):
        return False
    return True


def _servable(obj: Any, interface: str = "auto") -> bool:
    if interface != "corral" and is_asgi_app(obj):
        return True
    if interface == "asgi":
        # Forced: any callable that is not a factory (one taking no arguments).
        return callable(obj) and not inspect.isclass(obj) and not _is_factory(obj)
    if isinstance(obj, Router):
        return True
    if inspect.isclass(obj):
        return issubclass(obj, Handler)
    return _is_handler_coroutine(obj)


_KINDS = ("a Router, a Handler subclass, an `async def handler(ws)` or an ASGI application")


def _is_factory(obj: Any) -> bool:
    """A callable that can be called with no arguments (not a class), plain or ``async``."""
    if inspect.isclass(obj) or not callable(obj):
        return False
    try:
        inspect.signature(obj).bind()
    except (TypeError, ValueError):
        return False
    return True


def _import_module(name: str) -> Any:
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as exc:
        # Only the module asked for (or a parent package) missing is "not found"; a missing
        # import inside it is an error in that module, reported with its traceback.
        if exc.name is not None and (name == exc.name or name.startswith(exc.name + ".")):
            raise AppLoadError(f"no module named {exc.name!r}") from None
        raise AppLoadError(f"error while importing {name!r}:\n{traceback.format_exc()}") from None
    except Exception:
        raise AppLoadError(f"error while importing {name!r}:\n{traceback.format_exc()}") from None


def find_app(spec: str, interface: str = "auto") -> tuple[Any, bool]:
    """Import ``MODULE:ATTR``: what :func:`corral.serve` accepts, or a factory of it, and
    whether it is a factory (a function of no arguments, plain or ``async def``, which
    ``corral run`` calls inside the event loop). Raises :class:`AppLoadError` with a message
    for the user."""
    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        raise AppLoadError(f"expected MODULE:ATTR, got {spec!r}")
    obj: Any = _import_module(module_name)
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise AppLoadError(f"{module_name!r} has no attribute {attr!r}") from None
    if _servable(obj, interface):
        return obj, False
    if _is_factory(obj):
        return obj, True
    raise AppLoadError(
        f"{spec!r} is {_describe(obj)}, not {_KINDS}, or a factory of no arguments "
        "returning one"
    )


def app_factory(obj: Any, spec: str, interface: str = "auto"
                ) -> Callable[[], Coroutine[Any, Any, App]]:
    """The factory ``obj`` as ``corral.run(..., factory=True)`` calls it: awaited when it is
    ``async def``, what it returns checked, each failure an AppLoadError for the user."""

    async def make() -> App:
        try:
            made = obj()
            if inspect.isawaitable(made):
                made = await made
        except (Exception, SystemExit):
            raise AppLoadError(
                f"calling the factory {spec!r} failed:\n{traceback.format_exc()}"
            ) from None
        if not _servable(made, interface):
            raise AppLoadError(f"the factory {spec!r} returned {_describe(made)}, not {_KINDS}")
        return made  # type: ignore[no-any-return]

    return make


def load_app(spec: str, interface: str = "auto") -> App:
    """Import ``MODULE:ATTR`` and return something :func:`corral.serve` accepts, calling a
    factory (in an event loop of its own: ``corral run`` calls it in the server's loop)."""
    obj, is_factory = find_app(spec, interface)
    if not is_factory:
        return obj  # type: ignore[no-any-return]
    return asyncio.run(app_factory(obj, spec, interface)())


# -- argument types ----------------------------------------------------------------------------


def _positive_int_or_none(text: str) -> int | None:
    if text.lower() == "none":
        return None
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1 (or 'none' for no limit)")
    return value


def _seconds_or_none(text: str) -> float | None:
    if text.lower() == "none":
        return None
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError("must not be negative")
    return value or None  # 0 turns the timeout off, like 'none'


def _count(what: str, minimum: int) -> Callable[[str], int]:
    """An argument type: an integer of at least ``minimum``, named ``what`` in errors."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a number of {what}: {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be at least {minimum}")
        return value

    return parse


_worker_count = _count("workers", 1)


def _fd(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a file descriptor: {text!r}") from None


def _port(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a port number: {text!r}") from None
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError("must be between 0 and 65535")
    return value


_LOG_LEVELS = ("critical", "error", "warning", "info", "debug")

#: The Options fields the command line sets (each only when given).
OPTION_FLAGS = ("max_message_size", "idle_timeout", "ping_interval", "compression",
                "allowed_origins", "forwarded_allow_ips", "proxy_protocol")
PRESETS = (*COMPRESSION_PRESETS, "off")


def _ip_list(text: str) -> tuple[str, ...]:
    from .server.forwarded import TrustedProxies

    entries = tuple(part.strip() for part in text.split(",") if part.strip())
    try:
        TrustedProxies(entries)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return entries


def _compression(text: str) -> DeflateSettings | None:
    name = text.lower()
    if name in ("off", "none"):
        return None
    try:
        return COMPRESSION_PRESETS[name]
    except KeyError:
        raise argparse.ArgumentTypeError(
            f"unknown preset {text!r} (choose from {', '.join(PRESETS)})") from None


# -- commands ----------------------------------------------------------------------------------


def _add_run(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "run",
        help="serve a corral application",
        description="Serve MODULE:ATTR until SIGINT or SIGTERM.",
        epilog=_RUN_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("app", metavar="MODULE:ATTR", help="the application to serve")
    parser.add_argument("--interface", choices=INTERFACES, default="auto",
                        help="what MODULE:ATTR is: auto (by its signature, the default), asgi "
                             "(an ASGI 3 application) or corral (a Router, a Handler...)")
    parser.add_argument("--root-path", default="", metavar="PATH",
                        help="ASGI: the path the application is mounted at behind a proxy "
                             "(the scope's root_path), e.g. /api")
    _add_server_options(parser)
    parser.set_defaults(func=_cmd_run, parser=parser)


def _add_demo(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "demo",
        help="serve the chat demo: open http://127.0.0.1:8000/ in two browser windows",
        description="Serve corral's chat demo (rooms as topics, presence, history, "
                    "reconnect): the page at /, the WebSocket at /ws. It scales out "
                    "unchanged: --workers N --broker redis://host:port/db.",
    )
    _add_server_options(parser)
    parser.add_argument("--history", type=_count("messages", 0), default=50, metavar="N",
                        help="messages kept per room (%(default)s; 0: none)")
    parser.set_defaults(func=_cmd_demo, parser=parser)


def _add_server_options(parser: argparse.ArgumentParser) -> None:
    """What ``corral run`` and ``corral demo`` share: where to listen, workers, broker."""
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (%(default)s)")
    parser.add_argument("--port", type=_port, default=8000, help="TCP port (%(default)s)")
    parser.add_argument("--tls-cert", metavar="FILE", help="PEM certificate (chain): serve wss://")
    parser.add_argument("--tls-key", metavar="FILE",
                        help="PEM private key, if not in the certificate file")
    parser.add_argument("--uds", metavar="PATH",
                        help="listen on this Unix socket instead of --host/--port")
    parser.add_argument("--workers", type=_worker_count, default=1, metavar="N",
                        help="processes serving the port, supervised and restarted when they "
                             "die (%(default)s: just this process)")
    parser.add_argument("--reuse-port", action="store_true",
                        help="bind with SO_REUSEPORT, so other processes can serve the port too")
    parser.add_argument("--broker", metavar="URL",
                        help="pub/sub broker shared by processes, e.g. redis://127.0.0.1:6379/0 "
                             "(default: in memory, this process only)")
    # Internal: the pipe a worker watches to notice that its supervisor is gone, the worker's
    # number and the directory where the workers share their stats (Server.worker_stats).
    parser.add_argument("--supervisor-pipe", type=_fd, metavar="FD", help=argparse.SUPPRESS)
    parser.add_argument("--supervisor-slot", type=_count("worker slot", 0), default=0,
                        help=argparse.SUPPRESS)
    parser.add_argument("--supervisor-stats", metavar="DIR", help=argparse.SUPPRESS)
    # Options not given stay out of the namespace (SUPPRESS): corral's defaults apply then.
    options = parser.add_argument_group(
        "connection options",
        "The server's defaults for every connection; a route's options and the handler's\n"
        "Accept() still override them. Each not given keeps corral's default.")
    options.add_argument("--max-message-size", type=_positive_int_or_none, metavar="N",
                         default=argparse.SUPPRESS,
                         help="largest message in bytes, in any number of fragments, or "
                              "'none' (default: 1048576)")
    options.add_argument("--idle-timeout", type=_seconds_or_none, metavar="S",
                         default=argparse.SUPPRESS,
                         help="close idle connections after S seconds; 0 or 'none' turns it "
                              "off (default: 60)")
    options.add_argument("--ping-interval", type=_seconds_or_none, metavar="S",
                         default=argparse.SUPPRESS,
                         help="send a keepalive ping every S seconds; 0 or 'none': no pings "
                              "(the default)")
    options.add_argument("--compression", type=_compression, metavar="PRESET",
                         default=argparse.SUPPRESS,
                         help="accept permessage-deflate and x-webkit-deflate-frame from "
                              f"clients that offer it, with a preset: {', '.join(PRESETS)}; "
                              "'off' refuses them (the default)")
    options.add_argument("--allowed-origin", dest="allowed_origins", action="append",
                         metavar="ORIGIN", default=argparse.SUPPRESS,
                         help="a browser Origin allowed to connect, e.g. https://app.example; "
                              "repeat for more, '*' allows any (default: the Origin's host "
                              "must be the Host header's)")
    options.add_argument("--forwarded-allow-ips", dest="forwarded_allow_ips",
                         metavar="IPS", default=argparse.SUPPRESS, type=_ip_list,
                         help="comma-separated addresses or networks of the reverse proxies "
                              "whose Forwarded / X-Forwarded-For, -Proto, -Host headers are "
                              "believed, '*' for any (default: none)")
    options.add_argument("--proxy-protocol", dest="proxy_protocol", action="store_true",
                         default=argparse.SUPPRESS,
                         help="every connection starts with a PROXY protocol header (v1 or "
                              "v2, as HAProxy and AWS load balancers send it) naming the "
                              "client; connections without one are refused")
    parser.add_argument("--log-level", default="info", type=str.lower, choices=_LOG_LEVELS,
                        help="logging level (%(default)s)")


def _url(scheme: str, host: str, port: int) -> str:
    return f"{scheme}://[{host}]:{port}" if ":" in host else f"{scheme}://{host}:{port}"


def _worker_argv(argv: Sequence[str], port: int, pipe: int, slot: int = 0,
                 stats_dir: str | None = None) -> list[str]:
    """The supervisor's own arguments with the port fixed, one worker (number ``slot``),
    SO_REUSEPORT on.

    Repeating the user's arguments (argparse keeps the last value of an option) passes
    every option on, present and future, without this function knowing them."""
    overrides = ["--port", str(port), "--workers", "1", "--reuse-port",
                 "--supervisor-pipe", str(pipe), "--supervisor-slot", str(slot)]
    if stats_dir is not None:
        overrides += ["--supervisor-stats", stats_dir]
    argv = list(argv)
    end = argv.index("--") if "--" in argv else len(argv)  # options cannot follow "--"
    return [sys.executable, "-m", "corral", *argv[:end], *overrides, *argv[end:]]


def _configure_logging(args: argparse.Namespace) -> None:
    several = args.workers > 1 or args.supervisor_pipe is not None
    process = " [%(process)d]" if several else ""  # which worker said it
    logging.basicConfig(level=args.log_level.upper(),
                        format=f"%(asctime)s %(levelname)s{process} %(name)s: %(message)s")


def _cmd_supervise(args: argparse.Namespace) -> int:
    """``--workers N``: supervise N ``corral run`` processes sharing one port.

    The supervisor does not load MODULE:ATTR (a factory would run for nothing); a worker that
    cannot load it exits with the usage code, and the supervisor then stops with it too."""
    _configure_logging(args)
    with contextlib.ExitStack() as stack:
        try:
            if args.tls_cert:  # a bad certificate would only make every worker fail in turn
                ssl_context(args.tls_cert, args.tls_key)
            port = stack.enter_context(reserve_port(args.host, args.port))
            stats_dir = stack.enter_context(tempfile.TemporaryDirectory(prefix="corral-stats-"))
        except OSError as exc:
            print(f"corral: error: cannot start the server: {exc}", file=sys.stderr)
            return 1
        where = _url("wss" if args.tls_cert else "ws", args.host, port)
        if args.broker in (None, "memory"):
            logging.getLogger("corral.server").warning(
                "%d workers with the in-memory broker: a publish reaches only the "
                "subscribers of the worker it was made in; give --broker redis://... to "
                "share topics between workers", args.workers)
        try:
            return supervise(
                lambda pipe, slot: _worker_argv(args.argv, port, pipe, slot, stats_dir),
                args.workers, where=where, stats_dir=stats_dir)
        except OSError as exc:  # no worker process could be started at all
            print(f"corral: error: cannot start the workers: {exc}", file=sys.stderr)
            return 1


def _cmd_run(args: argparse.Namespace) -> int:
    def load() -> tuple[Any, bool]:
        cwd = os.getcwd()
        if cwd not in sys.path:
            sys.path.insert(0, cwd)
        obj, is_factory = find_app(args.app, args.interface)
        if is_factory:
            return app_factory(obj, args.app, args.interface), True
        if args.root_path and not (args.interface == "asgi" or is_asgi_app(obj)):
            raise AppLoadError("--root-path applies to ASGI applications")
        return obj, False

    return _serve(args, load)


def _cmd_demo(args: argparse.Namespace) -> int:
    def load() -> tuple[Any, bool]:
        from .examples.chat import server as chat

        return chat.app(history=args.history), False

    return _serve(args, load)


def _serve(args: argparse.Namespace, load: Callable[[], tuple[Any, bool]]) -> int:
    """Serve what ``load`` gives (the app, or a factory called in the event loop, and which
    it is), in this process or (``--workers``) in supervised workers, each running the same
    command again."""
    if args.tls_key and not args.tls_cert:
        args.parser.error("--tls-key needs --tls-cert")
    if args.uds and args.workers > 1:
        args.parser.error("--workers needs a TCP port (SO_REUSEPORT): it cannot share --uds")
    if args.uds and args.reuse_port:
        args.parser.error("--reuse-port applies to a TCP port, not to --uds")
    if args.supervisor_pipe is not None:  # first: a slow import stops with the supervisor too
        watch_supervisor(args.supervisor_pipe)
    if args.workers > 1:
        return _cmd_supervise(args)
    try:
        app, is_factory = load()
    except AppLoadError as exc:
        print(f"corral: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    _configure_logging(args)
    keywords: dict[str, Any] = {name: value for name, value in vars(args).items()
                                if name in OPTION_FLAGS}
    if args.broker is not None:  # only when given: serve() has taken `broker` recently
        keywords["broker"] = args.broker
    if args.reuse_port:
        keywords["reuse_port"] = True
    if args.supervisor_stats is not None:
        keywords.update(worker=args.supervisor_slot, stats_dir=args.supervisor_stats)
    if getattr(args, "interface", "auto") != "auto":
        keywords["interface"] = args.interface
    if getattr(args, "root_path", ""):
        keywords["root_path"] = args.root_path
    try:
        run(app, args.host, args.port, tls_cert=args.tls_cert, tls_key=args.tls_key,
            uds=args.uds, factory=is_factory, **keywords)
    except StartupError as exc:
        if isinstance(exc.__cause__, AppLoadError):  # the factory failed or made nothing
            print(f"corral: error: {exc.__cause__}", file=sys.stderr)
            return EXIT_USAGE
        cause = exc.__cause__
        details = "".join(traceback.format_exception(cause)) if cause is not None else ""
        print(f"corral: error: {exc}\n{details}", file=sys.stderr, end="")
        return EXIT_STARTUP
    except OSError as exc:  # the address is taken, a certificate file is missing or bad...
        print(f"corral: error: cannot start the server: {exc}", file=sys.stderr)
        return 1
    except ImportError as exc:  # --broker redis:// without the redis package
        print(f"corral: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="corral", description="corral: a WebSocket server and client for asyncio."
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    _add_run(subparsers)
    _add_demo(subparsers)
    return parser


def _version() -> str:
    from . import __version__

    return __version__


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``corral`` console script and ``python -m corral``."""
    args = build_parser().parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)  # given again to each worker
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
