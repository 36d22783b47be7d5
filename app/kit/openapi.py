"""The OpenAPI document, generated from the routes and corrected where FastAPI's defaults would
describe another API than this one.

* Errors: FastAPI documents every 422 as its own ``HTTPValidationError``; this API answers every
  error as problem+json (app.kit.problems). Each operation gets the ``Problem`` schema on the
  statuses its shape implies (401 when it needs credentials, 403 for a tenant's mutation (a
  read-only key), 404 when it has path parameters, 400, 413 and 422 when it takes a body, 422
  when it takes parameters) beside those its route declares (402, 409, 429 …).
* Schemas a route declares by hand (``openapi_extra``) are added to the components.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

from app.kit.problems import Problem, problem_response_doc

REF_TEMPLATE = "#/components/schemas/{model}"
FASTAPI_VALIDATION_SCHEMAS = ("HTTPValidationError", "ValidationError")

# Extra components: name → a function returning (schema, its $defs), called once.
ComponentSource = Callable[[], tuple[dict[str, Any], dict[str, Any]]]


def install_openapi(app: FastAPI, *, components: dict[str, ComponentSource] | None = None) -> None:
    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            spec = get_openapi(
                title=app.title,
                version=app.version,
                summary=app.summary,
                description=app.description,
                routes=app.routes,
                webhooks=app.webhooks.routes,
                tags=app.openapi_tags,
                servers=app.servers,
            )
            app.openapi_schema = _correct(spec, components or {})
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


def _correct(spec: dict[str, Any], extra: dict[str, ComponentSource]) -> dict[str, Any]:
    schemas = spec.setdefault("components", {}).setdefault("schemas", {})
    problem = Problem.model_json_schema(ref_template=REF_TEMPLATE)
    schemas.update(problem.pop("$defs", {}))
    schemas["Problem"] = problem
    for name, source in extra.items():
        schema, defs = source()
        schemas.update(defs)
        schemas[name] = schema
    for path, operations in spec.get("paths", {}).items():
        for method, op in operations.items():
            _errors_of(path, method, op)
    for operations in spec.get("webhooks", {}).values():
        for op in operations.values():
            # Calls this API makes: what the receiver answers is not one of our errors (FastAPI
            # documents a 422 for any body); only the 2xx it must answer is described.
            responses = op.get("responses", {})
            op["responses"] = {s: r for s, r in responses.items() if s.startswith("2")}
    for name in FASTAPI_VALIDATION_SCHEMAS:
        schemas.pop(name, None)
    return spec


def _errors_of(path: str, method: str, op: dict[str, Any]) -> None:
    responses = op.setdefault("responses", {})
    implied: set[int] = set()
    security = {name for req in op.get("security", []) for name in req}
    if security:
        implied.add(401)
        if method != "get" and "HTTPBearer" in security:
            implied.add(403)  # a read-only key
    params = op.get("parameters", [])
    if any(p.get("in") == "path" for p in params):
        implied.add(404)
    if op.get("requestBody"):
        implied.update((400, 413, 422))  # 400: a body that is not even text (FastAPI's own)
    if params:
        implied.add(422)
    for status in sorted(implied):
        responses.setdefault(str(status), problem_response_doc(status))
    for status, response in responses.items():
        if not status.startswith(("4", "5")):
            continue
        content = response.get("content") or {}
        schema = (content.get("application/json") or {}).get("schema", {})
        if not content or schema.get("$ref", "").endswith(FASTAPI_VALIDATION_SCHEMAS):
            response["content"] = problem_response_doc(int(status))["content"]
