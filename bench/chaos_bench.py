"""Chaos: the gateway's real processes under faults, judged against its targets.

    .venv/bin/python bench/chaos_bench.py                    # every scenario, ~10 min (make chaos)
    .venv/bin/python bench/chaos_bench.py --only faults --jobs 100

One `foley api`, three `foley worker`, the fal emulator (fast mode, 10 slots, requests running
1–3 s) and an embedded Postgres of the run's own (it is stopped and started). Scenarios:
`kills` (workers SIGKILLed mid-step, each while it holds a lease), `outage` (Postgres stopped
for 10 s under 10 creates/s), `faults` (~30 % mixed upstream faults), `api` (the API SIGKILLed
with 40 creates in flight, each retried with its Idempotency-Key). Each prints jobs accepted /
terminal / lost, requests created at fal per job, `foley usage reconcile` against the emulator's
bill, and its own figures; the run exits 1 when any condition fails, naming it.
See bench/README.md.
"""

from __future__ import annotations

import asyncio
import os
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from harness import fal, report
from harness.chaos import FAL_SLOTS, SCENARIOS, Cluster, Outcome, Sizes, run_alone
from harness.database import OwnPostgres
from harness.procs import BenchError
from harness.run import Run, parse, parser

VERSIONS = ("fastapi", "uvicorn", "sqlalchemy", "asyncpg")


def print_outcome(out: Outcome) -> None:
    print(f"\n== {out.name}")
    table = report.Table(("figure", "<46"), ("value", "<"))
    table.row(
        "jobs accepted / terminal / lost", f"{out.accepted} / {out.terminal} / {len(out.lost)}"
    )
    table.row("jobs by status", ", ".join(f"{k} {v}" for k, v in sorted(out.statuses.items())))
    if out.failed_by_code:
        table.row(
            "failed jobs by error",
            ", ".join(f"{k} {v}" for k, v in out.failed_by_code.most_common()),
        )
    per_job = ", ".join(f"{n}: {jobs}" for n, jobs in sorted(out.requests_per_job.items()))
    table.row("requests created at fal per job (n: jobs)", per_job or "-")
    table.row("jobs with two upstream requests", len(out.double_submits))
    table.row("failed ambiguous, never received by fal", len(out.ambiguous_unreceived))
    rec = out.reconcile
    table.row(
        "reconcile: exit code",
        f"{out.reconcile_exit}; ledger {rec.get('ledger_requests')} requests "
        f"{rec.get('ledger_total_usd')} USD, fal {rec.get('fal_requests')} requests "
        f"{rec.get('fal_total_usd')} USD" + (f"; {rec['error']}" if "error" in rec else ""),
    )
    if out.differences():
        table.row(
            "reconcile: differences", ", ".join(f"{k} {v}" for k, v in out.differences().items())
        )
    for name, value in out.figures.items():
        if not name.startswith("_"):
            table.row(name, value if isinstance(value, str) else str(value))
    for d in out.reconcile.get("differences", [])[:10]:
        table.note(
            f"{d['kind']} {d['request_id']} {d.get('model') or '-'} ledger={d.get('ledger_usd')} "
            f"fal={d.get('fal_usd')} tenant={d.get('tenant_id')}"
        )
    for job in out.lost[:10]:
        table.note(f"lost: {job}")
    for job in out.double_submits[:10]:
        table.note(f"two upstream requests: {job}")
    for job in out.ambiguous_unreceived[:10]:
        table.note(f"failed ambiguous, never at fal: {job}")
    kills = out.figures.get("_kills") or []
    if kills:
        rows = [
            f"{k.recovery_s:.1f}"
            if k.recovery_s not in (None, float("inf"))
            else ("never" if k.recovery_s is not None else "n/a")
            for k in kills
        ]
        table.note("recovery per kill (s): " + " ".join(rows))
        table.note("takeover per kill (s): " + " ".join(f"{k.takeover_s:.1f}" for k in kills))
    table.note("conditions failed: " + (", ".join(out.failures) or "none"))


async def run_all(run: Run, args: Any) -> list[Outcome]:
    from tests.support.clips import make_bouncing_square

    root = Path(tempfile.gettempdir()) / f"foley-chaos-pg-{os.getuid()}-{os.getpid()}"
    pg = await asyncio.to_thread(OwnPostgres, root)
    try:
        emu = await asyncio.to_thread(
            fal.start_emulator,
            run.procs,
            run.tmp / "emulator",
            fast=True,
            concurrency=FAL_SLOTS,
        )
        clip = make_bouncing_square(run.tmp / "clip.mp4", duration_s=4.0, width=160, height=120)
        video_url = await asyncio.to_thread(emu.upload, clip.path, "video/mp4")
        sizes = Sizes(jobs=args.jobs, rate=args.rate, kills=args.kills, api_rounds=args.api_rounds)
        outcomes = []
        for name in args.only or list(SCENARIOS):
            print(f"\n-- {name} ...", flush=True)
            cluster = Cluster(run.procs, run.out_dir, pg, emu, video_url)
            out = await run_alone(cluster, name, sizes)
            print_outcome(out)
            outcomes.append(out)
        return outcomes
    finally:
        await asyncio.to_thread(pg.close)


def summary(outcomes: list[Outcome]) -> int:
    print("\n== summary: the conditions")
    table = report.Table(
        ("scenario", "<22"), ("accepted/terminal/lost", "<22"), ("failed conditions", "<")
    )
    failed = 0
    for out in outcomes:
        table.row(
            out.name,
            f"{out.accepted}/{out.terminal}/{len(out.lost)}",
            "; ".join(out.failures) or "none",
        )
        failed += len(out.failures)
    print("\nFAILED: " + str(failed) + " condition(s)" if failed else "\nall conditions hold")
    return 1 if failed else 0


def main(argv: Sequence[str] | None = None) -> int:
    p = parser("chaos_bench", __doc__)
    g = p.add_argument_group("chaos")
    g.add_argument("--only", action="append", choices=list(SCENARIOS), help="a scenario (repeat)")
    g.add_argument("--jobs", type=int, default=300, help="jobs of kills and faults [300]")
    g.add_argument("--rate", type=float, default=10.0, help="creates per second [10]")
    g.add_argument("--kills", type=int, default=20, help="workers SIGKILLed [20]")
    g.add_argument("--api-rounds", type=int, default=7, help="API kills, 40 creates each [7]")
    args = parse(p, argv)
    with Run("chaos_bench", args, versions=VERSIONS) as run:
        outcomes = asyncio.run(run_all(run, args))
        return summary(outcomes)
    return run.exit_code or 1


if __name__ == "__main__":
    try:
        sys.exit(main())
    except BenchError as exc:
        print(f"ERROR: {exc}", file=sys.stderr)
        sys.exit(1)
