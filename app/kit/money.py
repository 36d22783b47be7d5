"""Money: integer micro-dollars inside, decimal strings in USD at the API ("0.035000"), never
binary floats anywhere in between."""

from __future__ import annotations

from decimal import ROUND_HALF_UP, Decimal, InvalidOperation

MICROS_PER_USD = 1_000_000
_SIX_PLACES = Decimal("0.000001")


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


def micros_to_usd(micros: int | None) -> str | None:
    if micros is None:
        return None
    return str((Decimal(micros) / MICROS_PER_USD).quantize(_SIX_PLACES))


def cost_micros(units: Decimal, unit_price_micros: int) -> int:
    """units × price, rounded half-up to a whole micro-dollar (fractional compute seconds)."""
    return int((units * unit_price_micros).quantize(Decimal(1), rounding=ROUND_HALF_UP))
