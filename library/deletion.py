"""Deleting recordings: one (a participant or an admin), every recording of a user's
calls (the user or an admin, with the user's analysis jobs), and the sweep's parts that
finish interrupted deletions and apply `RECORDING_RETENTION_DAYS`.

A deletion moves the document to `deleting` first (never served from then on), deletes
its Storage objects (the WAV, the original, the analysis transcripts), then leaves a
tombstone: `status: deleted`, `deletedAt`, `deletedBy`, no url and no paths. When Storage
fails the document stays `deleting` and the sweep finishes it.
"""

from __future__ import annotations

from datetime import datetime, timedelta

import structlog
from django.conf import settings
from google.cloud import firestore

from core.clock import iso, utc_now
from core.errors import Forbidden, RecordingNotReady
from core.principal import Principal
from integrations.firebase import firestore_client
from library.uploads import _kept_file
from media import storage
from recordings import store
from recordings.access import access_recording
from recordings.states import Status, sources_of

log = structlog.get_logger("library.deletion")

ANALYSIS_JOBS = "analysisJobs"
_DELETABLE = frozenset(s.value for s in sources_of("delete") if s is not None)
_PAGE = 200


def _analysis_jobs_of(recording: dict) -> dict[str, dict]:
    """The analysis jobs the recording (or its call) names, or that name it: {id: job}."""
    db = firestore_client()
    ids = {recording["analysisId"]} if recording.get("analysisId") else set()
    call = store.call_read(recording["callId"]) if recording.get("callId") else None
    if call and call.get("analysisId") and call.get("recordingId") == recording["recordingId"]:
        ids.add(call["analysisId"])
    jobs = {job_id: (db.collection(ANALYSIS_JOBS).document(job_id).get().to_dict() or {})
            for job_id in ids}
    query = db.collection(ANALYSIS_JOBS).where(
        filter=firestore.FieldFilter("recordingId", "==", recording["recordingId"]))
    for snap in query.limit(_PAGE).stream():
        jobs[snap.id] = snap.to_dict()
    return jobs


def _objects_of(recording: dict) -> list[str]:
    names = [recording.get("storagePath"), recording.get("originalPath")]
    for job_id, job in _analysis_jobs_of(recording).items():
        names.append(f"analysis/{job_id}.json")
        names.append(((job or {}).get("result") or {}).get("transcriptPath"))
    return list(dict.fromkeys(name for name in names if name))


def _answer(recording: dict) -> dict:
    return {"success": True, "recordingId": recording["recordingId"],
            "status": recording["status"], "deletedAt": recording.get("deletedAt"),
            "deletedBy": recording.get("deletedBy")}


def _purge(recording: dict, *, now: datetime) -> dict:
    """Delete the objects of a `deleting` recording, then leave the tombstone; on a
    Storage failure it stays `deleting` (with `deleteError`) for the sweep."""
    recording_id = recording["recordingId"]
    try:
        for name in _objects_of(recording):
            storage.recording_delete(object_name=name)
    except storage.StorageError as exc:
        log.warning("recording_delete_storage_failed", recording_id=recording_id,
                    error=exc.code)
        store.recording_update(recording_id, {"deleteError": exc.code,
                                              "updatedAt": iso(now)})
        return {**recording, "deleteError": exc.code}
    kept = _kept_file(recording) if recording.get("source") == "upload" else None
    if kept is not None:  # a failed upload's original waiting on this server's disk
        kept.unlink(missing_ok=True)
    done = store.recording_move(recording_id, "purge", {
        "deletedAt": iso(now), "updatedAt": iso(now), "storagePath": None,
        "originalPath": None, "url": None, "storedBytes": 0, "deleteError": None})
    return done or store.recording_read(recording_id) or recording


