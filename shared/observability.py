"""Structured JSON logs and Prometheus metrics shared by every service."""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime
from typing import Any, Protocol

import orjson
from prometheus_client import REGISTRY, Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

_STANDARD = set(logging.makeLogRecord({}).__dict__) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        entry.update({k: v for k, v in record.__dict__.items() if k not in _STANDARD})
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return orjson.dumps(entry, default=str).decode()


def configure_logging(level: str = "INFO") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # aiokafka logs every reconnection attempt at ERROR while a broker is away.
    logging.getLogger("aiokafka").setLevel(logging.CRITICAL)


HTTP_REQUESTS = Counter("http_requests_total", "HTTP requests", ["method", "route", "status"])
HTTP_LATENCY = Histogram("http_request_duration_seconds", "HTTP request latency", ["route"],
                         buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5, 2))

BILLING_RUNS = Counter("invoicing_billing_runs_total", "Billing runs", ["trigger"])
INVOICES_ISSUED = Counter("invoicing_invoices_issued_total", "Invoices numbered and written")
OUTBOX_BACKLOG = Gauge("entitlements_outbox_backlog",
                       "Events in the entitlements outbox not yet acked by the broker")
INVOICING_OUTBOX_BACKLOG = Gauge("invoicing_outbox_backlog",
                                 "invoice.issued and credit_note.issued events in the invoicing "
                                 "outbox not yet acked by the broker")

WEBHOOK_DELIVERIES = Counter("webhook_deliveries_total",
                             "Webhook delivery attempts by outcome: delivered, retry (failed, "
                             "tried again later), failed (given up after the retry window)",
                             ["outcome"])
WEBHOOK_BACKLOG = Gauge("webhook_backlog",
                        "Webhook deliveries not yet delivered nor failed")

ACCESS = logging.getLogger("meterbill.access")
# ACCESS_LOG (shared.settings), set by create_app; a module flag keeps the check cheap.
_access_enabled = True


def enable_access_log(enabled: bool) -> None:
    global _access_enabled
    _access_enabled = enabled


def access_log(method: str, route: str, status: int, seconds: float,
               key_id: str | None) -> None:
    """One line per request. The key's id only: the secret never reaches a log."""
    if _access_enabled and ACCESS.isEnabledFor(logging.INFO):
        ACCESS.info("%s %s %d", method, route, status, extra={
            "method": method, "route": route, "status": status,
            "latency_ms": round(seconds * 1000, 3), "key_id": key_id})


class LagSource(Protocol):
    """What the lag collector reads of an aiokafka consumer (all local, no round trip)."""

    def assignment(self) -> Any: ...

    def highwater(self, partition: Any) -> int | None: ...


class ConsumerLag(Collector):
    """Lag per consumer and partition, computed when scraped: the high watermark the consumer
    last fetched minus the offset its loop last committed (a gauge set in the loop would
    stay stale while the loop is stuck, which is exactly when lag matters)."""

    def __init__(self) -> None:
        self._consumers: dict[str, tuple[LagSource, dict[int, int]]] = {}

    def watch(self, name: str, consumer: LagSource) -> None:
        self._consumers[name] = (consumer, {})

    def committed(self, name: str, offsets: Mapping[Any, int]) -> None:
        if name in self._consumers:
            self._consumers[name][1].update({tp.partition: o for tp, o in offsets.items()})

    def collect(self) -> Iterator[GaugeMetricFamily]:
        family = GaugeMetricFamily("consumer_lag_messages", "High watermark minus committed "
                                   "offset", labels=["consumer", "partition"])
        for name, (consumer, committed) in list(self._consumers.items()):
            for tp in consumer.assignment():
                high = consumer.highwater(tp)
                if high is not None:
                    lag = max(high - committed.get(tp.partition, 0), 0)
                    family.add_metric([name, str(tp.partition)], lag)
        yield family


CONSUMER_LAG = ConsumerLag()
REGISTRY.register(CONSUMER_LAG)
