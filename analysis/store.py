"""Firestore `analysisJobs/{jobId}`: every write to a job, each in one transaction that
checks the move against `states.TABLE` and bumps the job's `seq` (the SSE event id), plus
the seen webhook ids (`analysisJobs/{jobId}/deliveries/{webhookId}`), the call's analysis
fields and the auto-analysis sweep's cursor.

Times are Firestore timestamps (aware datetimes), so the sweep's range queries order them
exactly; answers render them as ISO 8601.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from google.api_core import exceptions as gexc
from google.cloud import firestore

from analysis.states import Ignore, Move, Status, decide
from integrations.firebase import firestore_async_client, firestore_client

JOBS = "analysisJobs"
DELIVERIES = "deliveries"
_MAX_ATTEMPTS = 25


class StoreContention(Exception):
    """A transaction kept losing to concurrent writers."""


def _jobs():
    return firestore_client().collection(JOBS)


def job_read(job_id: str) -> dict | None:
    snap = _jobs().document(job_id).get()
    return snap.to_dict() if snap.exists else None


async def job_read_async(job_id: str) -> dict | None:
    """`job_read` on the running event loop (the ASGI event streams): no thread per reader."""
    snap = await firestore_async_client().collection(JOBS).document(job_id).get()
    return snap.to_dict() if snap.exists else None


def job_create(job: dict) -> tuple[dict, bool]:
    """Create `job` atomically: (the job, True), or (the job that exists, False)."""
    ref = _jobs().document(job["jobId"])
    try:
        ref.create(job)
    except gexc.Conflict:
        return ref.get().to_dict(), False
    return job, True


@dataclass(frozen=True)
class Applied:
    job: dict | None  # after the change (None: no such job)
    changed: bool  # a write happened (seq bumped)
    moved_to: Status | None = None  # the status the change moved to
    duplicate: bool = False  # the delivery id was seen before: nothing was applied


# changes(job) -> fields to write, or None to write nothing (e.g. a lower progress)
Changes = Callable[[dict], dict | None]


def job_apply(job_id: str, event: str, changes: Changes, *, now: datetime,
              delivery_id: str | None = None) -> Applied:
    """Apply `event` (see `states.TABLE`) with `changes(job)` in one transaction: read,
    decide, write with `seq` + 1 and `updatedAt`. With `delivery_id` (a webhook id) the
    delivery is recorded in the same transaction, and one seen before applies nothing."""
    ref = _jobs().document(job_id)
    delivery = ref.collection(DELIVERIES).document(delivery_id) if delivery_id else None

    @firestore.transactional
    def run(transaction) -> Applied:
        if delivery is not None and delivery.get(transaction=transaction).exists:
            current = ref.get(transaction=transaction)
            return Applied(current.to_dict() if current.exists else None, False,
                           duplicate=True)
        snap = ref.get(transaction=transaction)
        if not snap.exists:
            return Applied(None, False)
        job = snap.to_dict()
        decision = decide(job["status"], event)
        fields = changes(job) if isinstance(decision, Move) else None
        if delivery is not None:
            transaction.create(delivery, {"event": event, "receivedAt": now,
                                          "applied": fields is not None})
        if isinstance(decision, Ignore) or fields is None:
            return Applied(job, False)
        fields = {**fields, "status": decision.to.value, "seq": int(job.get("seq") or 0) + 1,
                  "updatedAt": now}
        transaction.update(ref, fields)
        return Applied({**job, **fields}, True, moved_to=decision.to)

    try:
        return run(firestore_client().transaction(max_attempts=_MAX_ATTEMPTS))
    except gexc.Aborted as exc:
        raise StoreContention(str(exc)) from exc
    except ValueError as exc:  # the client's "still aborted after N attempts"
        if isinstance(exc.__cause__, gexc.Aborted):
            raise StoreContention(str(exc)) from exc
        raise


def jobs_due(*, now: datetime, limit: int) -> list[dict]:
    """Queued jobs whose next dispatch attempt is due, the longest waiting first."""
    query = (_jobs().where(filter=firestore.FieldFilter("status", "==", Status.QUEUED.value))
             .where(filter=firestore.FieldFilter("nextAttemptAt", "<=", now))
             .order_by("nextAttemptAt").limit(limit))
    return [snap.to_dict() for snap in query.stream()]


def jobs_stale(*, updated_before: datetime, limit: int) -> list[dict]:
    """Processing jobs that have not changed since `updated_before`."""
    query = (_jobs().where(filter=firestore.FieldFilter("status", "==",
                                                        Status.PROCESSING.value))
             .where(filter=firestore.FieldFilter("updatedAt", "<", updated_before))
             .order_by("updatedAt").limit(limit))
    return [snap.to_dict() for snap in query.stream()]


def call_analysis_set(call_id: str, *, job_id: str, summary: str | None) -> None:
    """The call's `analysisId` (its latest completed analysis) and `aiSummary` (when the
    analysis summarised it)."""
    fields: dict = {"analysisId": job_id}
    if summary:
        fields["aiSummary"] = summary
    try:
        firestore_client().collection("calls").document(call_id).update(fields)
    except gexc.NotFound:
        pass  # the call is gone; the job and the recording keep the result


_CURSOR = ("sweeps", "analysisAuto")


def auto_cursor_read() -> str | None:
    """The `updatedAt` of the last completed recording the auto-analysis sweep looked at."""
    snap = firestore_client().collection(_CURSOR[0]).document(_CURSOR[1]).get()
    return (snap.to_dict() or {}).get("after") if snap.exists else None


def auto_cursor_write(after: str) -> None:
    firestore_client().collection(_CURSOR[0]).document(_CURSOR[1]).set({"after": after})
