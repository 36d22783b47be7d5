"""Stripe-style list envelopes with keyset cursors (never OFFSET)."""

from __future__ import annotations

from typing import Generic, Literal, TypeVar

from pydantic import BaseModel, Field

from app.kit.problems import BadRequest

T = TypeVar("T")


class ListPage(BaseModel, Generic[T]):
    object: Literal["list"] = Field(default="list", description="Always list.")
    data: list[T] = Field(description="The page's objects, in the list's order.")
    has_more: bool = Field(description="More objects follow: page on with starting_after.")
    url: str | None = Field(default=None, description="The list's path.")


class PageParams(BaseModel):
    limit: int = Field(default=20, ge=1, le=100)
    starting_after: str | None = None
    ending_before: str | None = None


class InvalidCursor(BadRequest):
    """A page's cursor names nothing the caller can see."""

    code = "invalid_cursor"
