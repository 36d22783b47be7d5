"""The job lifecycle as a pure machine: no Postgres, no fal. Examples of its transitions, and its
invariants under any sequence of events (hypothesis)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from app.jobs import lifecycle as lc
from app.models import JobStatus, SubmitState
from app.upstream.schemas import ResultCancelled, ResultFailed, ResultNotFound

T0 = datetime(2026, 12, 7, 12, 0, tzinfo=UTC)
POLICY = lc.Policy(
    poll_min=timedelta(seconds=1),
    poll_max=timedelta(seconds=30),
    first_look=timedelta(seconds=10),
    ambiguous_grace=timedelta(seconds=120),
)


@dataclass
class FakeJob:
    status: JobStatus = JobStatus.queued
    submit_state: SubmitState = SubmitState.pending
    submit_attempts: int = 0
    poll_count: int = 0
    upstream_request_id: str | None = None
    upstream_completed: bool = False
    created_at: datetime = T0
    submitted_at: datetime | None = None
    started_at: datetime | None = None
    cancel_requested_at: datetime | None = None
    cancel_sent_at: datetime | None = None
    cancel_after_at: datetime | None = None
    inference_s: float | None = None
    queue_position: int | None = None
    logs: list[dict[str, Any]] = field(default_factory=list)
    model: str = "fal-ai/thinksound"
    endpoint: str = "fal-ai/thinksound"
    candidates: list[dict[str, Any]] | None = None
    attempts: list[dict[str, Any]] = field(default_factory=list)
    next_action_at: datetime | None = T0
    result: dict[str, Any] | None = None
    cache_source_id: uuid.UUID | None = None
    # what the store does besides the row: counted here
    settled: int = 0
    billed: str | None = None  # the settled outcome's kind (None: nothing reached fal)
    events: list[str] = field(default_factory=list)
    settled_requests: list[str] = field(default_factory=list)  # fal requests settled, in order
    peak_at_fal: int = 0  # the most requests that may have existed at fal at once


def apply(
    job: FakeJob, event: lc.Event, now: datetime, policy: lc.Policy = POLICY
) -> lc.Transition:
    """What app.jobs.store.JobStore does with a transition, minus the database."""
    t = lc.decide(job, event, now=now, policy=policy)
    if t.settle_request is not None:
        job.settled_requests.append(t.settle_request.request_id)
    for column, value in t.changes.items():
        if hasattr(job, column):
            setattr(job, column, value)
    if t.next_action_at is not lc.KEEP:
        job.next_action_at = t.next_action_at
    if job.status.terminal:
        job.next_action_at = None
    if t.settle is not None:
        job.settled += 1
        job.billed = t.settle.outcome.kind if t.settle.outcome else None
        if t.settle.outcome is not None and job.upstream_request_id is not None:
            job.settled_requests.append(job.upstream_request_id)
    job.events += [kind for kind, _ in t.events]
    return t


def candidates(n: int) -> list[dict[str, Any]]:
    return [
        {"model": f"model-{i}", "endpoint": f"fal-ai/model-{i}", "upstream_payload": {"i": i}}
        for i in range(n)
    ]


def log(msg: str) -> dict[str, Any]:
    return {"message": msg, "level": "INFO", "source": "USER", "timestamp": "2026-12-07T12:00:00Z"}


def submitted(rid: str = "req-1", *, watched: bool = False) -> lc.Submitted:
    return lc.Submitted(rid, "https://q/s", "https://q/r", "https://q/c", 0, watched)


SOURCE = uuid.UUID("00000000-0000-4000-8000-00000000501e")


def cache_hit() -> lc.CacheHit:
    return lc.CacheHit(SOURCE, {"prompt": "rain", "audio": {"file_id": "f"}}, "k" * 64)


# --- examples -------------------------------------------------------------------------------------


def test_a_job_goes_from_queued_to_succeeded_with_one_event_per_step() -> None:
    job = FakeJob()
    apply(job, lc.SubmitStarting(probe={"duration_s": 4.0}), T0)
    assert (job.submit_state, job.submit_attempts, job.submitted_at) == (
        SubmitState.sending,
        1,
        T0,
    )
    apply(job, submitted(), T0)
    assert job.status is JobStatus.starting and job.upstream_request_id == "req-1"
    assert job.next_action_at == T0 + POLICY.first_look  # nobody follows its status stream
    later = T0 + timedelta(seconds=2)
    apply(job, lc.Progress(True, None, [log("a")], polled=False), later)
    assert job.status is JobStatus.processing and job.started_at == later
    apply(job, lc.Progress(True, None, [log("a"), log("b")], polled=False), later)
    apply(job, lc.UpstreamCompleted(3.5, [log("a"), log("b"), log("c")]), later)
    assert job.upstream_completed and job.next_action_at == later and job.inference_s == 3.5
    t = apply(job, lc.Succeeded({"prompt": "x"}, {}, None, None), later)
    assert job.status is JobStatus.succeeded and job.settled == 1
    assert t.settle == lc.Settle(lc.Outcome("succeeded", 3.5))
    assert job.events == [
        "job.submitting",
        "job.started",
        "job.processing",
        "job.logs",
        "job.logs",
        "job.logs",
        "job.succeeded",
    ]
    assert [entry["message"] for entry in job.logs] == ["a", "b", "c"]


def test_a_followed_submit_is_polled_only_as_a_safety_net() -> None:
    followed, alone = (
        FakeJob(submit_state=SubmitState.sending),
        FakeJob(submit_state=SubmitState.sending),
    )
    apply(followed, submitted(watched=True), T0)
    apply(alone, submitted(), T0)
    assert followed.next_action_at == T0 + POLICY.poll_max
    assert alone.next_action_at == T0 + POLICY.first_look


def test_only_new_log_lines_make_an_event() -> None:
    job = FakeJob(status=JobStatus.processing, submit_state=SubmitState.submitted)
    first = lc.decide(
        job, lc.Progress(True, None, [log("a"), log("b")], polled=False), now=T0, policy=POLICY
    )
    assert first.events == (("job.logs", {"lines": [log("a"), log("b")]}),)
    job.logs = [log("a"), log("b")]
    same = lc.decide(
        job, lc.Progress(True, None, [log("a"), log("b")], polled=False), now=T0, policy=POLICY
    )
    assert same.noop
    more = lc.decide(
        job,
        lc.Progress(True, None, [log("a"), log("b"), log("c")], polled=False),
        now=T0,
        policy=POLICY,
    )
    assert more.events == (("job.logs", {"lines": [log("c")]}),)


def test_a_status_seen_on_the_stream_leaves_the_next_look_alone() -> None:
    job = FakeJob(status=JobStatus.starting, submit_state=SubmitState.submitted, queue_position=3)
    t = lc.decide(job, lc.Progress(False, 1, None, polled=False), now=T0, policy=POLICY)
    assert t.changes == {"queue_position": 1} and t.next_action_at is lc.KEEP
    polled = lc.decide(
        job, lc.Progress(False, 1, None, polled=True, watched=True), now=T0, policy=POLICY
    )
    assert polled.next_action_at == T0 + POLICY.poll_max


def test_a_poll_that_began_before_the_completion_does_not_put_the_result_off() -> None:
    job = FakeJob(
        status=JobStatus.processing, submit_state=SubmitState.submitted, upstream_completed=True
    )
    t = lc.decide(job, lc.Progress(True, None, None, polled=True), now=T0, policy=POLICY)
    assert t.next_action_at == T0 and not t.changes


def test_a_submit_its_webhook_attached_first_is_due_at_once() -> None:
    job = FakeJob(submit_state=SubmitState.sending, submit_attempts=1)
    apply(job, lc.Attached("req-9"), T0)
    assert job.submit_state is SubmitState.submitted
    assert job.events == ["job.attached", "job.started"] and job.status is JobStatus.starting
    t = apply(job, submitted("req-9"), T0)
    assert t.next_action_at == T0


def test_an_ambiguous_submit_waits_then_fails_without_a_second_request() -> None:
    job = FakeJob(submit_state=SubmitState.sending, submit_attempts=1, submitted_at=T0)
    apply(job, lc.SubmitAmbiguous("read timeout"), T0)
    assert job.next_action_at == T0 + POLICY.ambiguous_grace
    early = apply(job, lc.AmbiguousDue(), T0 + timedelta(seconds=5))
    assert early.next_action_at == T0 + POLICY.ambiguous_grace and not early.changes
    apply(job, lc.AmbiguousDue(), T0 + POLICY.ambiguous_grace)
    assert job.status is JobStatus.failed and job.settled == 1
    assert job.submit_state is SubmitState.ambiguous  # never back to pending


def test_the_retry_policy_resubmits_an_ambiguous_job_once() -> None:
    retry = replace(POLICY, retry_ambiguous=True)
    job = FakeJob(submit_state=SubmitState.ambiguous, submit_attempts=1, submitted_at=T0)
    apply(job, lc.AmbiguousDue(), T0 + POLICY.ambiguous_grace, retry)
    assert job.submit_state is SubmitState.pending
    job.submit_state, job.submit_attempts = SubmitState.ambiguous, 2
    apply(job, lc.AmbiguousDue(), T0 + POLICY.ambiguous_grace, retry)
    assert job.status is JobStatus.failed


def test_a_cancel_before_the_send_ends_the_job_without_billing() -> None:
    job = FakeJob()
    t = apply(job, lc.CancelRequested(), T0)
    assert job.status is JobStatus.canceled and t.settle == lc.Settle(None)
    with pytest.raises(lc.NotApplicable):
        lc.decide(job, lc.CancelRequested(), now=T0, policy=POLICY)


def test_a_cancel_at_fal_is_requested_once_and_wakes_a_worker() -> None:
    job = FakeJob(status=JobStatus.starting, submit_state=SubmitState.submitted)
    t = apply(job, lc.CancelRequested(), T0)
    assert t.wake == "cancel" and job.cancel_requested_at == T0 and job.next_action_at == T0
    assert lc.decide(job, lc.CancelRequested(), now=T0, policy=POLICY).noop


@pytest.mark.parametrize(
    ("outcome", "started", "status", "code", "billed"),
    [
        (
            ResultFailed(422, None, None, [{"msg": "bad"}], False),
            False,
            "failed",
            "upstream_validation",
            "upstream_422",
        ),
        (
            ResultFailed(504, None, "request_timeout", "t", True),
            False,
            "failed",
            "upstream_start_timeout",
            "upstream_5xx",
        ),
        (
            ResultFailed(503, None, "runner_disconnected", "d", True),
            True,
            "failed",
            "upstream_runner_error",
            "upstream_5xx",
        ),
        (ResultCancelled(499, None, "c"), True, "canceled", "canceled", "canceled_running"),
        (ResultCancelled(499, None, "c"), False, "canceled", "canceled", "canceled_queued"),
        (ResultNotFound("gone"), True, "failed", "upstream_result_expired", "unknown"),
    ],
)
def test_what_fal_answered_decides_the_end_and_the_bill(
    outcome: Any, started: bool, status: str, code: str, billed: str
) -> None:
    job = FakeJob(
        status=JobStatus.processing if started else JobStatus.starting,
        submit_state=SubmitState.submitted,
        upstream_request_id="r",
        started_at=T0 if started else None,
    )
    t = apply(job, lc.Ended(outcome, None, None), T0)
    assert job.status.value == status and t.changes["error"]["code"] == code
    assert t.settle is not None and t.settle.outcome is not None
    assert t.settle.outcome.kind == billed


def test_a_run_never_seen_running_gets_its_start_from_fals_inference_time() -> None:
    job = FakeJob(status=JobStatus.starting, submit_state=SubmitState.submitted, submitted_at=T0)
    now = T0 + timedelta(seconds=10)
    apply(job, lc.Succeeded({}, {}, 4.0, None), now)
    assert job.started_at == now - timedelta(seconds=4)


def test_a_deadline_aborts_a_job_that_never_left_the_gateway() -> None:
    job = FakeJob(cancel_after_at=T0 + timedelta(seconds=90))
    t = apply(job, lc.DeadlinePassed(), T0 + timedelta(seconds=30))  # not yet: nothing
    assert not t.events and job.status is JobStatus.queued
    t = apply(job, lc.DeadlinePassed(), T0 + timedelta(seconds=90))
    assert job.status is JobStatus.aborted and job.events == ["job.aborted"]
    assert t.changes["error"]["code"] == "aborted"
    assert job.settled == 1 and job.billed is None  # the reservation released, nothing billed


def test_a_job_is_next_due_no_later_than_its_deadline() -> None:
    job = FakeJob(cancel_after_at=T0 + timedelta(seconds=5))
    apply(job, lc.SubmitStarting(), T0)
    apply(job, submitted(watched=True), T0 + timedelta(seconds=1))  # would be T0 + 31 s
    assert job.next_action_at == T0 + timedelta(seconds=5)


@pytest.mark.parametrize(
    ("started", "status", "billed"),
    [(False, JobStatus.aborted, "canceled_queued"), (True, JobStatus.canceled, "canceled_running")],
)
def test_a_deadline_cancels_at_fal_and_aborts_what_never_ran(
    started: bool, status: JobStatus, billed: str
) -> None:
    job = FakeJob(cancel_after_at=T0 + timedelta(seconds=60))
    apply(job, lc.SubmitStarting(), T0)
    apply(job, submitted(), T0)
    if started:
        apply(job, lc.Progress(True, None, None, polled=False), T0 + timedelta(seconds=10))
    t = apply(job, lc.DeadlinePassed(), T0 + timedelta(seconds=60))
    assert t.wake == "cancel" and job.cancel_requested_at == T0 + timedelta(seconds=60)
    assert job.events[-1] == "job.cancel_requested"
    apply(job, lc.CancelSent(not_found=False), T0 + timedelta(seconds=61))
    cancelled = ResultCancelled(499, "client_cancelled", "Request was cancelled by the client")
    apply(job, lc.Ended(cancelled, 3.0 if started else None, None), T0 + timedelta(seconds=62))
    assert job.status is status and job.billed == billed
    assert job.events[-1] == f"job.{status.value}"


def test_a_tenants_cancel_before_the_deadline_stays_a_cancel() -> None:
    job = FakeJob(cancel_after_at=T0 + timedelta(seconds=60))
    apply(job, lc.SubmitStarting(), T0)
    apply(job, submitted(), T0)
    apply(job, lc.CancelRequested(), T0 + timedelta(seconds=5))
    apply(job, lc.DeadlinePassed(), T0 + timedelta(seconds=60))  # a cancel is under way
    apply(job, lc.CancelSent(not_found=True), T0 + timedelta(seconds=61))
    assert job.status is JobStatus.canceled


def test_a_cache_hit_ends_a_queued_job_at_once_without_a_request() -> None:
    job = FakeJob()
    t = apply(job, cache_hit(), T0)
    assert job.status is JobStatus.succeeded and t.changes["completed_at"] == T0
    assert job.submit_state is SubmitState.pending and job.upstream_request_id is None
    assert job.result == {"prompt": "rain", "audio": {"file_id": "f"}}
    assert job.cache_source_id == SOURCE
    assert t.settle == lc.Settle(lc.Outcome("cache_hit")) and job.settled == 1
    assert t.record_request is None and t.reprice_micros is None
    assert job.events == ["job.cache_hit", "job.succeeded"]
    assert t.events[0] == ("job.cache_hit", {"source_job": str(SOURCE)})


@pytest.mark.parametrize(
    "state", [SubmitState.sending, SubmitState.submitted, SubmitState.ambiguous]
)
def test_a_cache_hit_never_overrides_a_request_that_may_exist_at_fal(state: SubmitState) -> None:
    job = FakeJob(submit_state=state)
    t = apply(job, cache_hit(), T0)
    assert not job.status.terminal and job.settled == 0 and not t.events
    assert t.changes == {} and job.next_action_at == T0  # its own step goes on


def test_the_preflight_gives_up_after_three_tries() -> None:
    job = FakeJob()
    apply(job, lc.InputUnavailable("refused"), T0)
    apply(job, lc.InputUnavailable("refused"), T0)
    assert job.status is JobStatus.queued and job.next_action_at is not None
    apply(job, lc.InputUnavailable("refused"), T0)
    assert job.status is JobStatus.failed and job.events[-1] == "job.failed"


# --- invariants under any sequence of events ------------------------------------------------------

LOGS = st.lists(st.sampled_from([log("a"), log("b"), log("c")]), max_size=3)
FAILED = st.builds(
    ResultFailed,
    status_code=st.sampled_from([400, 422, 500, 503, 504]),
    body=st.none(),
    error_type=st.sampled_from([None, "request_timeout", "runner_disconnected"]),
    detail=st.just("x"),
    retryable=st.booleans(),
)
OUTCOMES = st.one_of(
    FAILED, st.just(ResultCancelled(499, None, "c")), st.just(ResultNotFound("gone"))
)
INFERENCE = st.one_of(st.none(), st.floats(0.1, 30, allow_nan=False))
EVENTS = st.one_of(
    st.just(lc.CancelRequested()),
    st.just(lc.TimedOut(timedelta(hours=1))),
    st.builds(lc.InputRejected, st.just("video_too_long"), st.just("too long")),
    st.builds(lc.InputUnavailable, st.just("refused")),
    st.builds(lc.SubmitStarting),
    st.builds(cache_hit),
    st.builds(lc.BudgetRefused, st.just("budget_exceeded"), st.just("over")),
    st.builds(submitted, st.sampled_from(["req-1", "req-2"])),
    st.builds(lc.SubmitAmbiguous, st.just("timeout")),
    st.builds(lc.SubmitFailed, st.just("503"), st.one_of(st.none(), st.just(2.0))),
    st.builds(
        lc.SubmitRefused,
        st.just("upstream_auth"),
        st.just("no"),
        st.none(),
        created=st.booleans(),
    ),
    st.just(lc.FoundMidSend()),
    st.just(lc.AmbiguousDue()),
    st.just(lc.NeverReceived()),
    st.builds(lc.Attached, st.sampled_from(["req-1", "req-2"])),
    st.builds(
        lc.Progress,
        in_progress=st.booleans(),
        queue_position=st.one_of(st.none(), st.integers(0, 5)),
        logs=LOGS,
        polled=st.booleans(),
        watched=st.booleans(),
    ),
    st.builds(lc.UpstreamCompleted, INFERENCE, LOGS),
    st.just(lc.CompletionReported()),
    st.builds(lc.Succeeded, st.just({}), st.just({}), INFERENCE, LOGS),
    st.builds(
        lc.OutputsUnavailable,
        st.just("output_unavailable"),
        st.just("gone"),
        st.just({}),
        INFERENCE,
    ),
    st.builds(lc.Ended, OUTCOMES, INFERENCE, LOGS),
    st.builds(lc.CancelSent, st.booleans()),
    st.builds(lc.RetryLater, st.just("x")),
    st.just(lc.Reschedule()),
    st.just(lc.DeadlinePassed()),
)
SEQUENCES = st.lists(st.tuples(EVENTS, st.integers(0, 90)), max_size=40)
# The events around a submit, without those that end the job: sequences that reach the
# ambiguous cases (and a resubmit, were the machine wrong) often.
SUBMIT_EVENTS = st.one_of(
    st.builds(lc.SubmitStarting),
    st.builds(cache_hit),
    st.builds(submitted, st.sampled_from(["req-1", "req-2"])),
    st.builds(lc.SubmitAmbiguous, st.just("timeout")),
    st.builds(lc.SubmitFailed, st.just("503"), st.none()),
    st.just(lc.FoundMidSend()),
    st.just(lc.AmbiguousDue()),
    st.just(lc.NeverReceived()),
    st.builds(lc.Attached, st.sampled_from(["req-1", "req-2"]), completed=st.booleans()),
)
SUBMIT_SEQUENCES = st.lists(st.tuples(SUBMIT_EVENTS, st.integers(0, 150)), max_size=30)


def run(
    events: list[tuple[lc.Event, int]],
    policy: lc.Policy,
    *,
    deadline_s: int | None = None,
    models: int = 1,
) -> tuple[FakeJob, int]:
    """The job after the events (each ``seconds`` after the one before); how many submits left
    while a request from an earlier one may still have existed at fal. ``deadline_s``: the
    job's Cancel-After, from its creation; ``models``: how many it names."""
    deadline = None if deadline_s is None else T0 + timedelta(seconds=deadline_s)
    job = FakeJob(cancel_after_at=deadline, candidates=candidates(models) if models > 1 else None)
    ran = False  # on any model
    ran_on_model = False  # on the model the job is on
    maybe_at_fal = 0
    overlapping = 0
    now = T0
    for event, seconds in events:
        now += timedelta(seconds=seconds)
        before = job.submit_state
        try:
            t = apply(job, event, now, policy)
        except lc.NotApplicable:
            assert isinstance(event, lc.CancelRequested) and job.status.terminal
            continue
        after = t.changes.get("submit_state", before)
        if "attempts" in t.changes:
            # Fell back: only from a request that ended at fal, or from none.
            assert before is not SubmitState.ambiguous, event
            assert isinstance(
                event, lc.Ended | lc.SubmitRefused | lc.InputRejected | lc.BudgetRefused
            ), event
            assert after is SubmitState.pending and job.status is JobStatus.queued
            assert len(job.attempts) < policy.max_attempts
            maybe_at_fal = 0
            ran_on_model = False
        elif before is SubmitState.pending and after is SubmitState.sending:
            overlapping += maybe_at_fal > 0
            maybe_at_fal += 1
            job.peak_at_fal = max(job.peak_at_fal, maybe_at_fal)
        elif after is SubmitState.pending and before is not SubmitState.pending:
            # Back to pending only when no request can exist: fal refused it before its queue
            # (from 'sending'), or fal's own list shows it never arrived; the retry policy's
            # resubmit of an ambiguous one is the exception the policy test allows.
            assert isinstance(event, lc.SubmitFailed | lc.SubmitRefused | lc.NeverReceived) or (
                policy.retry_ambiguous and isinstance(event, lc.AmbiguousDue)
            ), event
            if not isinstance(event, lc.AmbiguousDue):
                maybe_at_fal -= 1
        if not job.status.terminal:
            assert job.next_action_at is not None, f"stranded after {event}"
            if deadline is not None and job.cancel_requested_at is None:
                assert job.next_action_at <= deadline, f"due after the deadline: {event}"
        assert job.settled == (1 if job.status.terminal else 0)
        assert len(set(job.settled_requests)) == len(job.settled_requests), "billed twice"
        running = job.status is JobStatus.processing or job.started_at is not None
        ran, ran_on_model = ran or running, ran_on_model or running
        if job.cache_source_id is not None:
            # A hit: only on a job no request of which may exist at fal (never sent, on the
            # model it is on); it ends the job at once, billed as a hit.
            assert job.status is JobStatus.succeeded and job.billed == "cache_hit"
            assert maybe_at_fal <= 0 and not ran_on_model and job.upstream_request_id is None
            assert job.events[-2:] == ["job.cache_hit", "job.succeeded"]
        if job.status is JobStatus.aborted:
            # Only a deadline aborts, only a job fal never ran, and it costs nothing.
            assert deadline is not None and now >= deadline
            assert not ran and job.billed in (None, "canceled_queued")
            assert job.events[-1] == "job.aborted"
    return job, overlapping


