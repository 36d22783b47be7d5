"""The emulator's models held against the same stored copies of fal's schemas as the catalogue
(tests/catalog/fal_schemas): its input fields, what it requires, defaults, bounds and prices are
fal's, so the gateway's tests against it mean something about fal."""

from __future__ import annotations

from typing import Any

import pytest

from emulator.catalog import MODELS, ModelSpec
from tests.catalog.test_fal_schemas import SCHEMAS, stored

SPECS = list(MODELS.values())


def _plain(prop: dict[str, Any]) -> dict[str, Any]:
    for branch in prop.get("anyOf", []):
        if branch.get("type") != "null":
            return {**prop, **branch}
    return prop


def test_the_emulator_serves_every_stored_endpoint() -> None:
    files = {path.stem.replace("__", "/") for path in SCHEMAS.glob("*.json")}
    assert files == set(MODELS)


@pytest.mark.parametrize("spec", SPECS, ids=[s.endpoint_id for s in SPECS])
def test_inputs_are_fals(spec: ModelSpec) -> None:
    fal = stored(spec.endpoint_id)["input"]
    ours = spec.input_schema.model_json_schema()
    assert set(ours["properties"]) == set(fal["properties"])
    assert set(ours.get("required", [])) == set(fal["required"])
    for name, theirs in fal["properties"].items():
        prop = _plain(ours["properties"][name])
        for key in ("minimum", "maximum", "maxLength", "enum"):
            assert prop.get(key) == theirs.get(key), (name, key)
        if "default" in theirs:
            assert prop.get("default") == theirs["default"], name


@pytest.mark.parametrize("spec", SPECS, ids=[s.endpoint_id for s in SPECS])
def test_prices_are_fals(spec: ModelSpec) -> None:
    pricing = stored(spec.endpoint_id)["pricing"]
    if pricing is None:  # billed, but fal does not publish it
        assert spec.price.published is False
        return
    assert (spec.price.unit, spec.price.unit_price) == (pricing["unit"], pricing["unit_price"])
