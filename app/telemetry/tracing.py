"""OpenTelemetry traces, on only when ``OTEL_EXPORTER_OTLP_ENDPOINT`` is set.

Off (the default), nothing is imported beyond this module's few names and every helper returns
at its first line: a job's steps pay one attribute read. On, each process exports over
OTLP/HTTP (the standard ``OTEL_*`` variables: endpoint, headers, ``OTEL_SERVICE_NAME``, batch
delays) with the standard instrumentations — FastAPI (a server span per request), httpx (every
call to fal), asyncpg (every statement) — and one trace follows a job: the accepting request's
``traceparent`` is stored on the job (``jobs.traceparent``), and each worker step continues it
(``job_span``), so dispatch, the calls to fal and finalize sit under the ``POST /v1/jobs`` that
accepted the job.

A root span of kind CLIENT — a statement or an HTTP call outside any request or job step: the
workers' claims and beats, status polls, housekeeping — is not sampled: otherwise the claims'
polling alone would fill the backend with one-span traces.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from fastapi import FastAPI
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SpanExporter
    from opentelemetry.trace import Span

ENDPOINT_VARIABLE = "OTEL_EXPORTER_OTLP_ENDPOINT"
# Requests a trace would only clutter: scrapes and probes.
EXCLUDED_URLS = "/metrics,/healthz,/readyz"


class _State:
    provider: TracerProvider | None = None
    tracer: Any = None


_state = _State()


def enabled() -> bool:
    return _state.tracer is not None


def configure(service_name: str, *, exporter: SpanExporter | None = None) -> bool:
    """Start exporting traces (once per process; later calls change nothing). From the
    environment when ``exporter`` is None: off unless OTEL_EXPORTER_OTLP_ENDPOINT is set. A given
    exporter (tests: the SDK's in-memory one) gets every span as it ends."""
    if _state.tracer is not None:
        return True
    if exporter is None and not os.environ.get(ENDPOINT_VARIABLE):
        return False
    from opentelemetry import trace
    from opentelemetry.instrumentation.asyncpg import AsyncPGInstrumentor
    from opentelemetry.instrumentation.httpx import HTTPXClientInstrumentor
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor
    from opentelemetry.sdk.trace.sampling import ParentBased

    if exporter is None:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        processor: Any = BatchSpanProcessor(OTLPSpanExporter())
    else:
        processor = SimpleSpanProcessor(exporter)
    name = os.environ.get("OTEL_SERVICE_NAME") or service_name
    provider = _state.provider
    if provider is None:
        provider = TracerProvider(
            resource=Resource.create({"service.name": name}),
            sampler=ParentBased(root=_root_sampler()),
        )
        # The global provider can be set once per process: a second configure (tests) adds
        # its processor to the same provider.
        trace.set_tracer_provider(provider)
        _state.provider = provider
    provider.add_span_processor(processor)
    HTTPXClientInstrumentor().instrument(tracer_provider=provider)
    AsyncPGInstrumentor().instrument(tracer_provider=provider)
    _state.tracer = provider.get_tracer("foley")
    return True


def shutdown() -> None:
    """Stop tracing in this process: spans are flushed, the instrumentations removed."""
    if _state.tracer is None or _state.provider is None:
        return
    from opentelemetry.instrumentation.asyncpg import AsyncPGInstrumentor
    from opentelemetry.instrumentation.httpx import HTTPXClientInstrumentor

    _state.provider.force_flush()
    HTTPXClientInstrumentor().uninstrument()
    AsyncPGInstrumentor().uninstrument()
    _state.tracer = None


def instrument_app(app: FastAPI) -> None:
    """A server span per request (FastAPI's instrumentation), when tracing is on."""
    if _state.tracer is None:
        return
    from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor

    FastAPIInstrumentor.instrument_app(
        app, tracer_provider=_state.provider, excluded_urls=EXCLUDED_URLS
    )


def current_traceparent() -> str | None:
    """The W3C traceparent of the current span (None when tracing is off or no span is
    recording): stored with a job at accept."""
    if _state.tracer is None:
        return None
    from opentelemetry import trace

    context = trace.get_current_span().get_span_context()
    if not context.is_valid:
        return None
    return f"00-{context.trace_id:032x}-{context.span_id:016x}-{int(context.trace_flags):02x}"


def current_ids() -> tuple[str, str] | None:
    """The current span's trace and span ids in hex (the logs carry them), None when tracing is
    off or no span is recording."""
    if _state.tracer is None:
        return None
    from opentelemetry import trace

    context = trace.get_current_span().get_span_context()
    if not context.is_valid:
        return None
    return f"{context.trace_id:032x}", f"{context.span_id:016x}"


@contextmanager
def job_span(
    name: str, traceparent: str | None, attributes: Mapping[str, str]
) -> Iterator[Span | None]:
    """A span for a worker's step of a job, continuing the trace of the request that accepted
    it (``traceparent``; a job accepted with tracing off starts a trace of its own)."""
    if _state.tracer is None:
        yield None
        return
    from opentelemetry.trace import SpanKind
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

    parent = None
    if traceparent:
        parent = TraceContextTextMapPropagator().extract({"traceparent": traceparent})
    with _state.tracer.start_as_current_span(
        name, context=parent, kind=SpanKind.CONSUMER, attributes=dict(attributes)
    ) as span:
        yield span


@contextmanager
def span(name: str, **attributes: str) -> Iterator[Span | None]:
    """A child span of the current one (a part of a step worth seeing apart: finalize)."""
    if _state.tracer is None:
        yield None
        return
    with _state.tracer.start_as_current_span(name, attributes=attributes) as current:
        yield current


def _root_sampler() -> Any:
    from opentelemetry.sdk.trace.sampling import Decision, Sampler, SamplingResult
    from opentelemetry.trace import SpanKind

    class RootSampler(Sampler):
        """Roots: everything but a CLIENT span (see the module's docstring)."""

        def should_sample(
            self,
            parent_context: Any,
            trace_id: int,
            name: str,
            kind: SpanKind | None = None,
            attributes: Any = None,
            links: Sequence[Any] | None = None,
            trace_state: Any = None,
        ) -> SamplingResult:
            if kind is SpanKind.CLIENT:
                return SamplingResult(Decision.DROP)
            return SamplingResult(Decision.RECORD_AND_SAMPLE, attributes)

        def get_description(self) -> str:
            return "FoleyRoots"

    return RootSampler()
