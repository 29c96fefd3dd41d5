"""Prometheus metrics of a corral server: ``router.http("/metrics", corral.metrics.metrics)``.

Needs ``prometheus_client`` (``pip install 'corral[prometheus]'``). The figures are those of
:meth:`corral.Server.stats`, one series per worker (label ``worker``): under ``corral run
--workers N`` one scrape, answered by whichever worker the kernel gives the connection to,
sees every worker (their figures are shared through the supervisor's directory, at most a
second old; the answering worker's are current). Sum over ``worker`` in PromQL for the
service as a whole. The route also serves ``prometheus_client``'s default registry (the
application's own metrics and the process collectors), as that worker sees it.

Reading the figures costs nothing on the connections: they are counted anyway
(:mod:`corral.server.stats`); a scrape takes a snapshot and renders it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING, Any

try:
    from prometheus_client import REGISTRY
    from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
    from prometheus_client.exposition import choose_encoder
except ImportError as exc:  # pragma: no cover - the test environment has the extra
    raise ImportError("corral.metrics needs prometheus_client: "
                      "pip install 'corral[prometheus]'") from exc

from .request import Request, Response
from .server.stats import ServerStats

if TYPE_CHECKING:
    from prometheus_client.registry import Collector

__all__ = ["CorralCollector", "asgi_metrics", "metrics", "metrics_handler", "render"]


class CorralCollector:
    """A ``prometheus_client`` collector of corral's figures: register it in a registry of
    your own (``registry.register(CorralCollector(server.worker_stats))``) to serve them
    elsewhere; ``stats`` gives the snapshots to report, one per worker."""

    def __init__(self, stats: Callable[[], Iterable[ServerStats]]) -> None:
        self._stats = stats

    def collect(self) -> Iterator[Metric]:
        snapshots = list(self._stats())
        one = ["worker"]

        def counter(name: str, doc: str, value: Callable[[ServerStats], float]) -> Metric:
            family = CounterMetricFamily(f"corral_{name}", doc, labels=one)
            for s in snapshots:
                family.add_metric([str(s.worker)], value(s))
            return family

        def gauge(name: str, doc: str, value: Callable[[ServerStats], float]) -> Metric:
            family = GaugeMetricFamily(f"corral_{name}", doc, labels=one)
            for s in snapshots:
                family.add_metric([str(s.worker)], value(s))
            return family

        info = GaugeMetricFamily("corral_worker_info", "The process serving as each worker.",
                                 labels=["worker", "pid"])
        for s in snapshots:
            info.add_metric([str(s.worker), str(s.pid)], 1.0)
        yield info
        yield gauge("start_time_seconds", "Unix time the server process started.",
                    lambda s: s.started_at)
        yield counter("connections_accepted", "Connections accepted (HTTP and WebSocket).",
                      lambda s: s.connections_accepted)
        yield gauge("http_connections", "Open connections still in their HTTP phase.",
                    lambda s: s.http_connections)
        yield gauge("websockets", "Open WebSocket connections.", lambda s: s.websockets)

        handshakes = CounterMetricFamily(
            "corral_handshakes", "WebSocket handshakes by outcome (accepted, rejected by the "
            "handler, refused by corral, error, abandoned at shutdown).",
            labels=["worker", "outcome"])
        closes = CounterMetricFamily(
            "corral_websocket_closes", "WebSocket connections ended, by CloseKind.",
            labels=["worker", "kind"])
        responses = CounterMetricFamily(
            "corral_http_responses", "HTTP responses by status (not the 101s).",
            labels=["worker", "status"])
        for s in snapshots:
            worker = str(s.worker)
            for outcome, count in s.handshakes.items():
                handshakes.add_metric([worker, outcome], count)
            for kind, count in s.closes.items():
                closes.add_metric([worker, kind], count)
            for status, count in s.http_responses.items():
                responses.add_metric([worker, str(status)], count)
        yield handshakes
        yield closes
        yield responses

        yield counter("messages_received", "WebSocket data messages received.",
                      lambda s: s.messages_received)
        yield counter("messages_sent", "WebSocket data messages sent.",
                      lambda s: s.messages_sent)
        yield counter("received_bytes", "Bytes read by WebSocket connections after their "
                      "handshakes.", lambda s: s.bytes_received)
        yield counter("sent_bytes", "Bytes written by WebSocket connections after their "
                      "handshakes.", lambda s: s.bytes_sent)
        yield counter("dropped_messages", "Messages not sent because of max_backpressure.",
                      lambda s: s.dropped_messages)
        yield counter("backpressure_closes", "Connections closed with 1013 by "
                      "backpressure_policy 'close'.", lambda s: s.backpressure_closes)
        yield counter("publishes", "Publishes made (pub/sub).", lambda s: s.publishes)
        yield counter("publish_failures", "Publishes the broker did not take.",
                      lambda s: s.publish_failures)
        broker = GaugeMetricFamily("corral_broker_connected",
                                   "1 when the pub/sub broker can take publishes.",
                                   labels=["worker", "broker"])
        for s in snapshots:
            broker.add_metric([str(s.worker), s.broker], 1.0 if s.broker_connected else 0.0)
        yield broker
        yield gauge("topics", "Topics with subscribers.", lambda s: s.topics)
        yield gauge("subscriptions", "Subscriptions of WebSocket connections to topics.",
                    lambda s: s.subscriptions)


class _Together:
    """Several collectors as one registry, for the exposition functions."""

    def __init__(self, *collectors: Collector) -> None:
        self._collectors = collectors

    def collect(self) -> Iterator[Metric]:
        for collector in self._collectors:
            yield from collector.collect()


def render(stats: Callable[[], Iterable[ServerStats]], registry: Collector | None,
           accept: str) -> tuple[bytes, str]:
    """The page of corral's figures (and ``registry``'s) in the format ``accept`` asks for,
    and its content type: what both routes below answer."""
    collectors: list[Collector] = [CorralCollector(stats)]
    if registry is not None:
        collectors.insert(0, registry)
    encoder, content_type = choose_encoder(accept)
    return encoder(_Together(*collectors)), content_type


def metrics_handler(registry: Collector | None = REGISTRY) -> Callable[[Request], Response]:
    """An HTTP handler serving corral's metrics and ``registry``'s (``None``: corral's
    only), in the format the scraper asks for (Prometheus text or OpenMetrics)."""

    def handle(request: Request) -> Response:
        server = request.server
        if server is None:
            return Response(500, "corral.metrics: the request has no server\n")
        body, content_type = render(server.worker_stats, registry,
                                    request.headers.get("accept") or "")
        return Response(200, body, content_type=content_type)

    handle.__name__ = handle.__qualname__ = "metrics"
    return handle


metrics = metrics_handler()
"""``router.http("/metrics", corral.metrics.metrics)``: corral's metrics and
``prometheus_client``'s default registry."""


class _MetricsApp:
    """The ASGI application :func:`asgi_metrics` makes (an object, so that Starlette's
    ``add_route`` runs it as ASGI rather than as a request handler)."""

    def __init__(self, registry: Collector | None) -> None:
        self._registry = registry

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        stats = (scope.get("extensions") or {}).get("corral.stats")
        if stats is None:
            status, content_type = 500, "text/plain; charset=utf-8"
            body = b"corral.metrics: this server does not offer corral's stats\n"
        else:
            accept = next((v.decode("latin-1") for n, v in scope["headers"]
                           if n == b"accept"), "")
            status = 200
            body, content_type = render(stats["worker_stats"], self._registry, accept)
        await send({"type": "http.response.start", "status": status,
                    "headers": [(b"content-type", content_type.encode("latin-1"))]})
        await send({"type": "http.response.body", "body": body})


def asgi_metrics(registry: Collector | None = REGISTRY) -> Any:
    """An ASGI application serving the same, for an ASGI app served by corral:
    ``app.add_route("/metrics", corral.metrics.asgi_metrics())`` (Starlette, FastAPI). It
    reads the figures through the ``corral.stats`` scope extension; elsewhere it answers
    500."""
    return _MetricsApp(registry)
