"""One rule for the text and numbers the API stores, derived from the columns that store them.

* No NUL (``\\u0000``) in any string: Postgres cannot store it in ``text`` or ``jsonb``, so it
  used to surface as a 500 from the driver. Every string field of a request model is one of the
  annotated types below (a job's input, metadata keys and values, names, query parameters).
* Lengths are read from the column (``String(200)`` → at most 200 characters), so the API and
  the schema cannot drift apart.
* Integers are bounded by their column (int4 / int8), ids and counts included.

Refusals are the usual 422 problem with ``errors[].code``: ``text_nul``, ``string_too_long``,
``less_than_equal`` …
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Annotated, Any

from pydantic import AfterValidator, BeforeValidator, Field
from pydantic_core import PydanticCustomError
from sqlalchemy import BigInteger, SmallInteger, String
from sqlalchemy import Integer as SqlInteger
from sqlalchemy.orm import InstrumentedAttribute

INT4_MAX = 2**31 - 1
INT8_MAX = 2**63 - 1


def refuse_nul(value: str) -> str:
    if "\x00" in value:
        raise PydanticCustomError("text_nul", "must not contain the NUL character (\\u0000)", {})
    return value


# The schema says what refuse_nul enforces, so a client (or a schema-driven fuzzer) reading it
# knows a NUL is refused. Only in the schema: the check itself stays refuse_nul, whose error code
# (text_nul) says why better than a pattern mismatch would.
NO_NUL_SCHEMA = Field(json_schema_extra={"pattern": "^[^\\u0000]*$"})

# Any text the API stores or queries with; bound its length where it has one (bounded_text).
Text = Annotated[str, NO_NUL_SCHEMA, AfterValidator(refuse_nul)]


def bounded_text(max_length: int, *, min_length: int = 0) -> Any:
    """NUL-free text of at most ``max_length`` characters. The bound sits on the string itself
    (errors say ``string_too_long``), also when the field is optional."""
    return Annotated[
        str,
        Field(min_length=min_length, max_length=max_length),
        NO_NUL_SCHEMA,
        AfterValidator(refuse_nul),
    ]


def column_length(column: InstrumentedAttribute[Any]) -> int:
    kind = column.property.columns[0].type
    if not isinstance(kind, String) or kind.length is None:
        raise TypeError(f"{column} is not a String(n) column")
    return kind.length


def column_text(column: InstrumentedAttribute[Any], *, min_length: int = 1) -> Any:
    """The type of a field stored in ``column``: NUL-free, at most the column's length. (Its
    description goes on the field, where OpenAPI shows it even when the field is optional.)"""
    return bounded_text(column_length(column), min_length=min_length)


def _refuse_bool(value: Any) -> Any:
    # pydantic takes true/false for 1/0; the schema says a number, so the API refuses them.
    if isinstance(value, bool):
        raise PydanticCustomError("bool_not_number", "a number is expected, not true/false", {})
    return value


def integer(*, ge: int | None = None, le: int | None = None) -> Any:
    """An integer of a request, within bounds; true and false are not numbers. (The bounds come
    before the check, so the schema shows them as minimum and maximum.)"""
    return Annotated[int, Field(ge=ge, le=le), BeforeValidator(_refuse_bool)]


def number(*, ge: float | None = None, le: float | None = None) -> Any:
    """A number of a request, within bounds; true and false are not numbers."""
    return Annotated[float, Field(ge=ge, le=le), BeforeValidator(_refuse_bool)]


def column_max(column: InstrumentedAttribute[Any]) -> int:
    kind = column.property.columns[0].type
    if isinstance(kind, SmallInteger):
        return 2**15 - 1
    if isinstance(kind, BigInteger):
        return INT8_MAX
    if isinstance(kind, SqlInteger):
        return INT4_MAX
    raise TypeError(f"{column} is not an integer column")


def column_int(column: InstrumentedAttribute[Any], *, ge: int = 0) -> Any:
    """The type of an integer stored in ``column``: within the column's range."""
    return integer(ge=ge, le=column_max(column))


_ISO_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")


def _iso_only(value: Any) -> Any:
    # pydantic also takes a number (or a numeric string) as Unix time; the API documents and
    # takes ISO 8601 only, so a stray number is refused rather than read as 1970.
    if isinstance(value, int | float) or (isinstance(value, str) and not _ISO_DATE.match(value)):
        raise PydanticCustomError("datetime_format", "an ISO 8601 date-time is expected", {})
    return value


def _as_utc(value: datetime) -> datetime:
    # A timestamp without an offset is taken as UTC, as everywhere in the API's answers; a naive
    # one compared with an aware one used to raise (a 500).
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value


UtcDatetime = Annotated[datetime, BeforeValidator(_iso_only), AfterValidator(_as_utc)]


# Job metadata, like Stripe's: a few short strings, returned as given.
METADATA_MAX_KEYS = 50
MetadataKey = bounded_text(40, min_length=1)
MetadataValue = bounded_text(500)
Metadata = Annotated[dict[MetadataKey, MetadataValue], Field(max_length=METADATA_MAX_KEYS)]
METADATA_DESCRIPTION = (
    "Your own key/value pairs, returned as given: at most 50 keys of at most 40 characters, "
    "string values of at most 500."
)