@settings(max_examples=400, deadline=None)
@given(SEQUENCES)
def test_usage_settles_exactly_once_and_nothing_is_stranded(
    events: list[tuple[lc.Event, int]],
) -> None:
    run(events, POLICY)


@settings(max_examples=400, deadline=None)
@given(SEQUENCES, st.integers(0, 900))
def test_a_cancel_after_deadline_is_kept_and_aborts_only_what_never_ran(
    events: list[tuple[lc.Event, int]], deadline_s: int
) -> None:
    _, overlapping = run(events, POLICY, deadline_s=deadline_s)
    assert overlapping == 0


@settings(max_examples=1000, deadline=None)
@given(st.one_of(SEQUENCES, SUBMIT_SEQUENCES, SUBMIT_SEQUENCES, SUBMIT_SEQUENCES))
def test_never_a_second_upstream_request_by_our_doing(events: list[tuple[lc.Event, int]]) -> None:
    _, overlapping = run(events, POLICY)
    assert overlapping == 0


@settings(max_examples=500, deadline=None)
@given(st.one_of(SEQUENCES, SUBMIT_SEQUENCES, SUBMIT_SEQUENCES))
def test_the_retry_policy_allows_one_resubmit_at_most(events: list[tuple[lc.Event, int]]) -> None:
    # At most two requests of the job may exist at fal: the ambiguous one and its resubmit. (A
    # resubmit that fal certainly refused, SubmitFailed, created nothing: the one after it is
    # still the only resubmit that may exist.)
    job, _ = run(events, replace(POLICY, retry_ambiguous=True))
    assert job.peak_at_fal <= 2


