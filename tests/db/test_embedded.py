"""The zero-configuration database: two processes starting it at once share one server."""

from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path

SCRIPT = """
import sys
from pathlib import Path
from app.db.embedded import start_embedded_postgres
print(start_embedded_postgres(Path(sys.argv[1]), database="race"))
"""


def test_two_processes_starting_at_once_share_one_server() -> None:
    # A fresh directory outside pytest's private tmp (the server runs as another user as root).
    with tempfile.TemporaryDirectory(prefix="foley-embedded-") as tmp:
        Path(tmp).chmod(0o755)
        procs = [
            subprocess.Popen(  # noqa: S603
                [sys.executable, "-c", SCRIPT, tmp],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            for _ in range(2)
        ]
        outs = [p.communicate(timeout=120) for p in procs]
        for p, (_, err) in zip(procs, outs, strict=True):
            assert p.returncode == 0, err
        urls = {out.strip().splitlines()[-1] for out, _ in outs}
        assert len(urls) == 1 and urls.pop().startswith("postgresql+asyncpg://")
        # Both exited: the last one out stopped the server.
        assert not (Path(tmp) / "postgres" / "postmaster.pid").exists()
