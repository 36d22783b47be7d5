"""Seeded fault decisions.

Every submit gets a sequence number; all of its fault decisions (ingress error, ambiguous drop,
queue wait, run time, failure, webhook faults) come from a `random.Random` seeded with
`(seed, sequence number)`. So the n-th submit of a run meets the same faults whatever the
timing of other requests: a run is reproducible with the same `--seed` and the same order of
submits.
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from typing import TypeVar

K = TypeVar("K")

_NGINX_REASONS = {
    429: "Too Many Requests",
    500: "Internal Server Error",
    502: "Bad Gateway",
    503: "Service Temporarily Unavailable",
    504: "Gateway Time-out",
}


_STREAMS = {"": 0, "webhook": 1}


def rng_for(seed: int, seq: int, stream: str = "") -> random.Random:
    # An integer seed: cheaper than hashing a string, and still one stream per (seed, seq).
    return random.Random((seed << 48) ^ (seq << 4) ^ _STREAMS[stream])


def pick(rates: Mapping[K, float], rng: random.Random) -> K | None:
    """One draw over mutually exclusive outcomes with the given probabilities."""
    if not rates:
        return None
    draw = rng.random()
    total = 0.0
    for outcome, rate in rates.items():
        total += rate
        if draw < total:
            return outcome
    return None


def chance(rate: float, rng: random.Random) -> bool:
    return rate > 0 and rng.random() < rate


def nginx_body(code: int) -> bytes:
    """The HTML an nginx ingress answers with; fal_client detects ingress errors by 'nginx'."""
    title = f"{code} {_NGINX_REASONS.get(code, 'Error')}"
    return (
        f"<html>\r\n<head><title>{title}</title></head>\r\n<body>\r\n"
        f"<center><h1>{title}</h1></center>\r\n<hr><center>nginx</center>\r\n"
        "</body>\r\n</html>\r\n"
    ).encode()
