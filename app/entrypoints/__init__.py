"""The `foley` command, assembled from its parts.

`foley up` is the whole product on one machine with no configuration (up.py); `api`, `worker`,
`migrate` are the production pieces, one image and one command each, and `emulator` runs the
fal stand-in on its own (processes.py); `tenants`, `keys`, `prices` and `usage` are the
operator's tools (admin.py).
"""

from __future__ import annotations

import typer

from app.entrypoints import admin, processes
from app.entrypoints.up import up

foley = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="Foley: a self-hosted gateway to fal.ai's video-to-audio models.",
)
foley.command()(processes.migrate)
foley.command()(processes.api)
foley.command()(processes.worker)
foley.command("emulator", help=processes.EMULATOR_HELP)(processes.emulator)
foley.command()(up)
foley.add_typer(admin.tenants_cli, name="tenants")
foley.add_typer(admin.keys_cli, name="keys")
foley.add_typer(admin.prices_cli, name="prices")
foley.add_typer(admin.usage_cli, name="usage")


def main() -> None:
    foley()
