"""py-spy of a process while something runs, and a summary of its samples: by layer (the
innermost frame of a known package), by activity (a frame of the stack says so), top functions.

py-spy runs isolated through `uv tool run py-spy` (never installed in the project's venv)."""

from __future__ import annotations

import contextlib
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

LAYERS = (  # (layer, start of a frame's file as py-spy shows it); the first match wins
    ("asyncpg (driver: protocol, socket writes)", "asyncpg/"),
    ("sqlalchemy (ORM, Core, pool, greenlets)", "sqlalchemy/"),
    ("pydantic", "pydantic"),
    ("structlog / logging", "structlog/"),
    ("structlog / logging", "logging/"),
    ("httpx / httpcore (upstream client)", "httpx/"),
    ("httpx / httpcore (upstream client)", "httpcore/"),
    ("fastapi / starlette", "fastapi/"),
    ("fastapi / starlette", "starlette/"),
    ("uvicorn / httptools", "uvicorn/"),
    ("app/ (gateway code)", "app/"),
    ("asyncio", "asyncio/"),
)
MARKERS = (  # what a sample was doing, when a frame of its stack says so (shares overlap)
    ("SQLAlchemy pool pre-ping (BEGIN; ';'; ROLLBACK)", ("_async_ping",)),
    ("transaction BEGIN", ("_start_transaction",)),
    ("COMMIT", ("Transaction.__commit",)),
    ("ROLLBACK", ("Transaction.__rollback",)),
    ("ORM flush (the INSERT / UPDATEs)", ("Session._flush",)),
    ("Session.execute (SELECTs, pg_notify, claims)", ("Session._execute_internal",)),
    ("FastAPI solve_dependencies (auth, session)", ("solve_dependencies",)),
    ("auth: current_principal", ("current_principal",)),
    ("accept_job", ("accept_job",)),
    ("worker: claims", ("claim_dispatches", "claim_follow_ups")),
    ("worker: _dispatch (submit step)", ("_dispatch",)),
    ("worker: _follow_up (poll / webhook / finalize)", ("_follow_up",)),
    ("worker: finalize (fetch, probe, extract, store)", ("_finalize_success",)),
    ("structlog", ("BoundLoggerFilteringAtInfo", "ConsoleRenderer")),
)


def _py_spy() -> list[str] | None:
    if shutil.which("py-spy"):
        return ["py-spy"]
    if shutil.which("uv"):
        return ["uv", "tool", "run", "py-spy"]
    return None


@contextlib.contextmanager
def profiling(
    enabled: bool, out_dir: Path, pid: int, label: str, seconds: float, top: int = 25
) -> Iterator[None]:
    """py-spy samples `pid` for `seconds` at 250 Hz meanwhile (when `enabled`); the summary is
    printed after, the raw stacks stay in `out_dir/profile-<label>.txt`."""
    tool = _py_spy() if enabled else None
    if tool is None:
        if enabled:
            print("(profile: neither py-spy nor uv found; skipped)")
        yield
        return
    out = out_dir / f"profile-{label}.txt"
    cmd = [
        *tool, "record", "--pid", str(pid), "--duration", str(int(seconds)), "--rate", "250",
        "--format", "raw", "--nonblocking", "--output", str(out),
    ]  # fmt: skip
    with (out_dir / f"profile-{label}.log").open("wb") as log:
        prof = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            yield
        finally:
            try:
                prof.wait(seconds + 60)
            except subprocess.TimeoutExpired:
                prof.kill()
                prof.wait(5)
    if not out.exists():
        print(f"(profile {label}: py-spy wrote nothing; see {log.name})")
        return
    summarize(out, label, top)


def summarize(path: Path, label: str, top: int) -> None:
    """py-spy's raw format: one collapsed stack per line, `frame;frame;... count` (root first).

    SQLAlchemy's async layer runs ORM code in greenlets, so many samples are rooted at a greenlet
    (Session.flush, ...) instead of the request's coroutine: shares are of all samples."""
    self_t: dict[str, int] = {}
    incl: dict[str, int] = {}
    layers: dict[str, int] = {}
    markers: dict[str, int] = {}
    app_names: set[str] = set()
    total = idle = 0
    for line in path.read_text(errors="replace").splitlines():
        stack, _, count = line.rpartition(" ")
        if not count.isdigit():
            continue
        n = int(count)
        total += n
        frames = [f.strip() for f in stack.split(";") if f.strip()]
        if not frames:
            idle += n
            continue
        parsed = []
        for f in frames:
            func, _, where = f.partition(" (")
            file = where.rsplit(":", 1)[0].rstrip(")")
            parsed.append((func, file, f"{func} ({'/'.join(Path(file).parts[-2:])})"))
        self_t[parsed[-1][2]] = self_t.get(parsed[-1][2], 0) + n
        app_names.update(p[2] for p in parsed if p[1].startswith("app/"))
        for name in {p[2] for p in parsed}:
            incl[name] = incl.get(name, 0) + n
        layer = next(
            (
                lay
                for _func, file, _name in reversed(parsed)
                for lay, key in LAYERS
                if file.startswith(key) or f"/{key}" in file
            ),
            "other",
        )
        layers[layer] = layers.get(layer, 0) + n
        funcs = {p[0] for p in parsed}
        for marker, keys in MARKERS:
            if any(k in fn for k in keys for fn in funcs):
                markers[marker] = markers.get(marker, 0) + n
    if not total:
        print(f"(profile {label}: no samples)")
        return
    print(
        f"\n-- profile of {label}: {total} samples at 250 Hz ({idle} with no Python stack); "
        f"raw stacks: {path}"
    )
    app_frames = {k: v for k, v in incl.items() if k in app_names}
    for title, shares, limit in (
        ("by layer (the innermost frame of a known package)", layers, None),
        ("by activity (a frame of the stack says so; overlapping)", markers, None),
        ("self time, top functions", self_t, top),
        ("inclusive, app/ functions", app_frames, top),
    ):
        print(f"   {title}:")
        for name, n in sorted(shares.items(), key=lambda kv: -kv[1])[:limit]:
            print(f"   {n / total * 100:5.1f}%  {name}")