@settings(max_examples=300, deadline=None)
@given(SEQUENCES, EVENTS)
def test_a_terminal_job_absorbs_every_event(
    events: list[tuple[lc.Event, int]], late: lc.Event
) -> None:
    job, _ = run(events, POLICY)
    apply(job, lc.TimedOut(timedelta(hours=1)), T0 + timedelta(hours=2))  # every path ends
    assert job.status.terminal and job.settled == 1
    if isinstance(late, lc.CancelRequested):
        with pytest.raises(lc.NotApplicable):
            lc.decide(job, late, now=T0, policy=POLICY)
    else:
        assert lc.decide(job, late, now=T0, policy=POLICY) is lc.NOTHING


@settings(max_examples=600, deadline=None)
@given(st.one_of(SEQUENCES, SUBMIT_SEQUENCES), st.integers(2, 4), st.integers(1, 4))
def test_a_job_naming_several_models_bills_each_request_once_and_falls_back_safely(
    events: list[tuple[lc.Event, int]], models: int, max_attempts: int
) -> None:
    """Any sequence of events on a job naming several models: never a second request while one
    may exist at fal, each request settled once, at most max_attempts models, always an end."""
    policy = replace(POLICY, max_attempts=max_attempts)
    job, overlapping = run(events, policy, models=models)
    assert overlapping == 0
    assert len(job.attempts) <= min(models, max_attempts) - 1
    apply(job, lc.TimedOut(timedelta(hours=1)), T0 + timedelta(hours=2), policy)
    assert job.status.terminal and job.settled == 1


