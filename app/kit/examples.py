"""Request and error models carry their examples in the schema (OpenAPI shows them, and
schemathesis starts from them)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import ConfigDict


def with_examples(
    *examples: dict[str, Any], extra: Literal["forbid", "allow"] = "forbid"
) -> ConfigDict:
    """A model's config: unknown fields refused (a typo never passes silently), and examples."""
    return ConfigDict(extra=extra, json_schema_extra={"examples": list(examples)})
