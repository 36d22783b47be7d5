"""Request tags (`X-Fal-Tags` on submit): fal's rules; bad tags dropped, never a failure."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from tests.support.emulator import EmulatorProcess
from tests.support.fal_queue import run, submit

KLING = "fal-ai/kling-video/video-to-audio"
VIDEO = {"video_url": "https://example.invalid/clip.mp4"}


def _tags_of(emu: EmulatorProcess, client: httpx.Client, header: str) -> dict[str, str]:
    handle = submit(client, emu.base_url, KLING, VIDEO, headers={"X-Fal-Tags": header})
    tags: dict[str, str] = emu.job(handle["request_id"])["tags"]
    return tags


def test_tags_are_kept_with_the_request_and_never_reach_the_model(
    fast_emu: EmulatorProcess, fast_client: httpx.Client
) -> None:
    handle = submit(
        fast_client,
        fast_emu.base_url,
        KLING,
        VIDEO,
        headers={"X-Fal-Tags": "tenant=acme, job.id=j-42,env=prod_eu"},
    )
    job = fast_emu.job(handle["request_id"])
    assert job["tags"] == {"tenant": "acme", "job.id": "j-42", "env": "prod_eu"}
    assert job["input"] == VIDEO
    assert "tenant" not in job["effective_input"] and "tags" not in job["effective_input"]
    untagged = submit(fast_client, fast_emu.base_url, KLING, VIDEO)
    assert fast_emu.job(untagged["request_id"])["tags"] == {}


def test_the_request_log_names_each_created_requests_tags(
    fast_emu: EmulatorProcess, fast_client: httpx.Client
) -> None:
    """A gateway counts the requests each of its jobs made at fal from the log, by its tag."""
    tagged = submit(
        fast_client, fast_emu.base_url, KLING, VIDEO, headers={"X-Fal-Tags": "job=j-1,bad key=x"}
    )
    untagged = submit(fast_client, fast_emu.base_url, KLING, VIDEO)
    fast_emu.control(ingress_error_rates={"503": 1.0})
    refused = fast_client.post(
        f"{fast_emu.base_url}/{KLING}", json=VIDEO, headers={"X-Fal-Tags": "job=j-2"}
    )
    assert refused.status_code == 503
    tags = [(e["request_id"], e["tags"]) for e in fast_emu.submits(KLING)]
    assert tags == [
        (tagged["request_id"], {"job": "j-1"}),
        (untagged["request_id"], {}),
        (None, None),
    ]


@pytest.mark.parametrize(
    ("header", "kept"),
    [
        ("Tenant=a,ok=1", {"ok": "1"}),  # key: lower case only
        ("ten ant=a,ok=1", {"ok": "1"}),  # key: no space
        ("tenant/x=a,ok=1", {"ok": "1"}),  # key: [a-z0-9._-]
        ("=a,ok=1", {"ok": "1"}),  # key: not empty
        (f"{'k' * 65}=a,{'k' * 64}=b", {"k" * 64: "b"}),  # key: at most 64 characters
        ("fal.user=a,falx=b", {"falx": "b"}),  # the prefix fal. is reserved
        ("noequals,ok=1", {"ok": "1"}),  # a pair without '='
        ("empty=,ok=1", {"ok": "1"}),  # a value is not empty
        ("tab=a\tb,ok=1", {"ok": "1"}),  # value: printable ASCII
        ("v=a=b c!~", {"v": "a=b c!~"}),  # '=' and spaces are printable
        (f"long={'v' * 257},max={'v' * 256}", {"max": "v" * 256}),  # at most 256 characters
        ("dup=first,dup=second", {"dup": "first"}),  # the first of a key wins
    ],
)
def test_each_bad_pair_is_dropped_and_the_rest_kept(
    fast_emu: EmulatorProcess, fast_client: httpx.Client, header: str, kept: dict[str, str]
) -> None:
    assert _tags_of(fast_emu, fast_client, header) == kept


def test_non_ascii_value_is_dropped(fast_emu: EmulatorProcess, fast_client: httpx.Client) -> None:
    header = "city=Zürich,ok=1".encode()
    response = fast_client.post(
        f"{fast_emu.base_url}/{KLING}", json=VIDEO, headers={b"X-Fal-Tags": header}
    )
    assert response.status_code == 200
    assert fast_emu.job(response.json()["request_id"])["tags"] == {"ok": "1"}


def test_at_most_ten_pairs_are_kept(fast_emu: EmulatorProcess, fast_client: httpx.Client) -> None:
    header = ",".join(f"k{i}=v{i}" for i in range(12))
    assert _tags_of(fast_emu, fast_client, header) == {f"k{i}": f"v{i}" for i in range(10)}


def test_a_header_over_1024_bytes_drops_every_tag(
    fast_emu: EmulatorProcess, fast_client: httpx.Client
) -> None:
    # Four pairs "kN=" + 252 characters and three commas make 1,023 bytes; one more is 1,024.
    at_limit = ",".join(f"k{i}={'v' * 252}" for i in range(4)) + "v"
    assert len(at_limit) == 1024
    assert len(_tags_of(fast_emu, fast_client, at_limit)) == 4
    assert _tags_of(fast_emu, fast_client, at_limit + "v") == {}  # 1,025 bytes: all dropped


# --- tag reporting in billing events -------------------------------------------------------------
def _events(emu: EmulatorProcess, *tags: str, **params: Any) -> httpx.Response:
    return httpx.get(
        f"{emu.base_url}/v1/models/billing-events",
        params=[*params.items(), *(("tag", tag) for tag in tags)],
        headers={"Authorization": f"Key {emu.admin_key}"},
    )


def _ids(response: httpx.Response) -> set[str]:
    assert response.status_code == 200, response.text
    return {event["request_id"] for event in response.json()["billing_events"]}


def _run_tagged(emu: EmulatorProcess, client: httpx.Client, header: str | None) -> str:
    headers = {"X-Fal-Tags": header} if header is not None else None
    handle, result = run(client, emu.base_url, KLING, VIDEO, headers=headers)
    assert result.status_code == 200
    request_id: str = handle["request_id"]
    return request_id


def test_billing_events_carry_no_tags_while_tag_reporting_is_off(
    fast_emu: EmulatorProcess, fast_client: httpx.Client
) -> None:
    assert fast_emu.knobs()["tag_reporting"] is False  # as on a fal account by default
    request_id = _run_tagged(fast_emu, fast_client, "tenant=acme")
    (event,) = _events(fast_emu).json()["billing_events"]
    assert event["request_id"] == request_id and "tags" not in event
    tagged = _events(fast_emu, "tenant=acme", source="tagged-billed")
    assert tagged.status_code == 200  # an empty list, not an error
    assert tagged.json()["billing_events"] == [] and tagged.json()["has_more"] is False
    assert _ids(_events(fast_emu, source="tagged-billed")) == set()


def test_tag_reporting_puts_tags_in_billing_events_and_filters_tagged_billed(
    fast_emu: EmulatorProcess, fast_client: httpx.Client
) -> None:
    before = _run_tagged(fast_emu, fast_client, "tenant=acme")  # recorded while off
    fast_emu.control(tag_reporting=True)
    prod = _run_tagged(fast_emu, fast_client, "tenant=acme,env=prod")
    dev = _run_tagged(fast_emu, fast_client, "tenant=acme,env=dev")
    other = _run_tagged(fast_emu, fast_client, "tenant=globex,env=prod")
    untagged = _run_tagged(fast_emu, fast_client, None)

    tags = {e["request_id"]: e["tags"] for e in _events(fast_emu).json()["billing_events"]}
    assert tags == {
        before: {},  # tags are recorded with the event only while reporting is on
        prod: {"tenant": "acme", "env": "prod"},
        dev: {"tenant": "acme", "env": "dev"},
        other: {"tenant": "globex", "env": "prod"},
        untagged: {},
    }
    assert _ids(_events(fast_emu, source="tagged-billed")) == {prod, dev, other}
    assert _ids(_events(fast_emu, "tenant=acme", source="tagged-billed")) == {prod, dev}
    both = _events(fast_emu, "tenant=acme", "env=prod", source="tagged-billed")
    assert _ids(both) == {prod}  # every tag filter must match
    assert _ids(_events(fast_emu, "tenant=initech", source="tagged-billed")) == set()
    assert _ids(_events(fast_emu, "env=prod", source="tagged-billed", limit=1)) <= {prod, other}

    fast_emu.control(tag_reporting=False)
    assert all("tags" not in e for e in _events(fast_emu).json()["billing_events"])
    assert _ids(_events(fast_emu, "tenant=acme", source="tagged-billed")) == set()


def test_unbilled_requests_are_not_tagged_billed_events(
    fast_emu: EmulatorProcess, fast_client: httpx.Client
) -> None:
    fast_emu.control(tag_reporting=True, failure_rates={"runner_disconnected": 1.0})
    handle, result = run(
        fast_client, fast_emu.base_url, KLING, VIDEO, headers={"X-Fal-Tags": "tenant=acme"}
    )
    assert result.status_code == 503
    assert fast_emu.job(handle["request_id"])["usage"]["tags"] == {"tenant": "acme"}
    assert _ids(_events(fast_emu, "tenant=acme", source="tagged-billed")) == set()


@pytest.mark.parametrize(
    ("tags", "params"),
    [
        (["tenant=acme"], {}),  # a tag filter needs source=tagged-billed
        (["tenant"], {"source": "tagged-billed"}),  # a tag filter is key=value
        ([], {"source": "everything"}),
    ],
)
def test_bad_tag_queries_are_400(
    fast_emu: EmulatorProcess, tags: list[str], params: dict[str, str]
) -> None:
    fast_emu.control(tag_reporting=True)
    response = _events(fast_emu, *tags, **params)
    assert response.status_code == 400 and response.json()["detail"]
