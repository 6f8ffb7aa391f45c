"""`Metrics`: the service's Prometheus metrics (prometheus-client), one registry per app.

With `--workers=N` each process keeps its own: `/metrics` shows the process that answered.
"""

from typing import Callable

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest

_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.2, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
_BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)


class Metrics:
    content_type = CONTENT_TYPE_LATEST

    def __init__(self):
        self.registry = registry = CollectorRegistry()
        self.requests = Counter("kcaptcha_requests", "HTTP requests answered, by endpoint and status.",
                                ["endpoint", "status"], registry=registry)
        self.latency = Histogram("kcaptcha_request_seconds", "Time from a request's arrival to its answer.",
                                 ["endpoint"], buckets=_LATENCY_BUCKETS, registry=registry)
        self.batch_size = Histogram("kcaptcha_batch_size", "Images read in one model call.", ["model"],
                                    buckets=_BATCH_BUCKETS, registry=registry)
        self.model_seconds = Histogram("kcaptcha_model_seconds", "Time of one model call.", ["model"],
                                       buckets=_LATENCY_BUCKETS, registry=registry)
        self.decode_seconds = Histogram("kcaptcha_decode_seconds", "Time to decode one request's images.",
                                        ["model"], buckets=_LATENCY_BUCKETS, registry=registry)
        self.queue_depth = Gauge("kcaptcha_queue_depth", "Images admitted and not yet answered, per model.",
                                 ["model"], registry=registry)
        self.in_progress = Gauge("kcaptcha_requests_in_progress", "Requests being served.", registry=registry)
        self.body_bytes = Gauge("kcaptcha_body_bytes_in_flight", "Request-body bytes held in memory.",
                                registry=registry)
        self.rejected = Counter("kcaptcha_rejected", "Requests turned away to protect the service, by reason.",
                                ["reason"], registry=registry)
        self._children = {}
        self.disconnects = Counter("kcaptcha_client_disconnects", "Clients that left before their answer.",
                                   registry=registry)

    def observe_request(self, endpoint: str, status: int, seconds: float) -> None:
        key = (endpoint, status)
        children = self._children.get(key)
        if children is None:  # labels() costs a lock and a lookup: once per (endpoint, status)
            children = self._children[key] = (self.requests.labels(endpoint, str(status)), self.latency.labels(endpoint))
        children[0].inc()
        children[1].observe(seconds)

    def batch_observer(self, model: str) -> Callable[[int, float], None]:
        """The `Batcher.on_batch` callback for `model`."""
        size, seconds = self.batch_size.labels(model), self.model_seconds.labels(model)

        def observe(batch_size: int, model_seconds: float) -> None:
            size.observe(batch_size)
            seconds.observe(model_seconds)

        return observe

    def exposition(self) -> bytes:
        return generate_latest(self.registry)
