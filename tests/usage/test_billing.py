"""fal's billing rules: how a request ended → the units it bills."""

from __future__ import annotations

from decimal import Decimal

import pytest

from app.catalog.registry import CATALOG, OutputQuantity
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


THREE_SAMPLES_OF_4_5_S = OutputQuantity(samples=3, seconds_per_sample=Decimal("4.5"))


@pytest.mark.parametrize(
    ("unit", "kind", "output", "expected"),
    [
        ("output_second", "succeeded", THREE_SAMPLES_OF_4_5_S, "13.5"),  # per second per sample
        ("output_second", "succeeded", OutputQuantity(1, Decimal("4.011")), "4.011"),
        ("output_second", "succeeded", OutputQuantity(2, None), None),  # no length: the estimate
        ("output_second", "succeeded", None, None),
        ("sample", "succeeded", THREE_SAMPLES_OF_4_5_S, "3"),
        ("output_second", "upstream_422", THREE_SAMPLES_OF_4_5_S, "0"),
        ("output_second", "upstream_5xx", THREE_SAMPLES_OF_4_5_S, "0"),
        ("output_second", "canceled_running", THREE_SAMPLES_OF_4_5_S, "0"),
        ("sample", "canceled_queued", THREE_SAMPLES_OF_4_5_S, "0"),
    ],
)
def test_output_units_bill_what_the_request_asked_for(
    unit: str, kind: str, output: OutputQuantity | None, expected: str | None
) -> None:
    units = billable_units(unit, Outcome(kind, 9.0), bill_422=True, output=output)
    assert units == (None if expected is None else Decimal(expected))


def test_the_catalogue_counts_the_payload_sent() -> None:
    mirelo = CATALOG.require("mirelo-sfx")
    payload = mirelo.payload_for_probe({"num_samples": 4, "start_offset": 1.5}, 7.25)
    assert payload["duration"] == 5.75
    assert mirelo.output_quantity(payload) == OutputQuantity(4, Decimal("5.75"))
    # a long video gets the model's longest output, an unset sample count fal's default
    assert mirelo.output_quantity(mirelo.payload_for_probe({}, 60.0)) == OutputQuantity(
        2, Decimal("10.0")
    )
    kling = CATALOG.require("kling-video-to-audio")
    assert kling.payload_for_probe({"video_url": "u"}, 4.0) == {"video_url": "u"}