def _runner_error(status: int = 503) -> lc.Ended:
    failed = ResultFailed(status, None, "runner_disconnected", "Runner disconnected", True)
    return lc.Ended(failed, 2.0, None)


def test_a_runner_error_moves_the_job_to_its_next_model_and_bills_the_first() -> None:
    job = FakeJob(candidates=candidates(2), model="model-0", endpoint="fal-ai/model-0")
    apply(job, lc.SubmitStarting(), T0)
    apply(job, submitted("req-1"), T0)
    t = apply(job, _runner_error(), T0 + timedelta(seconds=5))
    assert t.settle_request == lc.SettleRequest("req-1", lc.Outcome("upstream_5xx", 2.0))
    assert t.settle is None and t.wake == "job" and t.next_action_at == T0 + timedelta(seconds=5)
    assert (job.model, job.endpoint, job.status, job.submit_state) == (
        "model-1",
        "fal-ai/model-1",
        JobStatus.queued,
        SubmitState.pending,
    )
    assert job.upstream_request_id is None and job.submit_attempts == 0
    (attempt,) = job.attempts
    assert attempt["model"] == "model-0" and attempt["request_id"] == "req-1"
    assert attempt["error"]["code"] == "upstream_runner_error"
    assert job.events[-1] == "job.fallback"
    # the second model runs it to the end: its own request, settled at the end
    apply(job, lc.SubmitStarting(), T0 + timedelta(seconds=6))
    apply(job, submitted("req-2"), T0 + timedelta(seconds=6))
    apply(job, lc.Succeeded({}, {}, 1.0, None), T0 + timedelta(seconds=9))
    assert job.status is JobStatus.succeeded and job.settled_requests == ["req-1", "req-2"]


