"""A job's life, decided: (the job as it stands, what happened) → the transition to write.

Pure: no I/O, no clock (``now`` is given), no database. The steps (app.jobs.steps) do the
effects — fetch the input, talk to fal, store the outputs — and say what happened as an *event*
of this module; the store (app.jobs.store) locks the job's row, asks ``decide`` and writes the
``Transition`` it answers in one transaction: the row's new values, the event log entry, the
usage settlement, the wake-up. So "who can move a job from A to B, and what does it cost" has one
answer, here, and it is tested without Postgres or fal (tests/jobs/test_lifecycle.py).

    queued ──dispatch──▶ (submit: pending → sending → submitted | ambiguous)
       │                      │
       │ cancel               ▼
       ▼                 starting ──▶ processing ──▶ succeeded | failed | canceled
    canceled                  (fal: IN_QUEUE)   (IN_PROGRESS)   (COMPLETED, then the result)
    (aborted: its Cancel-After deadline passed before it started running at fal)

Rules the tests hold the machine to:
* a terminal job absorbs every event (nothing changes, nothing is billed again);
* usage is settled in exactly the transition that makes a job terminal;
* a request that may exist at fal (``sending``, ``ambiguous``, ``submitted``) is never followed
  by another submit, except an ambiguous one under the operator's explicit ``retry`` policy,
  once;
* a live job always has a next action time: nothing is stranded, and every job ends, at the
  latest when it times out;
* a job that names several models moves on to the next only for a failure that is not the
  input's fault, never after an ambiguous submit or a cancel, at most ``max_attempts`` times
  (app.jobs.lifecycle.fallback); each request fal ran is settled once, when its attempt ends;
* a job with a Cancel-After deadline is next due no later than that deadline until it is
  canceled; it ends ``aborted`` (at no cost) only if it never ran at fal;
* a video longer than its model takes runs as segments, each a job of its own with this same
  life (app.jobs.lifecycle.segments); the job that split never goes to fal, and ends when its
  segments have;
* a result-cache hit (``CacheHit``) ends a job that never left the gateway ``succeeded`` at
  once, settled once at the cache's price, with no request to fal.
"""

from app.jobs.lifecycle.decide import decide, failure_code, upstream_error
from app.jobs.lifecycle.events import (
    AmbiguousDue,
    Attached,
    BudgetRefused,
    CacheHit,
    CancelRequested,
    CancelSent,
    CompletionReported,
    DeadlinePassed,
    Ended,
    Event,
    FoundMidSend,
    InputRejected,
    InputUnavailable,
    NeverReceived,
    OutputsUnavailable,
    Progress,
    Reschedule,
    RetryLater,
    SegmentRetried,
    SegmentsAssembled,
    SegmentsEnded,
    Split,
    SubmitAmbiguous,
    SubmitFailed,
    SubmitRefused,
    SubmitStarting,
    Submitted,
    Succeeded,
    TimedOut,
    UpstreamCompleted,
)
from app.jobs.lifecycle.transitions import (
    KEEP,
    MAX_LOG_LINES,
    NOTHING,
    JobLike,
    Keep,
    NotApplicable,
    Policy,
    Settle,
    SettleRequest,
    Transition,
    Wake,
)
from app.usage.billing import Outcome

__all__ = [
    "KEEP",
    "MAX_LOG_LINES",
    "NOTHING",
    "AmbiguousDue",
    "Attached",
    "BudgetRefused",
    "CacheHit",
    "CancelRequested",
    "CancelSent",
    "CompletionReported",
    "DeadlinePassed",
    "Ended",
    "Event",
    "FoundMidSend",
    "InputRejected",
    "InputUnavailable",
    "JobLike",
    "Keep",
    "NeverReceived",
    "NotApplicable",
    "Outcome",
    "OutputsUnavailable",
    "Policy",
    "Progress",
    "Reschedule",
    "RetryLater",
    "SegmentRetried",
    "SegmentsAssembled",
    "SegmentsEnded",
    "Settle",
    "SettleRequest",
    "Split",
    "SubmitAmbiguous",
    "SubmitFailed",
    "SubmitRefused",
    "SubmitStarting",
    "Submitted",
    "Succeeded",
    "TimedOut",
    "Transition",
    "UpstreamCompleted",
    "Wake",
    "decide",
    "failure_code",
    "upstream_error",
]
