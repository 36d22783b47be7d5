"""Which models a job may run on: the one it names, several in order (it falls back from each to
the next: app.jobs.lifecycle.fallback), or ``auto``; each with the input validated for it and the
payload fal gets."""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError

from app.catalog.registry import CATALOG, ModelSpec
from app.jobs.schemas import JobCreate
from app.kit.problems import InputValidationError, validation_errors


def resolve_model(name: str) -> ModelSpec:
    return CATALOG.require(name)


# ``"model": "auto"``: every model of the catalog that makes a video with sound, in the
# catalog's order, that takes the job's input.
AUTO = "auto"


def named_models(model: str | list[str], prefer: list[str] | None = None) -> list[ModelSpec]:
    """The models a job names, in order: one, several (it falls back from each to the next),
    or ``auto`` (those it prefers first)."""
    if model == AUTO:
        auto = [spec for spec in CATALOG if spec.outputs.video_field is not None]
        first: list[ModelSpec] = []
        for i, name in enumerate(prefer or []):
            spec = CATALOG.require(name, param=f"prefer.{i}")
            if spec not in auto or spec in first:
                raise InputValidationError(
                    [
                        {
                            "param": f"prefer.{i}",
                            "code": "not_an_auto_model" if spec not in auto else "duplicate_model",
                            "message": f"{spec.id} is not a model auto tries (it makes no video)"
                            if spec not in auto
                            else f"{spec.id} is named twice",
                        }
                    ]
                )
            first.append(spec)
        return [*first, *(spec for spec in auto if spec not in first)]
    if isinstance(model, str):
        return [resolve_model(model)]
    specs: list[ModelSpec] = []
    for i, name in enumerate(model):
        spec = CATALOG.require(name, param=f"model.{i}")
        if spec in specs:
            raise InputValidationError(
                [
                    {
                        "param": f"model.{i}",
                        "code": "duplicate_model",
                        "message": f"{spec.id} is named twice",
                    }
                ]
            )
        specs.append(spec)
    return specs


def candidates(body: JobCreate) -> tuple[list[tuple[ModelSpec, Any]], list[dict[str, Any]]]:
    """Each model the job may run on with its validated input; the input must suit every model
    it names (``auto``: the models it suits, at least one)."""
    specs = named_models(body.model, body.prefer)
    suited: list[tuple[ModelSpec, Any]] = []
    for spec in specs:
        try:
            suited.append((spec, spec.validate_input(body.input)))
        except ValidationError as exc:
            if body.model == AUTO:
                continue
            errors = validation_errors(exc.errors(), prefix="input")
            if len(specs) > 1:
                for error in errors:
                    error["message"] = f"for {spec.id}: {error['message']}"
            raise InputValidationError(errors) from exc
    if not suited:
        raise InputValidationError(
            [
                {
                    "param": "input",
                    "code": "no_model_takes_input",
                    "message": "no model of the catalog takes this input; see GET /v1/models",
                }
            ]
        )
    named = [
        {"model": spec.id, "endpoint": spec.endpoint, "upstream_payload": spec.upstream_payload(n)}
        for spec, n in suited
    ]
    return suited, named