@pytest.mark.parametrize(
    ("event", "falls_back"),
    [
        (lc.InputRejected("video_too_long", "too long", {"duration_s": 21.0}), True),
        (lc.InputRejected("video_unreadable", "not a video"), False),
        (lc.BudgetRefused("budget_exceeded", "over budget"), True),
        (lc.SubmitRefused("upstream_account_locked", "locked", None, created=False), True),
        (lc.SubmitRefused("upstream_validation", "bad input", None, created=False), False),
    ],
)
def test_only_what_is_not_the_inputs_fault_moves_a_job_on(
    event: lc.Event, falls_back: bool
) -> None:
    job = FakeJob(candidates=candidates(2), model="model-0")
    if isinstance(event, lc.SubmitRefused):
        apply(job, lc.SubmitStarting(), T0)
    t = apply(job, event, T0)
    assert ("attempts" in t.changes) is falls_back
    assert job.status is (JobStatus.queued if falls_back else JobStatus.failed)
    assert t.settle_request is None  # nothing was created at fal: nothing to bill


def test_a_422_from_the_runner_or_a_cancel_ends_the_job_where_it_is() -> None:
    job = FakeJob(candidates=candidates(2), model="model-0")
    apply(job, lc.SubmitStarting(), T0)
    apply(job, submitted("req-1"), T0)
    validation = lc.Ended(ResultFailed(422, None, None, [{"msg": "bad"}], False), 1.0, None)
    assert "attempts" not in lc.decide(job, validation, now=T0, policy=POLICY).changes
    apply(job, lc.CancelRequested(), T0)
    t = apply(job, _runner_error(), T0)
    assert job.status is JobStatus.failed and "attempts" not in t.changes


