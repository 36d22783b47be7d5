"""Telling tenants: outbound webhooks (Standard Webhooks).

Events committed to ``job_events`` and ``budget_events`` reach the outbox (a trigger, in their
transaction); a worker's fan-out turns them into deliveries, one per receiver that wants them
(the tenant's endpoints, a job's own webhook); its sender attempts them, signed, with retries.

- ``endpoints``/``service``/``repository``/``schemas``: the API (endpoints, deliveries, secrets).
- ``events``: the event types, and a job's ``webhook_events_filter``.
- ``fanout``, ``payloads``: outbox → deliveries, and what they carry.
- ``queue``, ``sender``, ``transport``, ``signing``: claiming, attempting, signing, recording.
- ``tasks``: what a worker process runs.

Not to be confused with app.webhooks: fal's webhooks to the gateway.
"""
