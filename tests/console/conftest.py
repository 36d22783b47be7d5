"""The browser test drives a real gateway (uvicorn, a worker, the fal emulator): the same
fixtures as the end-to-end tests."""

from tests.e2e.conftest import (  # noqa: F401
    clips,
    e2e_database_url,
    e2e_engine,
    emu,
    emulator_process,
    gateway,
)
