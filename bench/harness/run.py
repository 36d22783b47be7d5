"""The frame of every benchmark run: the common flags, the header (command, machine, versions,
the code measured, other busy processes), and the cleanup that always runs: every process
started stopped, every database made dropped, the temporary directory removed."""

from __future__ import annotations

import argparse
import contextlib
import importlib.metadata
import os
import platform
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

from harness.database import BENCH_PG_ROOT, Database, create_database, drop_database
from harness.procs import PY, REPO, BenchError, Procs


def parser(name: str, doc: str | None, *, profile: bool = False) -> argparse.ArgumentParser:
    """An ArgumentParser with the flags every benchmark has: `--out-dir`, `--no-pin`, and
    with `profile` `--profile` / `--profile-top`. The description is the docstring's first
    paragraph."""
    p = argparse.ArgumentParser(
        prog=f"bench/{name}.py", description=" ".join((doc or "").split("\n\n")[0].split())
    )
    g = p.add_argument_group("common")
    g.add_argument(
        "--out-dir",
        type=Path,
        default=REPO / "bench" / "out" / name,
        help=f"process logs, profiles, cached media [bench/out/{name}]",
    )
    g.add_argument("--no-pin", action="store_true", help="do not pin processes to cores")
    if profile:
        g.add_argument(
            "--profile",
            action="store_true",
            help="py-spy the processes measured (`uv tool run py-spy`, never in the venv)",
        )
        g.add_argument("--profile-top", type=int, default=25, help="functions listed [25]")
    return p


def add_load_flags(g: Any, *, warmup: float, duration: float, per: str) -> None:
    """The flags of a closed-loop load, run in rounds: `--warmup`, `--duration`,
    `--max-requests` (each per `per`, e.g. "round"), `--rounds`."""
    g.add_argument("--warmup", type=float, default=warmup, help=f"seconds per {per} [{warmup:g}]")
    g.add_argument(
        "--duration",
        type=float,
        default=duration,
        help=f"measured seconds per {per} [{duration:g}]",
    )
    g.add_argument("--max-requests", type=int, default=20_000, help=f"per {per} [20000]")
    g.add_argument("--rounds", type=int, default=2, help="rounds, in alternating order [2]")


def parse(p: argparse.ArgumentParser, argv: Sequence[str] | None) -> argparse.Namespace:
    """The flags, plus `server_core` / `client_core`: 0 and 1 when pinning (taskset, 2+ cores),
    else None."""
    args = p.parse_args(argv)
    pin = not args.no_pin and shutil.which("taskset") is not None and (os.cpu_count() or 1) >= 2
    args.server_core = 0 if pin else None
    args.client_core = 1 if pin else None
    return args


class Run:
    """`with Run("gateway_bench", args, versions=(...)) as run:` prints the header; inside,
    `run.procs` holds the children, `run.tmp` is a temporary directory, `run.database()` makes a
    database. Leaving stops and removes everything; a BenchError is printed, not raised, and
    `run.exit_code` is 1."""

    def __init__(
        self, name: str, args: argparse.Namespace, *, versions: Sequence[str] = ()
    ) -> None:
        self.name, self.args, self.versions = name, args, versions
        self.procs = Procs()
        self.databases: list[Database] = []
        self.exit_code = 0
        self.out_dir: Path = args.out_dir
        self.tmp = Path()

    def __enter__(self) -> Run:
        # SIGTERM too unwinds through __exit__, which stops every child
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
        self.started = time.perf_counter()
        print("command   cd " + shlex.quote(os.getcwd()) + " && " + shlex.join([PY, *sys.argv]))
        for note in (*machine_notes(self.versions), code_note()):
            print(note)
        busy = others_busy(self.name)
        if busy:
            print(f"!! other busy processes (figures will suffer): {busy}")
        self.out_dir.mkdir(parents=True, exist_ok=True)
        print(f"logs      {self.out_dir}")
        self.tmp = Path(tempfile.mkdtemp(prefix=f"foley-{self.name}-"))
        return self

    def database(self, prefix: str | None = None, pg_root: Path = BENCH_PG_ROOT) -> Database:
        """A fresh migrated database (see harness.database), dropped when the run ends."""
        db = create_database(prefix or f"foley_{self.name}", pg_root)
        self.databases.append(db)
        print(f"database  {db.shown()}")
        return db

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> bool:
        self.procs.stop_all()
        for db in self.databases:
            with contextlib.suppress(Exception):
                drop_database(db)
        shutil.rmtree(self.tmp, ignore_errors=True)
        load = os.getloadavg()
        print(
            f"\nwall time {time.perf_counter() - self.started:.0f} s; load average at the end: "
            f"{load[0]:.2f} {load[1]:.2f} {load[2]:.2f}"
        )
        if isinstance(exc, BenchError):
            print(f"\nERROR: {exc}", file=sys.stderr)
            self.exit_code = 1
            return True
        return False


def machine_notes(versions: Sequence[str] = ()) -> list[str]:
    model = ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    load = os.getloadavg()
    packages = ", ".join(f"{p} {importlib.metadata.version(p)}" for p in versions)
    return [
        f"machine   {os.cpu_count()} cores ({model or platform.processor()}), "
        f"{platform.system()} {platform.release()}, load average {load[0]:.2f} {load[1]:.2f} "
        f"{load[2]:.2f} at start; "
        + ("taskset available" if shutil.which("taskset") else "no taskset: unpinned"),
        f"python    {platform.python_version()}" + (f"; {packages}" if packages else ""),
    ]


def code_note() -> str:
    """Which code is measured: the commit, and whether app/, emulator/ or migrations/ differ."""
    try:
        git = ["git", "-C", str(REPO)]
        head = subprocess.run(
            [*git, "rev-parse", "--short", "HEAD"], capture_output=True, text=True, timeout=10
        ).stdout.strip()
        dirty = subprocess.run(
            [*git, "status", "--porcelain", "--", "app", "emulator", "migrations"],
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout.splitlines()
    except (OSError, subprocess.SubprocessError):
        return "code      (git not available)"
    state = f"{len(dirty)} uncommitted change(s) under app/ emulator/ migrations/" if dirty else ""
    return f"code      HEAD {head or '?'}, {state or 'app/ emulator/ migrations/ clean'}"


def others_busy(name: str) -> str | None:
    """Other processes eating CPU on this (shared) machine make every figure worse."""
    with contextlib.suppress(Exception):
        out = subprocess.run(
            ["ps", "-eo", "pcpu,pid,args", "--sort=-pcpu"],
            capture_output=True,
            text=True,
            timeout=5,
            check=False,
        ).stdout.splitlines()[1:]
        busy = []
        for line in out:
            cpu, pid, args = line.strip().split(None, 2)
            if float(cpu) >= 20 and int(pid) != os.getpid() and name not in args:
                busy.append(f"{cpu}% {args[:70]}")
        return "; ".join(busy[:4]) or None
    return None
