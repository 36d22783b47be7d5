"""What every `foley` command reads first: the settings, with logging configured from them, and
the database they name (the embedded server's URL, started if need be)."""

from __future__ import annotations

from app.config import Settings, get_settings
from app.logging import configure_logging


def load_settings() -> Settings:
    settings = get_settings()
    configure_logging(settings.log_level, settings.log_format)
    return settings


def database_url(settings: Settings) -> str:
    from app.db.engine import resolve_database_url

    return resolve_database_url(settings)
