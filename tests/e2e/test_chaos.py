"""The chaos suite, bounded: the scenarios of `make chaos` (bench/harness/chaos.py) with a few
jobs each, against the same real processes (`foley api`, three `foley worker`, the emulator,
an embedded Postgres of this module's own that is stopped and started), asserting the
invariants the gateway keeps under faults. Unlike `make chaos`, one cluster serves the four
scenarios in turn (starting the processes is most of the time here), so the money is reconciled
once, over all of them. Each scenario runs once (a module fixture); each invariant is a test.
"""

from __future__ import annotations

import os
import sys
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

# The scenarios live with the benchmark harness (bench/), which imports itself as `harness`.
sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))

from harness import chaos
from harness import fal as harness_fal
from harness.database import OwnPostgres
from harness.procs import Procs

from tests.support.clips import make_bouncing_square

SIZES = chaos.Sizes(
    # Enough for a backlog at fal's 4 slots through the three kills, each of which waits for a
    # dispatch under way: with 16, a machine busy enough to start the replacement workers slowly
    # (seconds each) had sent every job before the third kill, which then found none.
    jobs=24,
    rate=5.0,
    slots=4,
    run_time="0.5..1",
    settle_s=90.0,
    kills=3,
    kill_every_s=2.0,
    # Killed mid-dispatch: the case where a dead worker's lease holds a slot at fal's account.
    kill_dispatching=True,
    kill_run_time="1..2",
    kill_create_rate=10.0,
    baseline_s=3.0,
    outage_before_s=2.0,
    outage_s=4.0,
    outage_after_s=2.0,
    api_rounds=1,
    in_flight=10,
    retry_deadline_s=30.0,
    # A dead worker's leases and an ambiguous submit's first lookup bound how long the killed
    # workers' jobs take to end: the defaults (60 s, 10 s) would make this module minutes long.
    # A worker is judged dead after 2 s without a beat (default 5): a takeover that waits for
    # that is well under the 5 s allowed, one that waits for the lease well over it.
    settings={
        "FOLEY_LEASE_DURATION": "10",
        "FOLEY_AMBIGUOUS_LOOKUP_DELAY": "2",
        "FOLEY_WORKER_STALE_AFTER": "2",
    },
)


@pytest.fixture(scope="module")
def procs() -> Iterator[Procs]:
    p = Procs()
    yield p
    p.stop_all()


@pytest.fixture(scope="module")
async def cluster(
    procs: Procs, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[chaos.Cluster]:
    root = Path(tempfile.gettempdir()) / f"foley-chaos-pg-{os.getuid()}-{os.getpid()}"
    pg = OwnPostgres(root)
    tmp = tmp_path_factory.mktemp("chaos")
    try:
        emu = harness_fal.start_emulator(procs, tmp / "emulator", fast=True, log_size=50_000)
        clip = make_bouncing_square(tmp / "clip.mp4", duration_s=4.0, width=160, height=120)
        cl = chaos.Cluster(procs, tmp, pg, emu, emu.upload(clip.path, "video/mp4"))
        await cl.open("bounded", SIZES)
        yield cl
        await cl.close()
    finally:
        pg.close()


@pytest.fixture(scope="module")
async def outcomes(cluster: chaos.Cluster) -> dict[str, chaos.Outcome]:
    """Every scenario, in turn, on the one cluster."""
    return {name: await run(cluster, SIZES) for name, run in chaos.SCENARIOS.items()}


SCENARIOS = tuple(chaos.SCENARIOS)


# Outcome fields listing the jobs that broke an invariant: accepted but never ended (or gone),
# sent to fal twice, failed as ambiguous though fal never received them.
BROKEN = ("lost", "double_submits", "ambiguous_unreceived")


@pytest.mark.parametrize("broken", BROKEN)
@pytest.mark.parametrize("scenario", SCENARIOS)
def test_no_job_lost_sent_twice_or_failed_ambiguous_unreceived(
    scenario: str, broken: str, outcomes: dict[str, chaos.Outcome]
) -> None:
    out = outcomes[scenario]
    assert out.accepted > 0
    assert getattr(out, broken) == [], (out.statuses, out.failed_by_code, out.requests_per_job)


async def test_the_ledger_is_the_emulators_bill_after_every_scenario(
    cluster: chaos.Cluster, outcomes: dict[str, chaos.Outcome]
) -> None:
    money = chaos.Outcome("all scenarios")
    await chaos.check_money(cluster, money)
    assert money.reconcile_exit == 0, money.reconcile


def test_a_database_outage_is_503_with_retry_after_never_500(
    outcomes: dict[str, chaos.Outcome],
) -> None:
    outage = outcomes["outage"]
    assert outage.figures["500 answers (whole scenario)"] == 0
    assert outage.figures["fal webhooks answered 500 (whole scenario)"] == 0
    assert outage.figures["503 without Retry-After or problem+json"] == 0
    assert "503" in outage.figures["answers during the outage"]


def test_an_idempotent_create_retried_after_an_api_crash_makes_one_job(
    outcomes: dict[str, chaos.Outcome],
) -> None:
    api = outcomes["api"]
    assert api.figures["keys with two jobs"] == 0
    assert api.figures["keys whose answer names another job"] == 0
    assert api.figures["keys never answered"] == 0


def test_a_dead_workers_queued_jobs_are_taken_over_within_5_s(
    outcomes: dict[str, chaos.Outcome],
) -> None:
    # Only kills that left queued jobs behind count: a step past its submit when the kill
    # landed leaves none, and then the takeover says nothing about the stranded slots.
    kills = outcomes["kills"].figures["_kills"]
    takeovers = [k.queued_takeover_s for k in kills if k.queued_takeover_s is not None]
    assert takeovers and max(takeovers) <= SIZES.recovery_s, takeovers
