"""Money: integer micro-dollars inside, decimal strings in USD at the API ("0.035000"), never
binary floats anywhere in between.

What a request costs is kept in nano-dollars, the precision fal bills with (its billing events
carry ``cost_estimate_nano_usd``, an integer per request); a sum of requests is rounded to the
micro-dollar once, from the sum of their nano-dollars (docs/money.md)."""

from __future__ import annotations

import re
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from typing import Annotated

from pydantic import AfterValidator, Field
from pydantic_core import PydanticCustomError

MICROS_PER_USD = 1_000_000
NANOS_PER_MICRO = 1_000
NANOS_PER_USD = 1_000_000_000
_SIX_PLACES = Decimal("0.000001")
_NINE_PLACES = Decimal("0.000000001")


def usd_to_micros(value: str | Decimal | int) -> int:
    """ "25.00" → 25_000_000. Refuses floats (they cannot carry cents exactly) and sub-micro
    precision."""
    if isinstance(value, float):
        raise TypeError("money is never a float: pass a decimal string")
    try:
        amount = Decimal(value)
    except InvalidOperation as exc:
        raise ValueError(f"not an amount of money: {value!r}") from exc
    if not amount.is_finite():
        raise ValueError(f"not an amount of money: {value!r}")
    micros = amount * MICROS_PER_USD
    if micros != micros.to_integral_value():
        raise ValueError("amounts are precise to 0.000001 USD")
    return int(micros)


# The largest amount the API takes (a budget, a unit price): a billion dollars. Far below what the
# int8 micro-dollar columns hold (9.2e12 USD), so that a price times a job's units (an hour of
# compute seconds) still fits the ledger's int8.
MAX_USD = Decimal(1_000_000_000)


# Plain decimal notation only (no exponent, sign or spaces, which Decimal would take): the API
# takes exactly what its schema (below) describes.
_PLAIN = re.compile(r"-?[0-9]+(?:\.([0-9]+))?")
_SCHEMA_PATTERN = r"^0*(\d{1,9}(\.\d{1,6})?|1000000000(\.0{1,6})?)$"


def _amount(value: str) -> str:
    plain = _PLAIN.fullmatch(value)
    if plain is None:
        raise PydanticCustomError("invalid_amount", "not a decimal amount of USD, e.g. 25.00", {})
    if value.startswith("-"):
        raise PydanticCustomError("negative_amount", "an amount cannot be negative", {})
    if len(plain.group(1) or "") > 6:
        raise PydanticCustomError("amount_too_precise", "amounts are precise to 0.000001 USD", {})
    if Decimal(value) > MAX_USD:
        raise PydanticCustomError("amount_too_large", "at most 1000000000 USD", {})
    return value


UsdAmount = Annotated[
    str,
    Field(
        min_length=1,
        max_length=32,
        description="USD as a decimal string (0 ≤ amount ≤ 1000000000, at most 6 decimals).",
        examples=["25.00"],
        json_schema_extra={"pattern": _SCHEMA_PATTERN},
    ),
    AfterValidator(_amount),
]


def micros_to_usd(micros: int | None) -> str | None:
    if micros is None:
        return None
    return str((Decimal(micros) / MICROS_PER_USD).quantize(_SIX_PLACES))


def cost_micros(units: Decimal, unit_price_micros: int) -> int:
    """units × price, rounded half-up to a whole micro-dollar (fractional compute seconds)."""
    return int((units * unit_price_micros).quantize(Decimal(1), rounding=ROUND_HALF_UP))


def cost_nanos(units: Decimal, unit_price_micros: int) -> int:
    """units × price in nano-dollars, rounded half-up to a whole nano-dollar: one request's
    cost as fal bills it (a price in micro-dollars times units of up to six decimals is exact
    at 10⁻¹² USD; fal's quantities, four decimals of seconds, make it exact in nano-dollars)."""
    exact = units * unit_price_micros * NANOS_PER_MICRO
    return int(exact.quantize(Decimal(1), rounding=ROUND_HALF_UP))


def nanos_to_micros(nanos: int) -> int:
    """A nano-dollar amount (one request's, or a sum's) rounded half-up to the micro-dollar."""
    return int((Decimal(nanos) / NANOS_PER_MICRO).quantize(Decimal(1), rounding=ROUND_HALF_UP))


def nanos_to_usd(nanos: int | None) -> str | None:
    """Nano-dollars as USD with nine decimals ("0.003034500"): an exact amount at the API."""
    if nanos is None:
        return None
    # Fixed-point always: str() of a zero with nine places is "0E-9".
    return f"{(Decimal(nanos) / NANOS_PER_USD).quantize(_NINE_PLACES):f}"
