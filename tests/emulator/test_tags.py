"""Request tags (`X-Fal-Tags` on submit): fal's rules; bad tags dropped, never a failure."""

from __future__ import annotations

import httpx
import pytest

from tests.support.emulator import EmulatorProcess
from tests.support.fal_queue import submit

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
        f"{fast_emu.base_url}/{KLING}", json=VIDEO, headers={"X-Fal-Tags": header}
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
