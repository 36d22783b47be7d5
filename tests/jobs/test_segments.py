"""A split job's decisions, pure: what the parent does given its segments, and its transitions."""

from __future__ import annotations

import uuid
from datetime import timedelta

from hypothesis import given
from hypothesis import strategies as st

from app.jobs import lifecycle as lc
from app.jobs.lifecycle.segments import (
    MAX_TRIES,
    SEGMENT_LOOK,
    Assemble,
    CancelLive,
    End,
    Retry,
    SegmentState,
    Wait,
    next_move,
)
from app.models import JobStatus, SubmitState
from tests.jobs.test_lifecycle import POLICY, T0, FakeJob, apply


def seg(
    index: int,
    status: JobStatus,
    *,
    code: str | None = None,
    tries: int = 1,
    cancel_requested: bool = False,
) -> SegmentState:
    return SegmentState(index, tries, f"job-{index}-{tries}", status, code, cancel_requested)


OK = JobStatus.succeeded
LIVE = JobStatus.processing


def test_waits_while_segments_run_and_assembles_when_all_succeeded() -> None:
    assert next_move([seg(0, OK), seg(1, LIVE)], canceled=False, timed_out=None) == Wait()
    assert next_move([seg(0, OK), seg(1, OK)], canceled=False, timed_out=None) == Assemble()


def test_a_failure_fal_did_not_bill_runs_again_once() -> None:
    failed = seg(1, JobStatus.failed, code="upstream_runner_error")
    move = next_move([seg(0, OK), failed], canceled=False, timed_out=None)
    assert move == Retry((failed,))
    # its second run failing the same way ends the job, naming the segment
    again = seg(1, JobStatus.failed, code="upstream_runner_error", tries=MAX_TRIES)
    move = next_move([seg(0, OK), again], canceled=False, timed_out=None)
    assert isinstance(move, End) and move.status is JobStatus.failed
    assert move.error["code"] == "segment_failed"
    assert move.error["details"]["segments"][0]["index"] == 1


def test_the_inputs_fault_is_never_retried_and_stops_the_running_segments() -> None:
    # fal's 422 may be billed: a second run could bill the segment twice
    failed = seg(0, JobStatus.failed, code="upstream_validation")
    move = next_move([failed, seg(1, LIVE), seg(2, LIVE)], canceled=False, timed_out=None)
    assert move == CancelLive(("job-1-1", "job-2-1"))
    # once their cancels are asked, the job waits for them to end
    asked = [failed, seg(1, LIVE, cancel_requested=True), seg(2, OK)]
    assert next_move(asked, canceled=False, timed_out=None) == Wait()
    ended = [failed, seg(1, JobStatus.canceled), seg(2, OK)]
    move = next_move(ended, canceled=False, timed_out=None)
    assert isinstance(move, End) and move.status is JobStatus.failed


def test_a_cancel_or_time_out_cancels_every_live_segment_then_ends() -> None:
    running = [seg(0, OK), seg(1, LIVE), seg(2, JobStatus.queued)]
    assert next_move(running, canceled=True, timed_out=None) == CancelLive(("job-1-1", "job-2-1"))
    done = [seg(0, OK), seg(1, JobStatus.canceled), seg(2, JobStatus.canceled)]
    move = next_move(done, canceled=True, timed_out=None)
    assert isinstance(move, End) and move.status is JobStatus.canceled
    move = next_move(done, canceled=False, timed_out="too long")
    assert isinstance(move, End) and move.error["code"] == "timeout"
    # even when every segment succeeded meanwhile, a canceled job is not assembled
    move = next_move([seg(0, OK), seg(1, OK)], canceled=True, timed_out=None)
    assert isinstance(move, End) and move.status is JobStatus.canceled


statuses = st.sampled_from(list(JobStatus))
codes = st.sampled_from([None, "upstream_runner_error", "upstream_validation", "timeout"])