def recording_remove(recording: dict, *, by: str, now: datetime | None = None) -> dict:
    """Delete `recording` (already access-checked) on behalf of `by`; returns it after
    (`deleted`, or `deleting` when Storage failed). A deleted one is answered as is."""
    now = now or utc_now()
    if recording["status"] == Status.DELETED:
        return recording
    if recording["status"] not in _DELETABLE:
        raise RecordingNotReady(f"The recording is {recording['status']}; delete it once it "
                                "has completed or failed.", status=recording["status"])
    moved = store.recording_move(recording["recordingId"], "delete", {
        "deletedBy": by, "deleteRequestedAt": iso(now), "updatedAt": iso(now), "url": None})
    if moved is None:  # changed since read
        current = store.recording_read(recording["recordingId"]) or recording
        if current["status"] == Status.DELETED:
            return current
        raise RecordingNotReady(f"The recording is {current['status']}.",
                                status=current["status"])
    log.info("recording_deleting", recording_id=recording["recordingId"], by=by)
    return _purge(moved, now=now)


def recording_delete(*, principal: Principal, recording_id: str) -> tuple[int, dict]:
    """DELETE one recording (a participant or an admin): 200 deleted, 202 deleting."""
    recording = access_recording(principal, recording_id)
    after = recording_remove(recording, by=principal.uid)
    return (200 if after["status"] == Status.DELETED else 202), _answer(after)


def user_recordings_delete(*, principal: Principal, uid: str) -> dict:
    """Every recording of `uid`'s calls, and `uid`'s analysis jobs (the user or an admin)."""
    if not (principal.admin or principal.uid == uid):
        raise Forbidden("Only the user or an admin can delete a user's recordings.",
                        code="not_the_user")
    counts = {"deleted": 0, "deleting": 0, "skipped": 0}
    cursor = None
    while True:
        page = store.recordings_of(uid, limit=_PAGE, cursor=cursor, include_gone=True)
        for recording in page.items:
            if recording["status"] == Status.DELETED:
                continue
            try:
                after = recording_remove(recording, by=principal.uid)
            except RecordingNotReady:
                counts["skipped"] += 1  # still uploading or processing
                continue
            counts["deleted" if after["status"] == Status.DELETED else "deleting"] += 1
        if page.next_token is None:
            break
        cursor = page.next_token
    jobs = firestore_client().collection(ANALYSIS_JOBS).where(
        filter=firestore.FieldFilter("participants", "array_contains", uid))
    removed = 0
    for snap in jobs.stream():
        snap.reference.delete()
        removed += 1
    log.info("user_recordings_deleted", uid=uid, by=principal.uid, jobs=removed, **counts)
    return {"success": True, "uid": uid, **counts, "analysisJobsDeleted": removed}


def deletions_finish(*, now: datetime | None = None, limit: int = 100) -> dict:
    """The sweep's part: finish deletions Storage interrupted."""
    now = now or utc_now()
    finished = still = 0
    for recording in store.recordings_oldest([("status", "==", Status.DELETING.value)],
                                             limit=limit):
        after = _purge(recording, now=now)
        if after["status"] == Status.DELETED:
            finished += 1
        else:
            still += 1
    return {"finished": finished, "stillDeleting": still}


def recordings_expire(*, now: datetime | None = None, limit: int = 200) -> dict:
    """The sweep's part: delete recordings older than `RECORDING_RETENTION_DAYS` (0: keep
    them forever)."""
    days = settings.RECORDING_RETENTION_DAYS
    if days <= 0:
        return {"retentionDays": 0, "deleted": 0, "deleting": 0}
    now = now or utc_now()
    cutoff = iso(now - timedelta(days=days))
    counts = {"deleted": 0, "deleting": 0}
    for recording in store.recordings_recorded_before(
            cutoff, statuses=tuple(sorted(_DELETABLE - {Status.DELETING.value})), limit=limit):
        try:
            after = recording_remove(recording, by="retention", now=now)
        except RecordingNotReady:
            continue
        counts["deleted" if after["status"] == Status.DELETED else "deleting"] += 1
    if any(counts.values()):
        log.info("recordings_expired", days=days, **counts)
    return {"retentionDays": days, **counts}


def retention_state(*, now: datetime | None = None) -> dict:
    """The retention setting and how many recordings are past it (a count aggregation)."""
    days = settings.RECORDING_RETENTION_DAYS
    if days <= 0:
        return {"retentionDays": 0, "due": 0}
    cutoff = iso((now or utc_now()) - timedelta(days=days))
    statuses = sorted(_DELETABLE - {Status.DELETING.value})
    return {"retentionDays": days, "cutoff": cutoff, "due": store.recordings_count(
        [("status", "in", statuses), ("recordedAt", "<", cutoff)])}
