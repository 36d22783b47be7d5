"""Stripe-style list envelopes with keyset cursors (never OFFSET)."""

from __future__ import annotations

from typing import Generic, Literal, TypeVar

from pydantic import BaseModel, Field

T = TypeVar("T")


class ListPage(BaseModel, Generic[T]):
    object: Literal["list"] = "list"
    data: list[T]
    has_more: bool
    url: str | None = None


class PageParams(BaseModel):
    limit: int = Field(default=20, ge=1, le=100)
    starting_after: str | None = None
    ending_before: str | None = None
