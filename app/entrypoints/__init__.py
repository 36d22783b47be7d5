"""The `foley` command, assembled from its parts.

`foley up` is the whole product on one machine with no configuration (up.py); `api`, `worker`,
`migrate` are the production pieces, one image and one command each, and `emulator` runs the
fal stand-in on its own (processes.py); `tenants`, `keys`, `prices` and `usage` are the
operator's tools (admin.py). A failure is one line on stderr and exit status 1 (errors.py).
"""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from app.entrypoints import admin, processes
from app.entrypoints.errors import describe
from app.entrypoints.up import up
from app.entrypoints.webhooks import webhooks_cli

foley = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="Foley: a self-hosted gateway to fal.ai's video-to-audio models.",
    # A traceback with locals would print settings and secrets; it is shown only on --debug.
    pretty_exceptions_show_locals=False,
)
_debug = False


@foley.callback()
def _options(
    debug: Annotated[
        bool,
        typer.Option(
            "--debug", envvar="FOLEY_DEBUG", help="Show the traceback of an unexpected error."
        ),
    ] = False,
) -> None:
    global _debug
    _debug = debug


foley.command()(processes.migrate)
foley.command()(processes.api)
foley.command()(processes.worker)
foley.command("emulator", help=processes.EMULATOR_HELP)(processes.emulator)
foley.command()(up)
foley.add_typer(admin.tenants_cli, name="tenants")
foley.add_typer(admin.keys_cli, name="keys")
foley.add_typer(admin.prices_cli, name="prices")
foley.add_typer(admin.usage_cli, name="usage")
foley.add_typer(webhooks_cli, name="webhooks")


def main() -> None:
    try:
        foley()  # click's standalone mode: usage errors, --help and Exit are its own
    except Exception as exc:
        if _debug:
            raise
        typer.echo(f"foley: {describe(exc)}", err=True)
        sys.exit(1)
