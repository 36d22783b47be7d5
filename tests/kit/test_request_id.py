"""An unexpected error is a 500 problem that carries its request id (app.kit.request_id)."""

from __future__ import annotations

import httpx
from starlette.requests import ClientDisconnect
from structlog.testing import capture_logs

from app.kit.problems import internal_error
from app.kit.request_id import RequestIdMiddleware


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


async def test_a_client_gone_mid_request_is_no_error() -> None:
    async def dropped(scope, receive, send) -> None:  # type: ignore[no-untyped-def]
        raise ClientDisconnect

    sent: list[dict] = []

    async def send(message) -> None:  # type: ignore[no-untyped-def]
        sent.append(message)

    async def receive() -> dict:
        return {"type": "http.disconnect"}

    middleware = RequestIdMiddleware(dropped, on_error=internal_error)
    scope = {"type": "http", "method": "POST", "path": "/v1/files", "headers": []}
    with capture_logs() as logs:
        await middleware(scope, receive, send)
    assert sent == []  # nobody to answer
    assert [e["event"] for e in logs] == ["client disconnected"]
    assert logs[0]["log_level"] == "info"
