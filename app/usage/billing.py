"""fal's billing rules as pure functions: how an upstream request ended → the units it bills.

The ledger (app.usage.ledger) prices these units; the job lifecycle (app.jobs.lifecycle) decides
the outcome. Rules, as far as fal documents them (the emulator bills the same way): success bills
its units (one video; ``metrics.inference_time`` compute seconds; the output seconds asked for,
times the samples, for ``output_second``; the samples for ``sample``); a 5xx is never billed; a
422 from the runner bills the compute seconds it spent (fal: "a 422 may be billed when GPU time
was spent"; ``bill_422``, on by default, as the emulator's ``bill_runner_422``); a request
canceled while queued costs nothing, one canceled while running bills its compute seconds so far
on compute-second models.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import Literal

from app.catalog.registry import OutputQuantity

OutcomeKind = Literal[
    "succeeded",
    "upstream_422",
    "upstream_4xx",
    "upstream_5xx",
    "canceled_queued",
    "canceled_running",
    "unknown",
    "cache_hit",
]


# A result-cache hit: no request reached fal; priced as the pseudo-model of that name.
CACHE_HIT = "cache_hit"


@dataclass(frozen=True)
class Outcome:
    """How an upstream request ended, as billing sees it."""

    kind: str  # one of OutcomeKind (a plain str: stored outcomes are read back as text)
    inference_s: float | None = None


def billable_units(
    unit: str, outcome: Outcome, *, bill_422: bool, output: OutputQuantity | None = None
) -> Decimal | None:
    """Units fal bills for this outcome; None when they cannot be known (no inference time, or
    no output length for a per-output-second model). ``output``: what the request asked fal to
    generate (the payload sent), for the output units."""
    seconds = None if outcome.inference_s is None else Decimal(str(outcome.inference_s))
    if outcome.kind == "unknown":  # e.g. the result expired before we read it
        return None
    if outcome.kind == CACHE_HIT:  # a stored success reused: one hit, at the cache's price
        return Decimal(1)
    if outcome.kind == "succeeded":
        if unit == "video":
            return Decimal(1)
        if unit == "sample":
            return Decimal(output.samples if output is not None else 1)
        if unit == "output_second":
            if output is None or output.seconds_per_sample is None:
                return None
            return output.seconds_per_sample * output.samples
        return seconds
    if outcome.kind == "canceled_running" and unit == "compute_second":
        return seconds if seconds is not None else Decimal(0)
    if outcome.kind == "upstream_422" and bill_422 and unit == "compute_second":
        return seconds if seconds is not None else Decimal(0)
    return Decimal(0)


def failure_kind(status_code: int) -> OutcomeKind:
    """A failed request's outcome by the status code fal answered it with."""
    if status_code == 422:
        return "upstream_422"
    if status_code >= 500:
        return "upstream_5xx"
    return "upstream_4xx"