@given(
    st.lists(
        st.tuples(statuses, codes, st.integers(1, MAX_TRIES), st.booleans()),
        min_size=1,
        max_size=8,
    ),
    st.booleans(),
    st.booleans(),
)
def test_next_move_invariants(rows, canceled: bool, timed_out: bool) -> None:  # type: ignore[no-untyped-def]
    segments = [
        seg(
            i,
            status,
            code=code if status is JobStatus.failed else None,
            tries=t,
            cancel_requested=c,
        )
        for i, (status, code, t, c) in enumerate(rows)
    ]
    move = next_move(segments, canceled=canceled, timed_out="late" if timed_out else None)
    live = [s for s in segments if not s.status.terminal]
    if isinstance(move, Assemble):
        # only whole: every segment succeeded, nothing asked to stop
        assert all(s.status is JobStatus.succeeded for s in segments)
        assert not canceled and not timed_out
    if isinstance(move, End):
        assert not live  # a job ends only once every segment has
        if move.status is JobStatus.succeeded:
            raise AssertionError("success is assembled, never just ended")
    if isinstance(move, Retry):
        assert not live and not canceled and not timed_out
        for s in move.segments:  # only what fal did not bill, at most once
            assert s.error_code == "upstream_runner_error" and s.tries < MAX_TRIES
    if isinstance(move, CancelLive):
        assert set(move.job_ids) <= {s.job_id for s in live if not s.cancel_requested}
        assert move.job_ids
    if isinstance(move, Wait):
        assert live


def test_split_moves_a_queued_job_to_its_segments_and_holds_no_reservation() -> None:
    job = FakeJob()
    segments = (
        {"index": 0, "start_s": 0.0, "end_s": 20.5},
        {"index": 1, "start_s": 19.5, "end_s": 40.0},
    )
    t = apply(job, lc.Split(segments, {"duration_s": 40.0}, 70_000, uuid.uuid4()), T0)
    assert job.status is JobStatus.processing and job.submit_state is SubmitState.split
    assert t.changes["reserved_micros"] == 0 and t.changes["estimated_cost_micros"] == 70_000
    assert t.next_action_at == T0 + SEGMENT_LOOK and t.wake == "job"
    assert job.events == ["job.split", "job.processing"]
    assert t.settle is None and t.reprice_micros is None
    # a stale split (the job was canceled meanwhile) writes nothing
    canceled = FakeJob(status=JobStatus.canceled)
    assert lc.decide(canceled, lc.Split(segments, {}, 1, None), now=T0, policy=POLICY).noop


def test_a_split_job_ends_once_settled_at_nothing_of_its_own() -> None:
    job = FakeJob(status=JobStatus.processing, submit_state=SubmitState.split)
    apply(job, lc.SegmentRetried(({"index": 1, "failed_job": "x", "error": None},)), T0)
    assert job.next_action_at == T0  # looked at again at once (see segments.py)
    assert job.events == ["job.segment_retried"]
    apply(job, lc.SegmentsAssembled({"audio": {"file_id": "f"}}), T0 + timedelta(seconds=5))
    assert job.status is JobStatus.succeeded and job.settled == 1 and job.billed is None
    # a late repeat is absorbed
    assert lc.decide(job, lc.SegmentsAssembled({}), now=T0, policy=POLICY).noop
    failed = FakeJob(status=JobStatus.processing, submit_state=SubmitState.split)
    error = {"code": "segment_failed", "message": "m", "upstream": None}
    apply(failed, lc.SegmentsEnded("failed", error), T0)
    assert failed.status is JobStatus.failed and failed.settled == 1 and failed.billed is None


def test_a_split_job_is_canceled_through_its_segments() -> None:
    job = FakeJob(status=JobStatus.processing, submit_state=SubmitState.split)
    t = apply(job, lc.CancelRequested(), T0)
    # not ended at once: its segments are canceled by its next step, which is due now
    assert job.status is JobStatus.processing and t.next_action_at == T0
    assert job.cancel_requested_at == T0
