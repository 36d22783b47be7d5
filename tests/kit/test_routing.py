"""RequestRoute: an endpoint that takes only the Request is called directly; every other route of
its router, and any route served through an include, is served as FastAPI serves it
(app.kit.routing)."""

from __future__ import annotations

from typing import Annotated

import httpx
from fastapi import APIRouter, Depends, FastAPI, HTTPException, Query, Request
from fastapi.responses import JSONResponse, Response

from app.kit.routing import RequestRoute

seen: list[str] = []


def _needs_header(request: Request) -> None:
    seen.append("dependency")
    if request.headers.get("x-allowed") != "yes":
        raise HTTPException(403, "not allowed")


def _router(prefix: str, **kwargs: object) -> APIRouter:
    router = APIRouter(prefix=prefix, route_class=RequestRoute, **kwargs)  # type: ignore[arg-type]

    @router.post("", status_code=202, response_model=dict[str, int])
    async def create(request: Request) -> Response:
        body = await request.json()
        if body.get("fail"):
            raise HTTPException(409, "taken")
        return JSONResponse({"n": body["n"]}, status_code=202)

    @router.get("")
    async def listing(limit: Annotated[int, Query(ge=1, le=10)] = 5) -> dict[str, int]:
        return {"limit": limit}

    return router


def _app() -> FastAPI:
    app = FastAPI()
    # as app.main serves the jobs routes: spliced into the app's own router
    app.router.routes[0:0] = _router("/things").routes
    app.include_router(_router("/guarded", dependencies=[Depends(_needs_header)]))
    app.include_router(_router("/included"), dependencies=[Depends(_needs_header)])
    return app


def _client() -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=_app()), base_url="http://t")


async def test_a_request_only_endpoint_answers_as_it_returns_and_is_documented() -> None:
    async with _client() as c:
        r = await c.post("/things", json={"n": 3})
        assert (r.status_code, r.json()) == (202, {"n": 3})
        # its exceptions reach the app's handlers as any route's do
        r = await c.post("/things", json={"n": 1, "fail": True})
        assert (r.status_code, r.json()) == (409, {"detail": "taken"})
        doc = (await c.get("/openapi.json")).json()["paths"]["/things"]["post"]
        assert "202" in doc["responses"]


async def test_a_route_with_parameters_is_still_validated_by_fastapi() -> None:
    async with _client() as c:
        assert (await c.get("/things", params={"limit": 7})).json() == {"limit": 7}
        r = await c.get("/things", params={"limit": 99})
        assert r.status_code == 422
        assert r.json()["detail"][0]["loc"] == ["query", "limit"]


async def test_dependencies_of_the_router_and_of_an_include_run() -> None:
    for prefix in ("/guarded", "/included"):
        seen.clear()
        async with _client() as c:
            assert (await c.post(prefix, json={"n": 1})).status_code == 403
            r = await c.post(prefix, json={"n": 2}, headers={"x-allowed": "yes"})
            assert (r.status_code, r.json()) == (202, {"n": 2})
        assert seen == ["dependency", "dependency"], prefix
