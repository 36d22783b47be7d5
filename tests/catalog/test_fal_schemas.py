"""Every catalogue entry held against a stored copy of fal's schema for its endpoint
(tests/catalog/fal_schemas/<endpoint with / as __>.json: fal's input and output schemas and
price). When fal's schema changes, the copy is replaced and these tests say what drifted: a
field the catalogue sends that fal no longer has, a bound wider than fal's, a default that moved,
a required field the gateway does not send, an output where fal no longer puts it, a price."""

from __future__ import annotations

import json
import uuid
from decimal import Decimal
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from app.catalog.registry import CATALOG, ModelSpec

SCHEMAS = Path(__file__).parent / "fal_schemas"
SPECS = list(CATALOG)
# fal's unit names (its pricing API) → the catalogue's
FAL_UNITS = {"video": "video", "compute_seconds": "compute_second", "seconds": "output_second"}
# A normalized type → the fal types it may be sent as.
COMPATIBLE = {
    "string": {"string"},
    "integer": {"integer", "number"},
    "number": {"number"},
    "boolean": {"boolean"},
}


def stored(endpoint: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((SCHEMAS / f"{endpoint.replace('/', '__')}.json").read_text())
    return data


def _plain(prop: dict[str, Any]) -> dict[str, Any]:
    """A normalized field's schema without its null branch."""
    for branch in prop.get("anyOf", []):
        if branch.get("type") != "null":
            return {**prop, **branch}
    return prop


def _normalized(spec: ModelSpec) -> dict[str, dict[str, Any]]:
    return {
        name: _plain(prop)
        for name, prop in spec.input_model.model_json_schema()["properties"].items()
    }


def _sent_fields(spec: ModelSpec) -> set[str]:
    fields = set(spec.upstream_fields.values())
    if spec.probed_duration is not None:
        fields.add(spec.probed_duration.field)
        if spec.probed_duration.offset_field:
            fields.add(spec.probed_duration.offset_field)
    fields |= {audio.upstream_field for audio in spec.audio_inputs}
    if spec.samples_field:
        fields.add(spec.samples_field)
    return fields


def _minimal_input(spec: ModelSpec) -> dict[str, Any]:
    schema = spec.input_model.model_json_schema()
    out: dict[str, Any] = {"video_url": "https://example.com/clip.mp4"}
    for name in schema.get("required", []):
        out[name] = "footsteps" if _plain(schema["properties"][name])["type"] == "string" else 1
    return out


def _bounded_input(spec: ModelSpec, bound: str) -> dict[str, Any]:
    """Every field of the normalized input set, numbers at their ``minimum`` or ``maximum``."""
    out = _minimal_input(spec)
    offsets = (
        {spec.normalized_name(spec.probed_duration.offset_field)}
        if (spec.probed_duration and spec.probed_duration.offset_field)
        else set()
    )
    for name, prop in _normalized(spec).items():
        if name in ("video_url", "video_file_id") or prop.get("format") == "uuid":
            continue
        kind = prop["type"]
        if name in offsets:
            out[name] = 0
        elif kind in ("integer", "number"):
            out[name] = prop[bound]
        elif kind == "boolean":
            out[name] = bound == "maximum"
        elif name.endswith("_url"):
            out[name] = "https://example.com/reference.wav"
        else:
            out[name] = "x" * (prop.get("maxLength", 10) if bound == "maximum" else 1)
    return out


@pytest.mark.parametrize("spec", SPECS, ids=[s.id for s in SPECS])
def test_every_field_the_gateway_sends_is_one_of_fals(spec: ModelSpec) -> None:
    fal = stored(spec.endpoint)["input"]["properties"]
    assert _sent_fields(spec) <= set(fal), _sent_fields(spec) - set(fal)


@pytest.mark.parametrize("spec", SPECS, ids=[s.id for s in SPECS])
def test_every_field_fal_requires_is_always_sent(spec: ModelSpec) -> None:
    required_normalized = set(spec.input_model.model_json_schema().get("required", []))
    always = {"video_url"} | {spec.upstream_fields[n] for n in required_normalized}
    if spec.probed_duration is not None:
        always.add(spec.probed_duration.field)
    payload = spec.upstream_payload(spec.validate_input(_minimal_input(spec)))
    always |= set(payload)
    assert set(stored(spec.endpoint)["input"]["required"]) <= always


@pytest.mark.parametrize("spec", SPECS, ids=[s.id for s in SPECS])
def test_normalized_fields_lie_within_fals_types_bounds_and_enums(spec: ModelSpec) -> None:
    fal = stored(spec.endpoint)["input"]["properties"]
    for name, prop in _normalized(spec).items():
        target = spec.upstream_fields.get(name)
        if target is None:  # never sent as such (an upload's id)
            continue
        theirs = fal[target]
        assert theirs["type"] in COMPATIBLE[prop["type"]], (name, prop["type"], theirs["type"])
        if "minimum" in theirs:
            assert prop.get("minimum", float("-inf")) >= theirs["minimum"], name
        if "maximum" in theirs:
            assert prop.get("maximum", float("inf")) <= theirs["maximum"], name
        if "maxLength" in theirs:
            assert prop.get("maxLength", float("inf")) <= theirs["maxLength"], name
        if "enum" in theirs:
            assert set(prop.get("enum", [])) <= set(theirs["enum"]), name


@pytest.mark.parametrize("spec", SPECS, ids=[s.id for s in SPECS])
def test_defaults_agree_with_fals_or_are_named_where_fals_apply(spec: ModelSpec) -> None:
    """A field the gateway leaves out gets fal's default: its description names it, so the
    client reading /v1/models knows it. A default of the gateway's own must be fal's."""
    fal = stored(spec.endpoint)["input"]["properties"]
    payload = spec.upstream_payload(spec.validate_input(_minimal_input(spec)))
    for name, prop in _normalized(spec).items():
        target = spec.upstream_fields.get(name)
        if target is None or "default" not in fal[target]:
            continue
        theirs = fal[target]["default"]
        if target in payload:
            if prop.get("default") is not None:
                assert prop["default"] == theirs, (name, prop["default"], theirs)
            continue
        shown = json.dumps(theirs) if isinstance(theirs, str) else f"{theirs:g}"
        assert f"({shown})" in prop["description"], (name, prop["description"], theirs)


@pytest.mark.parametrize("spec", SPECS, ids=[s.id for s in SPECS])
@pytest.mark.parametrize("bound", ["minimum", "maximum"])
def test_payloads_validate_against_fals_input_schema(spec: ModelSpec, bound: str) -> None:
    document = stored(spec.endpoint)
    schema = {**document["input"], "$defs": document["$defs"]}
    longest = spec.limits.max_duration_s or 10.0
    for raw in (_minimal_input(spec), _bounded_input(spec, bound)):
        payload = spec.upstream_payload(spec.validate_input(raw))
        for length in {spec.limits.min_duration_s or 1.0, longest}:
            filled = spec.payload_for_probe(payload, length)
            jsonschema.validate(filled, schema)


@pytest.mark.parametrize("spec", SPECS, ids=[s.id for s in SPECS])
def test_outputs_are_where_fal_puts_them(spec: ModelSpec) -> None:
    fal = stored(spec.endpoint)["output"]
    props = fal["properties"]

    def is_file(prop: dict[str, Any]) -> bool:
        return prop.get("$ref") == "#/$defs/File"

    outputs = spec.outputs
    for name in (outputs.video_field, outputs.audio_field):
        if name is not None:
            assert is_file(props[name]) and name in fal["required"], name
    if outputs.audio_samples_field is not None:
        listed = props[outputs.audio_samples_field]
        assert listed["type"] == "array" and is_file(listed["items"])
    if outputs.prompt_field is not None:
        assert props[outputs.prompt_field]["type"] == "string"


@pytest.mark.parametrize("spec", SPECS, ids=[s.id for s in SPECS])
def test_prices_are_fals_published_ones(spec: ModelSpec) -> None:
    pricing = stored(spec.endpoint)["pricing"]
    if pricing is None:  # fal publishes none: the prices table alone prices it
        assert spec.pricing.price_usd is None
        return
    assert FAL_UNITS[pricing["unit"]] == spec.pricing.unit
    assert spec.pricing.price_usd == Decimal(str(pricing["unit_price"]))


def test_every_entry_has_its_stored_schema_and_every_schema_an_entry() -> None:
    endpoints = {spec.endpoint for spec in SPECS}
    files = {path.stem.replace("__", "/") for path in SCHEMAS.glob("*.json")}
    assert files == endpoints


def test_a_drifted_schema_is_caught() -> None:
    """The checks above fail on drift: here on a copy where fal narrowed a bound and renamed
    a field."""
    spec = CATALOG.require("fal-ai/mmaudio-v2")
    document = stored(spec.endpoint)
    document["input"]["properties"]["num_steps"]["maximum"] = 40
    props = document["input"]["properties"]
    props["guidance"] = props.pop("cfg_strength")
    schema = {**document["input"], "$defs": document["$defs"]}
    payload = spec.upstream_payload(
        spec.validate_input({**_minimal_input(spec), "steps": 50, "guidance": 3})
    )
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(spec.payload_for_probe(payload, 4.0), schema)
    assert not _sent_fields(spec) <= set(props)


def test_an_upload_id_never_reaches_fal() -> None:
    spec = CATALOG.require("controlfoley")
    file_id = uuid.uuid4()
    payload = spec.upstream_payload(
        spec.validate_input(
            {"video_file_id": str(uuid.uuid4()), "reference_audio_file_id": str(file_id)}
        )
    )
    assert str(file_id) not in json.dumps(payload)
