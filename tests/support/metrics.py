"""The app's Prometheus metrics read as a scraper reads them: through ``GET /metrics``."""

from __future__ import annotations

import httpx
from prometheus_client.parser import text_string_to_metric_families


async def sample(client: httpx.AsyncClient, name: str, **labels: str) -> float:
    """The value of the sample ``name`` with exactly these labels (0 before its first count:
    a labelled series appears when it is first counted)."""
    response = await client.get("/metrics")
    assert response.status_code == 200, response.text
    for family in text_string_to_metric_families(response.text):
        for found in family.samples:
            if found.name == name and found.labels == labels:
                return float(found.value)
    return 0.0
