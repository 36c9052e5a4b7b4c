"""What the process measures and how it logs: Prometheus metrics kept in this process (the
/metrics route adds what it reads from the database), and JSON log lines that carry the
request id of the request they were written for."""

from __future__ import annotations

import contextvars
import json
import logging
import sys
import traceback
from datetime import UTC, datetime
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram

REGISTRY = CollectorRegistry()
"""Metrics this process keeps (counters, histograms), exported by /metrics."""

_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)
REQUEST_SECONDS = Histogram(
    "dealledger_request_seconds",
    "HTTP request latency by route template, method and status",
    ["route", "method", "status"],
    buckets=_LATENCY_BUCKETS,
    registry=REGISTRY,
)
APPEND_SECONDS = Histogram(
    "dealledger_append_seconds",
    "Time to append one command's events to the log (one transaction)",
    buckets=_LATENCY_BUCKETS,
    registry=REGISTRY,
)
APPEND_CONFLICTS = Counter(
    "dealledger_append_conflicts",
    "Appends refused because the deal had moved on since the head they were decided on"
    " (another process or request appended first); each is decided again on the new head",
    registry=REGISTRY,
)
DEAL_READS = Counter(
    "dealledger_deal_reads",
    "Reads of a deal's events before deciding a command on it: `whole` (its head was not"
    " cached) or `after_head` (another process's append to it was not heard in full)",
    ["kind"],
    registry=REGISTRY,
)
WEBHOOK_DELIVERIES = Counter(
    "dealledger_webhook_attempts",
    "Webhook delivery attempts by outcome (delivered, retrying, failed, gone, refused)",
    ["outcome"],
    registry=REGISTRY,
)
WEBHOOK_LAG_SECONDS = Histogram(
    "dealledger_webhook_delivery_lag_seconds",
    "From the event being recorded to its receiver answering 2xx",
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 1800, 7200, 36000),
    registry=REGISTRY,
)
PROJECTION_ERRORS = Counter(
    "dealledger_projection_errors",
    "Batches a projection (or the webhook outbox) failed to apply, by projection",
    ["projection"],
    registry=REGISTRY,
)

REQUEST_ID: contextvars.ContextVar[str | None] = contextvars.ContextVar("request_id", default=None)
"""The id of the HTTP request being served (X-Request-ID, or one made up), for log lines."""


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, request id, and any
    `extra=` fields the caller passed."""

    # Fields every record has, and uvicorn's terminal colouring: not extras.
    _STANDARD = set(logging.makeLogRecord({}).__dict__) | {"message", "asctime", "color_message"}

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
            "request_id": REQUEST_ID.get(),
        }
        for key, value in record.__dict__.items():
            if key not in self._STANDARD and not key.startswith("_"):
                line[key] = value
        if record.exc_info:
            line["exception"] = "".join(traceback.format_exception(*record.exc_info))
        return json.dumps(line, default=str)


def configure_logging(log_format: str, level: int = logging.INFO) -> None:
    """JSON lines on stderr (or plain text), for our loggers and uvicorn's."""
    handler = logging.StreamHandler(sys.stderr)
    if log_format == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        logger = logging.getLogger(name)
        logger.handlers[:] = []
        logger.propagate = True
