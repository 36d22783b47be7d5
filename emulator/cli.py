"""`python -m emulator` and `run_emulator()` (for the `foley emulator` command).

Every option also reads `FOLEY_EMULATOR_<NAME>` from the environment; a flag given on the
command line wins.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
import uvicorn

from emulator.app import create_app
from emulator.config import EmulatorSettings


def run(settings: EmulatorSettings) -> None:
    """Serve the emulator until interrupted (uvloop + httptools, no access log)."""
    app = create_app(settings, announce=True)
    uvicorn.run(
        app,
        host=settings.host,
        port=settings.port,
        loop="uvloop",
        http="httptools",
        access_log=False,
        log_level=settings.log_level,
        server_header=False,
        proxy_headers=False,
        timeout_graceful_shutdown=2,
    )


def run_emulator(host: str | None = None, port: int | None = None, **options: Any) -> None:
    """Start the emulator in the foreground. `options` are `EmulatorSettings` fields
    (`data_dir`, `fast`, `concurrency`, `seed`, `admin_key`, `keys`, any knob); `None` values
    are left to the environment / defaults."""
    overrides = {"host": host, "port": port, **options}
    run(EmulatorSettings(**{k: v for k, v in overrides.items() if v is not None}))


def _pairs(values: list[str] | None) -> dict[str, str] | None:
    if not values:
        return None
    pairs = {}
    for value in values:
        key, sep, val = value.partition("=")
        if not sep:
            raise typer.BadParameter(f"expected KEY=VALUE, got {value!r}")
        pairs[key.strip()] = val.strip()
    return pairs


Opt = typer.Option

app = typer.Typer(add_completion=False, help="A local stand-in for fal's queue API.")


@app.command()
def main(
    host: Annotated[str | None, Opt(help="bind address [127.0.0.1]")] = None,
    port: Annotated[int | None, Opt(help="port [8765]")] = None,
    data_dir: Annotated[Path | None, Opt(help="files, keys [.foley/emulator]")] = None,
    public_url: Annotated[str | None, Opt(help="base URL advertised in answers")] = None,
    fast: Annotated[bool | None, Opt("--fast/--no-fast", help="no media work")] = None,
    concurrency: Annotated[int | None, Opt(help="account concurrency [4]")] = None,
    seed: Annotated[int | None, Opt(help="fault RNG seed [random]")] = None,
    admin_key: Annotated[str | None, Opt(help="admin key [generated, kept]")] = None,
    keys: Annotated[str | None, Opt(help="accepted FAL keys k1,k2 [any]")] = None,
    queue_wait: Annotated[str | None, Opt(help="seconds in queue: 2 or 0.5..3")] = None,
    run_time: Annotated[str | None, Opt(help="simulated compute seconds: 2 or 1..4")] = None,
    run_time_model: Annotated[
        list[str] | None, Opt(help="MODEL=SPEC per-endpoint run time (repeat)")
    ] = None,
    failure_rate: Annotated[
        list[str] | None, Opt(help="ERROR_TYPE=P, e.g. runner_disconnected=0.1 (repeat)")
    ] = None,
    ingress_error: Annotated[
        list[str] | None, Opt(help="CODE=P nginx error on submit, e.g. 503=0.2 (repeat)")
    ] = None,
    ambiguous_submit_rate: Annotated[float | None, Opt(help="P: drop submit answers")] = None,
    ambiguous_submit_hold_s: Annotated[float | None, Opt(help="hold before the drop")] = None,
    result_ttl_s: Annotated[float | None, Opt(help="results forgotten after N s")] = None,
    validate_at_submit: Annotated[
        bool | None, Opt("--validate-at-submit/--validate-in-runner")
    ] = None,
    tag_reporting: Annotated[
        bool | None, Opt("--tag-reporting/--no-tag-reporting", help="tags in billing events")
    ] = None,
    webhook_retry_schedule: Annotated[str | None, Opt(help="e.g. 0.5,1,2,4")] = None,
    webhook_timeout_s: Annotated[float | None, Opt()] = None,
    webhook_delay: Annotated[str | None, Opt(help="seconds: 1 or 0..3")] = None,
    webhook_drop_rate: Annotated[float | None, Opt()] = None,
    webhook_duplicate_rate: Annotated[float | None, Opt()] = None,
    webhook_reorder_rate: Annotated[float | None, Opt()] = None,
    webhook_bad_signature_rate: Annotated[float | None, Opt()] = None,
    webhook_payload_error_rate: Annotated[float | None, Opt()] = None,
    sse_keepalive_s: Annotated[float | None, Opt(help="SSE keep-alive interval [15]")] = None,
    thinksound_shortfall_s: Annotated[float | None, Opt(help="cut ThinkSound audio [0]")] = None,
    media_workers: Annotated[int | None, Opt(help="media threads [2]")] = None,
    log_level: Annotated[str | None, Opt(help="uvicorn log level [warning]")] = None,
) -> None:
    """Run the fal emulator."""
    options = dict(locals())
    options["run_time_by_model"] = _pairs(options.pop("run_time_model"))
    options["failure_rates"] = _pairs(options.pop("failure_rate"))
    options["ingress_error_rates"] = _pairs(options.pop("ingress_error"))
    run_emulator(**options)


def entrypoint() -> None:
    app()
