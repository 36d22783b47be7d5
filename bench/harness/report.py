"""Percentiles and tables: how every benchmark prints its figures."""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from typing import Any


def pct(sorted_values: Sequence[float], p: float) -> float:
    """Nearest-rank percentile of an ascending list (nan for an empty one)."""
    if not sorted_values:
        return float("nan")
    k = max(0, min(len(sorted_values) - 1, math.ceil(p / 100 * len(sorted_values)) - 1))
    return sorted_values[k]


def ordinal(n: int) -> str:
    suffix = "th" if 10 <= n % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}"


class Table:
    """A table printed row by row as the figures come (a run can take minutes).

    Columns are `(title, spec)`; `spec` is a format spec whose alignment and width place the
    column (`"<24"`: left, 24 wide) and whose rest formats a number (`".1f"`, `".0%"`). A column
    is at least as wide as its title; a string value is printed as is, None as `-`."""

    def __init__(self, *columns: tuple[str, str], title: str = "", indent: str = "   ") -> None:
        self.indent = indent
        self.layout = []
        for name, spec in columns:
            align, width, rest = re.fullmatch(r"([<>^]?)(\d*)(.*)", spec).groups()  # type: ignore[union-attr]
            self.layout.append((align or ">", max(len(name), int(width or 0)), rest))
        if title:
            print(f"{indent}{title}")
        self._print([name for name, _ in columns])
        self._print(["-" * width for _, width, _ in self.layout])

    def row(self, *values: Any) -> None:
        cells = [
            "-" if v is None else v if isinstance(v, str) else format(v, rest)
            for v, (_, _, rest) in zip(values, self.layout, strict=True)
        ]
        self._print(cells)

    def note(self, text: str) -> None:
        """A line under the last row (an error, a detail)."""
        print(f"{self.indent}  {text}")

    def _print(self, cells: Sequence[str]) -> None:
        parts = [format(c, f"{a}{w}") for c, (a, w, _) in zip(cells, self.layout, strict=True)]
        print(self.indent + "  ".join(parts).rstrip())


def ms(seconds: float, *, censored_at: float | None = None) -> str:
    """Seconds as milliseconds; an infinite value (never happened) as `>{censored_at}s`."""
    if math.isfinite(seconds):
        return f"{seconds * 1000:.1f}"
    return f">{censored_at:g}s" if censored_at is not None else "inf"


def latency_row(values: Sequence[float], *, censored_at: float | None = None) -> list[str]:
    """p50, p90, p99, max (ms) and n of unsorted seconds, for a Table row."""
    v = sorted(values)
    if not v:
        return ["-", "-", "-", "-", "0"]
    return [
        *(ms(pct(v, p), censored_at=censored_at) for p in (50, 90, 99)),
        ms(v[-1], censored_at=censored_at),
        str(len(v)),
    ]


# The columns of `latency_row`.
LATENCY_COLUMNS = (("p50 ms", "7"), ("p90 ms", "7"), ("p99 ms", "7"), ("max ms", "7"), ("n", "5"))
