"""The caller's own account: `GET /v1/me` (its tenant, limits, budget, and the key it used)."""
