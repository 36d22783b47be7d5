"""The jobs store: the only code that reads or writes ``jobs`` rows (and appends ``job_events``).

Everything a job goes through passes here: its insert, tenant-scoped reads, the workers' claims
and leases, and every transition. A transition is decided by app.jobs.lifecycle (pure) and
written by ``apply`` in one transaction with what must commit with it: the event log entry, the
usage ledger and budget settlement, a wake-up for the workers. Guards (the lease owner, the
status) are checked on the locked row, so a step that lost its lease writes nothing.

A few statements are on every job's way to fal (the insert, the claims, the 'sending' mark).
They run on the raw asyncpg connection of the engine's pool (app.db.driver) inside the function
that owns them: a caller sees one function, the tests cover it as one.
"""

from app.jobs.store.claims import (
    DISPATCH_LOCK,
    DispatchClaim,
    claim_dispatches,
    claim_follow_ups,
    extend_leases,
    give_back,
    job_from_row,
)
from app.jobs.store.fleet import finished_since
from app.jobs.store.liveness import (
    beat,
    beat_period,
    beats,
    forget,
    prune_beats,
    workers_alive,
)
from app.jobs.store.overview import LiveJobs, live_jobs
from app.jobs.store.rows import (
    NewJob,
    by_ids,
    cursor_of,
    events_for_tenant,
    get_for_tenant,
    insert,
    insert_unless_budgeted,
    known_request_ids,
    list_for_tenant,
    lock_for_tenant,
)
from app.jobs.store.segments import segments_of
from app.jobs.store.transitions import (
    Also,
    AlsoInSession,
    Applied,
    Find,
    JobStore,
    LeaseLost,
)
from app.jobs.store.upkeep import (
    add_event_partitions,
    look_again_at_fal,
    mark_data_removed,
    settle_blocked,
)
from app.jobs.store.wakeups import (
    EVENTS_CHANNEL,
    NOTIFY_CHANNEL,
    Waker,
    notify_workers,
    wake_reason,
)

__all__ = [
    "DISPATCH_LOCK",
    "EVENTS_CHANNEL",
    "NOTIFY_CHANNEL",
    "Also",
    "AlsoInSession",
    "Applied",
    "DispatchClaim",
    "Find",
    "JobStore",
    "LeaseLost",
    "LiveJobs",
    "NewJob",
    "Waker",
    "add_event_partitions",
    "beat",
    "beat_period",
    "beats",
    "by_ids",
    "claim_dispatches",
    "claim_follow_ups",
    "cursor_of",
    "events_for_tenant",
    "extend_leases",
    "finished_since",
    "forget",
    "get_for_tenant",
    "give_back",
    "insert",
    "insert_unless_budgeted",
    "job_from_row",
    "known_request_ids",
    "list_for_tenant",
    "live_jobs",
    "lock_for_tenant",
    "look_again_at_fal",
    "mark_data_removed",
    "notify_workers",
    "prune_beats",
    "segments_of",
    "settle_blocked",
    "wake_reason",
    "workers_alive",
]
