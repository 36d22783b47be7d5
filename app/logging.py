"""structlog set-up: console output for people, JSON lines for machines.

Every line carries what is bound to the context where it is written: ``request_id`` (and
``tenant_id``, and ``job_id`` once a job is accepted) in the API's requests (app.kit.request_id,
app.auth), ``job_id`` and ``tenant_id`` in a worker's job steps (app.jobs.steps); with traces on,
the span's ``trace_id`` and ``span_id`` too, so a line leads to its trace."""

from __future__ import annotations

import logging
import sys
from collections.abc import MutableMapping
from typing import Any, TextIO

import structlog

from app.telemetry import tracing


def _trace_ids(
    _logger: Any, _method: str, event: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    ids = tracing.current_ids()
    if ids is not None:
        event.setdefault("trace_id", ids[0])
        event.setdefault("span_id", ids[1])
    return event


def configure_logging(
    level: str = "INFO",
    fmt: str = "console",
    *,
    file: TextIO | None = None,
    cache_loggers: bool = True,
) -> None:
    """``file``: where lines go (stderr by default). ``cache_loggers``: each logger keeps this
    configuration from its first use (what a process wants; not a test that restores another)."""
    out = file or sys.stderr
    renderer: structlog.types.Processor
    if fmt == "json":
        renderer = structlog.processors.JSONRenderer()
    else:
        renderer = structlog.dev.ConsoleRenderer(colors=out.isatty())
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            _trace_ids,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.StackInfoRenderer(),
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelName(level.upper())),
        logger_factory=structlog.PrintLoggerFactory(file=out),
        cache_logger_on_first_use=cache_loggers,
    )
    logging.basicConfig(level=level.upper(), stream=sys.stderr, format="%(name)s: %(message)s")
    # One line per request is uvicorn's access log's job, not ours; keep libraries quiet.
    for noisy in ("httpx", "httpcore", "asyncio"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
