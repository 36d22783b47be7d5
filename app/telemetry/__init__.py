"""What the gateway tells its operators: the database's gauges for Prometheus
(``gauges.py``), the workers' own metrics endpoint (``exposition.py``), OpenTelemetry traces
(``tracing.py``) and the ``Server-Timing`` header (``server_timing.py``). The metrics counted
where things happen are declared in app.metrics; the JSON logs' context in app.logging."""
