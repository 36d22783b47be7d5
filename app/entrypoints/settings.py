"""What every `foley` command reads first: the settings, with logging configured from them, and
the database they name (the embedded server's URL, started if need be)."""

from __future__ import annotations

from pathlib import Path

from app.config import Settings, get_settings
from app.entrypoints.errors import CliError
from app.logging import configure_logging


def load_settings() -> Settings:
    settings = get_settings()
    configure_logging(settings.log_level, settings.log_format)
    return settings


def database_url(settings: Settings) -> str:
    from app.db.engine import resolve_database_url

    return resolve_database_url(settings)


def existing_database_url(settings: Settings) -> str:
    """The database of an installation that exists: the operator's commands read and change
    one, they never start an empty one (run from the wrong directory, that would look like an
    installation without tenants)."""
    if settings.uses_embedded_db:
        data_dir = Path(settings.data_dir).resolve()
        if not (data_dir / "postgres" / "PG_VERSION").is_file():
            raise CliError(
                f"no Foley data found at {data_dir}; run `foley up` (or `foley migrate`) first, "
                "or set FOLEY_DATA_DIR / FOLEY_DATABASE_URL"
            )
    return database_url(settings)
