"""The result cache end to end, with URL inputs: the worker's preflight hashes what it fetched
and looks the key up before anything is sent. The emulator's request log says what reached
fal."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from tests.support.clips import Clip
from tests.support.waiting import eventually


def _body(url: str, *, seed: int = 3, cache: bool | None = True) -> dict[str, Any]:
    body: dict[str, Any] = {
        "model": "thinksound-audio",
        "input": {"video_url": url, "prompt": "a ball", "seed": seed},
    }
    if cache is not None:
        body["cache"] = cache
    return body


async def _run(gw, body: dict[str, Any], headers: dict[str, str] | None = None) -> dict[str, Any]:  # type: ignore[no-untyped-def]
    """Create the job (with the caller's key) and wait for its end."""
    headers = headers or gw.headers
    r = await gw.client.post("/v1/jobs", json=body, headers=headers)
    assert r.status_code == 202, r.text
    url = f"/v1/jobs/{r.json()['id']}"

    async def finished() -> dict[str, Any] | None:
        job = dict((await gw.client.get(url, headers=headers)).json())
        return job if job["status"] in ("succeeded", "failed", "canceled", "aborted") else None

    return await eventually(finished, timeout=30, what=f"{url} to finish")


async def test_an_identical_job_reuses_a_success_without_a_request_to_fal(
    gateway, clips: dict[str, Clip]
) -> None:
    async with gateway(public=True) as gw:
        url = gw.video_url(clips["bounce"])
        first = await _run(gw, _body(url))
        assert first["status"] == "succeeded", first
        assert first["cache"] == {"hit": False, "source_job": None, "reason": None}
        submits = len(gw.emu.submits())
        assert submits == 1
        # The same bytes at another URL: the key is the content, not where it is.
        elsewhere = gw.video_url(clips["bounce"])
        assert elsewhere != url
        second = await _run(gw, _body(elsewhere))
        assert second["status"] == "succeeded", second
        assert second["cache"] == {"hit": True, "source_job": first["id"], "reason": None}
        assert len(gw.emu.submits()) == submits  # nothing sent to fal
        assert second["upstream"]["request_id"] is None and second["probe"]["duration_s"] > 3
        mine, theirs = second["result"]["audio"], first["result"]["audio"]
        assert mine["file_id"] != theirs["file_id"] and mine["size_bytes"] == theirs["size_bytes"]
        a = await gw.client.get(mine["url"], headers=gw.headers)
        b = await gw.client.get(theirs["url"], headers=gw.headers)
        assert a.status_code == 200 and a.content == b.content
        kinds = [e["type"] for e in await gw.events(second["id"])]
        assert kinds == ["job.created", "job.cache_hit", "job.succeeded"]
        # On the ledger: a hit, no upstream request, at the seeded $0 price.
        rows = await gw.sql(
            "SELECT upstream_request_id, model, unit, units, outcome, status, cost_micros "
            "FROM usage_records WHERE job_id = :j",
            j=uuid.UUID(second["id"]),
        )
        assert [tuple(r) for r in rows] == [
            (None, "cache_hit", "hit", 1, "cache_hit", "settled", 0)
        ]
        assert second["usage"]["unit"] == "hit" and second["usage"]["cost_usd"] == "0.000000"
        # in the usage summary as its own pseudo-model
        r = await gw.client.get("/v1/usage?group_by=model", headers=gw.headers)
        by_model = {g["model"]: g for g in r.json()["data"]}
        assert by_model["cache_hit"]["jobs"] == 1 and by_model["cache_hit"]["units"] == {"hit": "1"}

        # Another seed, or no cache asked for: fal runs it.
        other_seed = await _run(gw, _body(url, seed=4))
        assert other_seed["cache"]["hit"] is False
        not_asked = await _run(gw, _body(url, cache=None))
        assert not_asked["cache"] is None and not_asked["upstream"]["request_id"] is not None
        assert len(gw.emu.submits()) == submits + 2


async def test_another_tenant_misses_unless_the_operator_shares_the_cache(
    gateway, clips: dict[str, Clip]
) -> None:
    for shared in (False, True):
        async with gateway(public=True, result_cache_shared=shared) as gw:
            before = len(gw.emu.submits())  # the log spans the test
            url = gw.video_url(clips["bounce"])
            first = await _run(gw, _body(url))
            assert first["status"] == "succeeded", first
            _, key = await gw.new_tenant("other")
            theirs = await _run(gw, _body(url), {"Authorization": f"Bearer {key}"})
            assert theirs["status"] == "succeeded", theirs
            if shared:
                assert theirs["cache"] == {"hit": True, "source_job": first["id"], "reason": None}
                assert len(gw.emu.submits()) == before + 1
            else:
                assert theirs["cache"]["hit"] is False
                assert len(gw.emu.submits()) == before + 2


async def test_a_source_past_its_retention_is_a_miss(gateway, clips: dict[str, Clip]) -> None:
    async with gateway(public=True, retention_days=1 / 86400) as gw:  # a second
        url = gw.video_url(clips["bounce"])
        first = await _run(gw, _body(url))
        assert first["status"] == "succeeded", first
        done = datetime.fromisoformat(first["completed_at"])
        await eventually(
            lambda: datetime.now(UTC) - done > timedelta(seconds=1.2),
            what="the source to outlive the retention",
        )
        second = await _run(gw, _body(url))
        assert second["status"] == "succeeded", second
        assert second["cache"]["hit"] is False and len(gw.emu.submits()) == 2
