"""An unexpected error is a 500 problem that carries its request id (app.kit.request_id)."""

from __future__ import annotations

import httpx


async def test_an_unhandled_error_is_a_500_problem_with_the_request_id(
    api: httpx.AsyncClient,
) -> None:
    async def boom() -> None:
        raise RuntimeError("a bug")

    api.app.add_api_route("/v1/_test/boom", boom)  # type: ignore[attr-defined]
    r = await api.get("/v1/_test/boom", headers={"X-Request-Id": "req-from-client"})
    assert r.status_code == 500
    assert r.headers["content-type"] == "application/problem+json"
    body = r.json()
    assert body["code"] == "internal_error"
    assert body["request_id"] == "req-from-client" == r.headers["x-request-id"]
    assert "a bug" not in r.text

    r = await api.get("/v1/_test/boom")
    assert r.status_code == 500
    assert r.json()["request_id"] == r.headers["x-request-id"]
    assert r.json()["request_id"].startswith("req_")
