"""A route whose endpoint reads the request itself, served without FastAPI's request handler.

FastAPI's handler resolves declared parameters and dependencies, validates and serializes the
return value, and opens the contexts its dependencies may need, on every request. An endpoint
that takes only the ``Request`` and returns a ``Response`` needs none of that: this route calls
it directly. It is documented like any other (``response_model``, ``responses``,
``openapi_extra``), and its exceptions reach the same handlers: Starlette's wrapper around the
route, not FastAPI's handler, is what hands them over. On the busiest endpoint, creating a job,
FastAPI's handler was about a twentieth of the request's CPU (bench/README.md).

Every other route of a router built with this class is served as FastAPI serves it, and so is
a route served through ``include_router`` (an include may add dependencies of its own): the
direct call is the route as declared, spliced into the app's routes (app.main does so).
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable
from typing import Any

from fastapi.routing import APIRoute
from starlette.requests import Request
from starlette.responses import Response


class RequestRoute(APIRoute):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        # APIRoute builds the declared route's handler in __init__; an include builds another
        # later, for the route with whatever dependencies the include adds.
        self._declaring = True
        super().__init__(*args, **kwargs)
        self._declaring = False

    def get_route_handler(self) -> Callable[[Request], Awaitable[Response]]:
        if not (self._declaring and _takes_only_the_request(self)):
            return super().get_route_handler()
        endpoint: Callable[..., Awaitable[Response]] = self.endpoint
        name = self.dependant.request_param_name
        assert name is not None

        async def handler(request: Request) -> Response:
            return await endpoint(**{name: request})

        return handler


def _takes_only_the_request(route: APIRoute) -> bool:
    d = route.dependant
    declared: list[Any] = [
        *d.path_params,
        *d.query_params,
        *d.header_params,
        *d.cookie_params,
        *d.body_params,
        *d.dependencies,
    ]
    others = (
        d.websocket_param_name,
        d.http_connection_param_name,
        d.response_param_name,
        d.background_tasks_param_name,
        d.security_scopes_param_name,
    )
    return (
        d.request_param_name is not None
        and not declared
        and all(name is None for name in others)
        and inspect.iscoroutinefunction(route.endpoint)
    )
