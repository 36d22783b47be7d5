"""The OpenAPI document tells the truth (app.kit.openapi): problem+json on every error, typed
responses, per-model job input, an example for every JSON body, a description on every field."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from app.catalog.registry import CATALOG

PROBLEM_REF = "#/components/schemas/Problem"


@pytest.fixture
async def spec(api: httpx.AsyncClient) -> dict[str, Any]:
    r = await api.get("/openapi.json")
    assert r.status_code == 200
    return r.json()


def operations(spec: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    for path, item in spec["paths"].items():
        for method, op in item.items():
            yield f"{method.upper()} {path}", op


def schemas_in(node: Any, where: str) -> Iterator[tuple[str, dict[str, Any]]]:
    """Every schema object with properties, anywhere in the document."""
    if isinstance(node, dict):
        if isinstance(node.get("properties"), dict) and node.get("type", "object") == "object":
            yield where, node
        for key, value in node.items():
            yield from schemas_in(value, f"{where}/{key}")
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from schemas_in(value, f"{where}/{i}")


def resolve(spec: dict[str, Any], schema: dict[str, Any]) -> dict[str, Any]:
    if "anyOf" in schema:  # an optional body: the schema that is not null
        schema = next(s for s in schema["anyOf"] if s.get("type") != "null")
    while "$ref" in schema:
        schema = spec["components"]["schemas"][schema["$ref"].rsplit("/", 1)[-1]]
    return schema


def test_every_property_has_a_description(spec: dict[str, Any]) -> None:
    missing = [
        f"{where}.{name}"
        for where, schema in schemas_in(spec, "#")
        for name, prop in schema["properties"].items()
        if not prop.get("description")
    ]
    assert missing == []


def test_every_json_request_body_has_an_example(spec: dict[str, Any]) -> None:
    missing = []
    for name, op in operations(spec):
        for media, content in op.get("requestBody", {}).get("content", {}).items():
            if media != "application/json":
                continue  # binary uploads
            schema = resolve(spec, content.get("schema", {}))
            if not ({"example", "examples"} & (content.keys() | schema.keys())):
                missing.append(name)
    assert missing == []


def test_every_error_is_documented_as_a_problem(spec: dict[str, Any]) -> None:
    wrong = []
    for name, op in operations(spec):
        for status, response in op["responses"].items():
            if not status.startswith(("4", "5")) or name == "GET /readyz":
                continue  # readiness answers 503 with its report: a status, not an error
            content = response.get("content", {})
            schema = content.get("application/problem+json", {}).get("schema", {})
            if list(content) != ["application/problem+json"] or schema.get("$ref") != PROBLEM_REF:
                wrong.append(f"{name} {status}")
    assert wrong == []
    text = json.dumps(spec)
    assert "HTTPValidationError" not in text


@pytest.mark.parametrize(
    ("operation", "statuses"),
    [
        ("POST /v1/jobs", {"401", "402", "403", "409", "413", "422", "429", "503"}),
        ("GET /v1/jobs", {"400", "401", "422"}),
        ("GET /v1/jobs/{job_id}", {"401", "404"}),
        ("POST /v1/admin/prices", {"401", "409", "413", "422"}),
        ("GET /v1/admin/tenants", {"401"}),
        ("POST /v1/webhooks/fal", {"401", "413", "503"}),
    ],
)
def test_operations_document_the_errors_they_return(
    spec: dict[str, Any], operation: str, statuses: set[str]
) -> None:
    method, path = operation.split(" ")
    assert statuses <= set(spec["paths"][path][method.lower()]["responses"])


def test_constraints_are_json_schema(spec: dict[str, Any]) -> None:
    # pydantic writes bounds it cannot place as its own keys (ge, le …): no tool reads those
    def keys(node: Any) -> Iterator[str]:
        if isinstance(node, dict):
            for key, value in node.items():
                if key == "properties":  # its keys are field names
                    for prop in value.values():
                        yield from keys(prop)
                else:
                    yield key
                    yield from keys(value)
        elif isinstance(node, list):
            for value in node:
                yield from keys(value)

    assert {"ge", "le", "gt", "lt"} & set(keys(spec)) == set()


def test_schema_names_are_plain(spec: dict[str, Any]) -> None:
    assert [n for n in spec["components"]["schemas"] if "__" in n] == []


def test_typed_responses(spec: dict[str, Any]) -> None:
    def ok(path: str, method: str = "get") -> dict[str, Any]:
        responses = spec["paths"][path][method]["responses"]
        return responses.get("200") or responses["201"]

    for path, method, name in [
        ("/v1/usage", "get", "UsageSummary"),
        ("/v1/admin/usage", "get", "UsageSummary"),
        ("/v1/validate", "post", "ValidationOut"),
        ("/v1/jobs", "post", "EstimateOut"),
    ]:
        schema = ok(path, method)["content"]["application/json"]["schema"]
        assert schema == {"$ref": f"#/components/schemas/{name}"}


def test_a_jobs_input_is_described_per_model(spec: dict[str, Any]) -> None:
    body = spec["paths"]["/v1/jobs"]["post"]["requestBody"]["content"]["application/json"]
    one_model, several = resolve(spec, body["schema"])["anyOf"]
    # a job naming several models (or auto): the input every one of them takes
    several = resolve(spec, several)
    assert set(several["properties"]["model"]["anyOf"][0]) >= {"type", "items", "minItems"}
    assert several["properties"]["model"]["anyOf"][1] == {"const": "auto", "type": "string"}
    job = resolve(spec, one_model)
    assert job["discriminator"]["propertyName"] == "model"
    mapping = job["discriminator"]["mapping"]
    assert set(mapping) == set(CATALOG.names())
    assert len(job["oneOf"]) == len(mapping)  # one variant per name: one tag each
    for name, ref in mapping.items():
        model = CATALOG.require(name)
        variant = resolve(spec, {"$ref": ref})
        assert variant["properties"]["model"]["const"] == name
        inputs = resolve(spec, variant["properties"]["input"])
        assert set(inputs["properties"]) == set(model.input_model.model_fields)
    validate = spec["paths"]["/v1/validate"]["post"]["requestBody"]["content"]
    assert validate["application/json"]["schema"] == body["schema"]
