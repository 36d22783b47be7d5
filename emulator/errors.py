"""fal-shaped error bodies.

Two families, as on fal: validation errors (`422 {"detail": [{"loc", "msg", "type", ...}]}`)
and infrastructure errors (`{"detail": str, "error_type": str}` + `X-Fal-Error-Type`).
"""

from __future__ import annotations

import json
from typing import Any

from fastapi.encoders import jsonable_encoder
from pydantic import ValidationError

from emulator.config import INFRA_ERRORS, MODEL_ERRORS


def dumps(data: Any) -> bytes:
    return json.dumps(data, separators=(",", ":")).encode()


def loads_or_text(body: bytes) -> Any:
    """A stored answer body as JSON, or as text when it is not JSON."""
    try:
        return json.loads(body)
    except ValueError:
        return body.decode(errors="replace")


class ModelError(Exception):
    """A model-side rejection of the input, answered as a 422 `detail` list."""

    def __init__(self, field: str, msg: str, error_type: str, value: Any = None) -> None:
        super().__init__(msg)
        self.field = field
        self.msg = msg
        self.error_type = error_type
        self.value = value

    def detail(self) -> list[dict[str, Any]]:
        item: dict[str, Any] = {
            "loc": ["body", self.field],
            "msg": self.msg,
            "type": self.error_type,
            "url": f"https://docs.fal.ai/errors#{self.error_type}",
        }
        if isinstance(self.value, str) and not self.value.startswith("data:"):
            item["input"] = self.value
        return [item]


def schema_error_detail(exc: ValidationError) -> list[dict[str, Any]]:
    """Pydantic errors in FastAPI's shape (type, loc, msg, input, ctx), located in the body."""
    detail = []
    for error in exc.errors(include_url=False):
        item: dict[str, Any] = {
            "type": error["type"],
            "loc": ["body", *error["loc"]],
            "msg": error["msg"],
        }
        if error["type"] != "missing":
            item["input"] = error.get("input")
        if "ctx" in error:
            item["ctx"] = error["ctx"]
        detail.append(item)
    return jsonable_encoder(detail)


def infra_error(error_type: str) -> tuple[int, bytes, dict[str, str], str]:
    """(status, body, headers, detail) of an injected infrastructure failure."""
    status, detail = INFRA_ERRORS[error_type]
    headers = {"X-Fal-Error-Type": error_type}
    if status in (502, 503):
        headers["X-Fal-Retryable"] = "true"
    return status, dumps({"detail": detail, "error_type": error_type}), headers, detail


def model_error(error_type: str) -> ModelError:
    return ModelError("video_url", MODEL_ERRORS[error_type], error_type)
