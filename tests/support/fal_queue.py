"""Small helpers to drive the fal queue protocol in tests (the emulator's or fal's)."""

from __future__ import annotations

import time
from typing import Any

import httpx


def submit(
    client: httpx.Client,
    base_url: str,
    model: str,
    payload: dict[str, Any],
    *,
    webhook: str | None = None,
    headers: dict[str, str] | None = None,
) -> dict[str, Any]:
    params = {"fal_webhook": webhook} if webhook else None
    response = client.post(f"{base_url}/{model}", json=payload, params=params, headers=headers)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def wait_status(
    client: httpx.Client, status_url: str, wanted: str = "COMPLETED", timeout: float = 30.0
) -> dict[str, Any]:
    """Poll `status_url` until the request reaches `wanted`; returns that status body."""
    deadline = time.monotonic() + timeout
    while True:
        response = client.get(status_url, params={"logs": 1})
        assert response.status_code in (200, 202), response.text
        body: dict[str, Any] = response.json()
        if body["status"] == wanted:
            return body
        if body["status"] == "COMPLETED" or time.monotonic() > deadline:
            raise AssertionError(f"wanted {wanted}, got {body}")
        time.sleep(0.02)  # between polls, up to the deadline


def run(
    client: httpx.Client, base_url: str, model: str, payload: dict[str, Any], **kwargs: Any
) -> tuple[dict[str, Any], httpx.Response]:
    """Submit, wait for completion, fetch the result: (submit answer, result response)."""
    handle = submit(client, base_url, model, payload, **kwargs)
    wait_status(client, handle["status_url"])
    return handle, client.get(handle["response_url"])
