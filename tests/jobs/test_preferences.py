"""The job requests' headers, parsed: Prefer (RFC 7240), Cancel-After, Last-Event-ID."""

from __future__ import annotations

from datetime import timedelta

import pytest

from app.jobs.preferences import InvalidHeader, cancel_after, last_event_id, wait_preference


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        ([], None),
        (["respond-async"], None),
        (["wait=5"], 5),
        (["WAIT=5"], 5),
        (["wait"], 60),
        (["wait=600"], 60),
        (["wait=0"], 0),
        (['wait="7"'], 7),
        (["respond-async, wait=10"], 10),
        (["handling=lenient; x=1", "wait=3"], 3),
        (["wait=3; foo=bar"], 3),
        (["wait=3, wait=9"], 3),  # the first of a repeated preference
        (["wait=-1"], None),  # not understood: ignored
        (["wait=soon"], None),
    ],
)
def test_prefer_wait(values: list[str], expected: int | None) -> None:
    assert wait_preference(values) == expected


def test_prefer_wait_is_capped_by_the_setting() -> None:
    assert wait_preference(["wait=30"], max_s=2) == 2
    assert wait_preference(["wait"], max_s=2) == 2


@pytest.mark.parametrize(
    ("value", "seconds"),
    [("90s", 90), ("5m", 300), ("1h30m", 5400), ("500ms", 0.5), ("90", 90), (" 2.5s ", 2.5)],
)
def test_cancel_after_durations(value: str, seconds: float) -> None:
    assert cancel_after(value) == timedelta(seconds=seconds)


@pytest.mark.parametrize("value", ["", "0s", "0", "-5s", "5 minutes", "5x", "s", "31d", "999h"])
def test_cancel_after_refuses_what_is_not_a_positive_duration(value: str) -> None:
    with pytest.raises(InvalidHeader) as refused:
        cancel_after(value)
    assert refused.value.param == "Cancel-After"
    assert refused.value.status == 400


def test_last_event_id() -> None:
    assert last_event_id(None) is None
    assert last_event_id(" 12 ") == 12
    for bad in ("x", "-1", "1.5", str(2**31)):
        with pytest.raises(InvalidHeader):
            last_event_id(bad)