def test_the_last_model_fails_the_job_with_every_attempt_kept() -> None:
    job = FakeJob(candidates=candidates(2), model="model-0")
    for rid in ("req-1", "req-2"):
        apply(job, lc.SubmitStarting(), T0)
        apply(job, submitted(rid), T0)
        apply(job, _runner_error(), T0)
    assert job.status is JobStatus.failed and job.events[-1] == "job.failed"
    assert [a["request_id"] for a in job.attempts] == ["req-1"]
    assert job.settled_requests == ["req-1", "req-2"]


def test_a_resubmit_fal_refused_is_not_a_second_request_at_fal() -> None:
    """The retry policy's one resubmit of an ambiguous submit fails before reaching fal: the
    submit after it is still the only other request that may exist (found by hypothesis)."""
    events: list[tuple[lc.Event, int]] = [
        (lc.SubmitStarting(), 0),
        (lc.SubmitAmbiguous("timeout"), 0),
        (lc.AmbiguousDue(), 200),
        (lc.SubmitStarting(), 0),
        (lc.SubmitFailed("503", None), 0),
        (lc.SubmitStarting(), 10),
    ]
    job, _ = run(events, replace(POLICY, retry_ambiguous=True))
    assert job.submit_state is SubmitState.sending and job.peak_at_fal == 2


