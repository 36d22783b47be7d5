"""fal's billing rules: how a request ended → the units it bills."""

from __future__ import annotations

from decimal import Decimal

import pytest

from app.usage.billing import Outcome, billable_units, failure_kind


@pytest.mark.parametrize(
    ("unit", "kind", "seconds", "bill_422", "expected"),
    [
        ("video", "succeeded", None, False, "1"),
        ("compute_second", "succeeded", 6.5, False, "6.5"),
        ("compute_second", "succeeded", None, False, None),  # unknown: settled at the estimate
        ("video", "upstream_5xx", None, False, "0"),
        ("compute_second", "upstream_5xx", 3.0, False, "0"),
        ("compute_second", "upstream_422", 2.0, False, "0"),
        ("compute_second", "upstream_422", 2.0, True, "2.0"),
        ("video", "upstream_422", None, True, "0"),
        ("video", "canceled_queued", None, False, "0"),
        ("compute_second", "canceled_running", 1.25, False, "1.25"),
        ("video", "canceled_running", None, False, "0"),
        ("video", "unknown", None, False, None),
    ],
)
def test_billing_rules(
    unit: str, kind: str, seconds: float | None, bill_422: bool, expected: str | None
) -> None:
    units = billable_units(unit, Outcome(kind, seconds), bill_422=bill_422)
    assert units == (None if expected is None else Decimal(expected))


@pytest.mark.parametrize(
    ("status", "kind"),
    [(422, "upstream_422"), (400, "upstream_4xx"), (499, "upstream_4xx"), (500, "upstream_5xx")],
)
def test_a_failure_is_billed_by_its_status_code(status: int, kind: str) -> None:
    assert failure_kind(status) == kind
