"""`GET /v1/models/requests/by-endpoint`: fal's request history, how a gateway learns whether fal
received a submit whose answer was lost."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.emulator import EmulatorProcess, running_emulator
from tests.support.fal_queue import run, submit, wait_status
from tests.support.waiting import eventually_sync

KLING = "fal-ai/kling-video/video-to-audio"
THINKSOUND = "fal-ai/thinksound"
VIDEO = {"video_url": "https://example.invalid/clip.mp4"}
FIELDS = {
    "request_id", "endpoint_id", "started_at", "sent_at", "ended_at", "status_code", "duration",
}  # fmt: skip


def _history(emu: EmulatorProcess, **params: Any) -> httpx.Response:
    return httpx.get(
        f"{emu.base_url}/v1/models/requests/by-endpoint",
        params=params,
        headers={"Authorization": f"Key {emu.admin_key}"},
    )


def _items(emu: EmulatorProcess, **params: Any) -> list[dict[str, Any]]:
    response = _history(emu, **params)
    assert response.status_code == 200, response.text
    items: list[dict[str, Any]] = response.json()["items"]
    return items


def _at(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def _iso(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


def test_a_completed_request_is_listed_under_its_full_endpoint_id(
    fast_emu: EmulatorProcess, fast_client: httpx.Client
) -> None:
    fast_emu.control(run_time=0.2)
    handle, _ = run(fast_client, fast_emu.base_url, KLING, VIDEO)
    run(fast_client, fast_emu.base_url, THINKSOUND, VIDEO)
    response = _history(fast_emu, endpoint_id=KLING)
    assert response.status_code == 200
    body = response.json()
    assert (body["next_cursor"], body["has_more"]) == (None, False)
    (item,) = body["items"]
    assert set(item) == FIELDS  # no payloads unless asked
    assert (item["request_id"], item["endpoint_id"]) == (handle["request_id"], KLING)
    assert item["status_code"] == 200
    sent, started, ended = (_at(item[k]) for k in ("sent_at", "started_at", "ended_at"))
    assert sent <= started < ended <= datetime.now(UTC)
    status = fast_client.get(handle["status_url"]).json()
    assert item["duration"] == status["metrics"]["inference_time"] >= 0.2
    assert _items(fast_emu, endpoint_id="fal-ai/kling-video") == []  # the full id, as submitted


def test_queued_and_running_requests_have_no_end_yet(
    fast_emu: EmulatorProcess, fast_client: httpx.Client
) -> None:
    fast_emu.control(concurrency=1, run_time=30)
    running = submit(fast_client, fast_emu.base_url, KLING, VIDEO)
    queued = submit(fast_client, fast_emu.base_url, KLING, VIDEO)
    wait_status(fast_client, running["status_url"], "IN_PROGRESS")
    items = {item["request_id"]: item for item in _items(fast_emu, endpoint_id=KLING)}
    now_running, now_queued = items[running["request_id"]], items[queued["request_id"]]
    assert now_running["started_at"] is not None
    assert now_queued["started_at"] is None
    for item in (now_running, now_queued):
        assert (item["ended_at"], item["status_code"], item["duration"]) == (None, None, None)
    fast_client.put(queued["cancel_url"])
    cancelled = _items(fast_emu, endpoint_id=KLING, request_id=queued["request_id"])[0]
    assert cancelled["status_code"] == 499 and cancelled["ended_at"] is not None
    assert (cancelled["started_at"], cancelled["duration"]) == (None, None)  # never ran
    fast_client.put(running["cancel_url"])


def test_a_submit_whose_answer_was_dropped_is_listed(
    fast_emu: EmulatorProcess, fast_client: httpx.Client
) -> None:
    fast_emu.control(ambiguous_submit_rate=1.0, ambiguous_submit_hold_s=0.1)
    payload = {**VIDEO, "sound_effect_prompt": "rain on a tin roof"}
    with pytest.raises(httpx.RemoteProtocolError):
        fast_client.post(f"{fast_emu.base_url}/{KLING}", json=payload)
    (entry,) = fast_emu.submits()
    assert entry["outcome"] == "dropped"
    (item,) = _items(fast_emu, endpoint_id=KLING, expand="payloads")
    assert item["request_id"] == entry["request_id"]
    assert item["json_input"] == payload  # the gateway can match it to what it sent
    assert _items(fast_emu, endpoint_id=KLING, request_id=entry["request_id"]) != []


def test_windows_default_to_24_hours_or_90_days_with_a_request_id(
    fast_emu: EmulatorProcess, fast_client: httpx.Client
) -> None:
    handle, _ = run(fast_client, fast_emu.base_url, KLING, VIDEO)
    request_id = handle["request_id"]
    now = datetime.now(UTC)
    in_two_days = _iso(now + timedelta(days=2))
    assert len(_items(fast_emu, endpoint_id=KLING)) == 1
    later = {"start": _iso(now + timedelta(minutes=5)), "end": in_two_days}
    assert _items(fast_emu, endpoint_id=KLING, **later) == []
    assert _items(fast_emu, endpoint_id=KLING, end=_iso(now - timedelta(hours=1))) == []
    explicit = _items(
        fast_emu,
        endpoint_id=KLING,
        start=_iso(now - timedelta(minutes=5)),
        end=_iso(now + timedelta(minutes=5)),
    )
    assert [item["request_id"] for item in explicit] == [request_id]
    # Without a start, the window is the 24 h before `end`; 90 days when a request_id is given.
    assert _items(fast_emu, endpoint_id=KLING, end=in_two_days) == []
    found = _items(fast_emu, endpoint_id=KLING, end=in_two_days, request_id=request_id)
    assert [item["request_id"] for item in found] == [request_id]
    in_100_days = _iso(now + timedelta(days=100))
    assert _items(fast_emu, endpoint_id=KLING, end=in_100_days, request_id=request_id) == []


def test_request_id_filter(fast_emu: EmulatorProcess, fast_client: httpx.Client) -> None:
    first = submit(fast_client, fast_emu.base_url, KLING, VIDEO)
    submit(fast_client, fast_emu.base_url, KLING, VIDEO)
    found = _items(fast_emu, endpoint_id=KLING, request_id=first["request_id"])
    assert [item["request_id"] for item in found] == [first["request_id"]]
    assert _items(fast_emu, endpoint_id=KLING, request_id="no-such-request") == []
    assert _items(fast_emu, endpoint_id=THINKSOUND, request_id=first["request_id"]) == []


def test_cursor_pages_newest_first_and_stay_stable_while_requests_arrive(
    fast_emu: EmulatorProcess, fast_client: httpx.Client
) -> None:
    submitted = [
        submit(fast_client, fast_emu.base_url, KLING, VIDEO)["request_id"] for _ in range(5)
    ]
    seen: list[str] = []
    sent: list[str] = []
    cursor = None
    pages = 0
    while True:
        params = {"endpoint_id": KLING, "limit": 2} | ({"cursor": cursor} if cursor else {})
        response = _history(fast_emu, **params)
        assert response.status_code == 200
        body = response.json()
        assert len(body["items"]) <= 2
        seen += [item["request_id"] for item in body["items"]]
        sent += [item["sent_at"] for item in body["items"]]
        pages += 1
        if pages == 1:  # a request arriving meanwhile shifts nothing in the next pages
            submit(fast_client, fast_emu.base_url, KLING, VIDEO)
        assert body["has_more"] is (body["next_cursor"] is not None)
        if not body["has_more"]:
            break
        cursor = body["next_cursor"]
    assert pages == 3
    assert seen == list(reversed(submitted))
    assert sent == sorted(sent, reverse=True)
    assert len(_items(fast_emu, endpoint_id=KLING, limit=100)) == 6


def test_expand_payloads_gives_the_exact_input_and_the_output_or_error(
    fast_emu: EmulatorProcess, fast_client: httpx.Client
) -> None:
    payload = {
        "video_url": "https://example.invalid/clip.mp4?x=1&y=%20",
        "sound_effect_prompt": 'Zürich "rain", 雨',
        "asmr_mode": False,
        "not_a_field": {"nested": [1, 2.5, None]},  # ignored by the model, kept as sent
    }
    _, result = run(fast_client, fast_emu.base_url, KLING, payload)
    (item,) = _items(fast_emu, endpoint_id=KLING, expand="payloads")
    assert item["json_input"] == payload
    assert item["json_output"] == result.json()
    fast_emu.control(failure_rates={"runner_disconnected": 1.0})
    failed, failure = run(fast_client, fast_emu.base_url, KLING, VIDEO)
    (item,) = _items(
        fast_emu, endpoint_id=KLING, request_id=failed["request_id"], expand="payloads"
    )
    assert item["status_code"] == 503
    assert item["json_output"] == failure.json()
    assert item["json_output"]["error_type"] == "runner_disconnected"


def test_no_payloads_kept_for_a_request_with_store_io_off(
    fast_emu: EmulatorProcess, fast_client: httpx.Client
) -> None:
    run(fast_client, fast_emu.base_url, KLING, VIDEO, headers={"X-Fal-Store-IO": "0"})
    (item,) = _items(fast_emu, endpoint_id=KLING, expand="payloads")
    assert (item["json_input"], item["json_output"]) == (None, None)
    assert item["status_code"] == 200


def test_a_request_outlives_its_expired_result(
    fast_emu: EmulatorProcess, fast_client: httpx.Client
) -> None:
    fast_emu.control(result_ttl_s=0)  # fast mode: completed within the submit, then forgotten
    handle = submit(fast_client, fast_emu.base_url, KLING, VIDEO)
    eventually_sync(
        lambda: fast_client.get(handle["status_url"]).status_code == 404,
        timeout=5,
        what="the result to expire",
    )
    (item,) = _items(fast_emu, endpoint_id=KLING, expand="payloads")
    assert (item["request_id"], item["status_code"]) == (handle["request_id"], 200)
    assert item["json_input"] == VIDEO and item["json_output"]["video"]


@pytest.mark.parametrize(
    "params",
    [
        {},
        {"endpoint_id": ""},
        {"endpoint_id": KLING, "limit": 0},
        {"endpoint_id": KLING, "limit": 101},
        {"endpoint_id": KLING, "limit": "ten"},
        {"endpoint_id": KLING, "start": "yesterday"},
        {"endpoint_id": KLING, "end": "2025-13-01"},
        {"endpoint_id": KLING, "start": "2025-06-02T00:00:00Z", "end": "2025-06-01T00:00:00Z"},
        {"endpoint_id": KLING, "cursor": "not a cursor"},
        {"endpoint_id": KLING, "expand": "everything"},
    ],
)
def test_bad_parameters_are_400(fast_emu: EmulatorProcess, params: dict[str, Any]) -> None:
    response = _history(fast_emu, **params)
    assert response.status_code == 400
    assert isinstance(response.json()["detail"], str)


def test_limits_at_the_bounds_are_accepted(fast_emu: EmulatorProcess) -> None:
    for limit in (1, 100):
        assert _history(fast_emu, endpoint_id=KLING, limit=limit).status_code == 200


def test_needs_the_admin_key(fast_emu: EmulatorProcess) -> None:
    url = f"{fast_emu.base_url}/v1/models/requests/by-endpoint"
    params = {"endpoint_id": KLING}
    assert httpx.get(url, params=params).status_code == 401
    assert httpx.get(url, params=params, headers=fast_emu.auth_headers).status_code == 403
    bearer = {"Authorization": f"Bearer {fast_emu.admin_key}"}
    assert httpx.get(url, params=params, headers=bearer).status_code == 401


@pytest.fixture(scope="module")
def small_memory(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmulatorProcess]:
    data_dir: Path = tmp_path_factory.mktemp("small-memory")
    env = {"FOLEY_EMULATOR_MAX_KEPT_RESULTS": "3"}
    with running_emulator(data_dir, fast=True, env=env) as emu:
        yield emu


def test_requests_beyond_the_memory_bound_are_forgotten(small_memory: EmulatorProcess) -> None:
    with httpx.Client(headers=small_memory.auth_headers, timeout=30) as client:
        ids = [run(client, small_memory.base_url, KLING, VIDEO)[0]["request_id"] for _ in range(5)]
    listed = [item["request_id"] for item in _items(small_memory, endpoint_id=KLING)]
    assert listed == list(reversed(ids[-3:]))
    assert _items(small_memory, endpoint_id=KLING, request_id=ids[0]) == []