def test_no_cache_hit_after_a_submit_the_retry_policy_sends_again() -> None:
    """The ambiguous request may still run at fal: the job's own run decides it (found by
    hypothesis)."""
    job = FakeJob()
    policy = replace(POLICY, retry_ambiguous=True)
    apply(job, lc.SubmitStarting(), T0, policy)
    apply(job, lc.SubmitAmbiguous("timeout"), T0, policy)
    apply(job, lc.AmbiguousDue(), T0 + timedelta(seconds=200), policy)
    assert job.submit_state is SubmitState.pending  # to be sent again
    hit = lc.CacheHit(uuid.uuid4(), {"prompt": "x"}, "k" * 64, None)
    t = apply(job, hit, T0 + timedelta(seconds=201), policy)
    assert not job.status.terminal and t.settle is None and job.cache_source_id is None


def test_a_deadline_after_a_fallback_from_a_model_that_ran_cancels_rather_than_aborts() -> None:
    """aborted says the job cost nothing: not so once a model it fell back from ran at fal."""
    job = FakeJob(candidates=candidates(2), cancel_after_at=T0 + timedelta(seconds=30))
    apply(job, lc.SubmitStarting(), T0)
    apply(job, submitted("req-1"), T0)
    apply(job, _runner_error(), T0 + timedelta(seconds=5))
    assert job.status is JobStatus.queued and job.attempts[0]["request_id"] == "req-1"
    apply(job, lc.DeadlinePassed(), T0 + timedelta(seconds=30))
    assert job.status is JobStatus.canceled and job.events[-1] == "job.canceled"
    never_sent = FakeJob(candidates=candidates(2), cancel_after_at=T0 + timedelta(seconds=30))
    apply(never_sent, lc.InputRejected("video_too_long", "too long"), T0)  # nothing sent
    apply(never_sent, lc.DeadlinePassed(), T0 + timedelta(seconds=30))
    assert never_sent.status is JobStatus.aborted
