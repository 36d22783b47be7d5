"""What a process sends to Postgres, counted statement by statement.

``python bench/harness/statements.py worker`` runs ``foley worker`` (the code beside this
harness) with every statement its asyncpg connections send counted by its text — the session's
and the raw connections' alike, a transaction's ``BEGIN`` and ``COMMIT`` included — and the
counts written to ``$FOLEY_BENCH_STATEMENTS`` (JSON) every 0.2 s. ``counts`` reads them back;
the difference of two readings is what was sent in between. The counting costs a few µs per
statement: CPU figures of such a run are a little high.
"""

from __future__ import annotations

import json
import os
import re
import sys
import threading
import time
from collections import Counter
from pathlib import Path

ENV = "FOLEY_BENCH_STATEMENTS"


def counts(path: Path) -> Counter[str]:
    """The counts as last written (empty before the first write)."""
    try:
        return Counter(json.loads(path.read_text()))
    except (FileNotFoundError, json.JSONDecodeError):
        return Counter()


def _count_into(out: Path) -> None:
    import asyncpg.connection as connection

    seen: Counter[str] = Counter()
    lock = threading.Lock()

    def note(query: str) -> None:
        with lock:
            seen[re.sub(r"\s+", " ", query).strip()[:100]] += 1

    extended = connection.Connection._execute  # every statement with parameters, or rows back
    simple = connection.Connection.execute  # without arguments: the simple query protocol

    # asyncpg's own signatures, passed through as they are.
    async def _execute(self, query, *args, **kwargs):  # type: ignore[no-untyped-def]
        note(query)
        return await extended(self, query, *args, **kwargs)

    async def execute(self, query, *args, **kwargs):  # type: ignore[no-untyped-def]
        if not args:
            note(query)
        return await simple(self, query, *args, **kwargs)

    connection.Connection._execute = _execute  # type: ignore[method-assign]
    connection.Connection.execute = execute  # type: ignore[method-assign]

    def write() -> None:
        while True:
            with lock:
                text = json.dumps(dict(seen))
            partial = out.with_suffix(".part")
            partial.write_text(text)
            partial.replace(out)
            time.sleep(0.2)

    threading.Thread(target=write, daemon=True, name="statements").start()


if __name__ == "__main__":
    _count_into(Path(os.environ[ENV]))
    sys.path.append(str(Path(__file__).resolve().parents[2]))  # the repository, after PYTHONPATH
    from app.entrypoints import main

    sys.argv = ["foley", *sys.argv[1:]]
    main()
