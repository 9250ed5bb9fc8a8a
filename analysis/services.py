"""Analysis jobs: start one for a completed recording, dispatch it to the analysis server,
apply the server's signed callbacks, read a job, and the sweep's part.

The protocol with the analysis server (`ANALYSIS_SERVER_URL`):
- we `POST {server}/jobs` `{job_id, audio_url, callback_url, duration_ms, spec, language}`,
  signed per Standard Webhooks (`analysis/signing.py`). 2xx: the job is processing; 429,
  5xx, a timeout or no connection: retried with exponential backoff (`nextAttemptAt`) up
  to ANALYSIS_MAX_ATTEMPTS, then failed; any other answer fails the job with its message.
- it `POST`s `{type: progress|completed|failed, progress, message, result}` to
  `callback_url` (`/api/webhooks/analysis?job_id=<id>`), signed the same way; the
  `webhook-id` header makes a delivery idempotent.
"""

from __future__ import annotations

import hashlib
import json
import re
import tempfile
import uuid
from datetime import datetime, timedelta
from pathlib import Path
from urllib.parse import quote

import structlog
from django.conf import settings

from analysis import client, signing, store
from analysis.states import FINAL, Status
from core.clock import iso, utc_now
from core.errors import (
    AdminRequired,
    AnalysisFinished,
    AnalysisNotFound,
    AudioTokenInvalid,
    NotFound,
    NotInCall,
    RecordingNotReady,
    ValidationFailed,
    WebhookSignatureInvalid,
)
from core.principal import Principal
from library.lookups import MediaFile
from media import storage
from recordings import store as recordings
from recordings.access import access_recording

log = structlog.get_logger("analysis")

# Job ids are uuid5(recording id + generation): the first job of a recording has a known
# id, so two racing starts create one job; a new generation follows a failed or forced one.
JOB_NAMESPACE = uuid.UUID("0b6f3c1e-7a52-5d0e-8f4b-2c9d1e6a7b30")
WEBHOOK_EVENTS = ("progress", "completed", "failed")
MAX_SUMMARY_CHARS = 4000
MAX_METRICS_BYTES = 16 * 1024
BACKOFF_CAP_SECONDS = 3600
_SAFE_DOC_ID = re.compile(r"^[A-Za-z0-9_\-.:]{1,200}$")


def job_id_for(recording_id: str, generation: int) -> str:
    return str(uuid.uuid5(JOB_NAMESPACE, f"{recording_id}:{generation}"))


# --- reading ---------------------------------------------------------------------------------

def access_job(principal: Principal, job_id: str) -> dict:
    """The job, if `principal` is one of its recording's participants or an admin."""
    job = store.job_read(job_id)
    if job is None:
        raise AnalysisNotFound()
    if not (principal.admin or principal.uid in (job.get("participants") or [])):
        raise NotInCall()
    return job


def analysis_view(job: dict) -> dict:
    """A job as the API answers it: the seeds' `{status, progress, message, result}` and
    the job's own fields, times in ISO 8601."""
    return {
        "success": True, "jobId": job["jobId"], "status": job["status"],
        "progress": int(job.get("progress") or 0), "message": job.get("message"),
        "result": job.get("result"), "error": job.get("error"),
        "recordingId": job.get("recordingId"), "callId": job.get("callId"),
        "participants": job.get("participants") or [], "seq": int(job.get("seq") or 0),
        "attempts": int(job.get("attempts") or 0), "nextAttemptAt": iso(job.get("nextAttemptAt")),
        "engine": job.get("engine"), "requestedBy": job.get("requestedBy"),
        "createdAt": iso(job.get("createdAt")), "updatedAt": iso(job.get("updatedAt")),
        "completedAt": iso(job.get("completedAt")),
    }


def analysis_read(*, principal: Principal, job_id: str) -> dict:
    return analysis_view(access_job(principal, job_id))


# --- starting --------------------------------------------------------------------------------

def analysis_start(*, principal: Principal, recording_id: str,
                   force: bool = False) -> tuple[int, dict]:
    """Start analysing a completed recording: (202, the new job), or (200, the job it has
    already) unless that one failed or an admin forces a new one."""
    recording = access_recording(principal, recording_id)
    if force and not principal.admin:
        raise AdminRequired("Only an admin can force a new analysis of a recording.")
    if recording["status"] != "completed" or not recording.get("storagePath"):
        raise RecordingNotReady(f"The recording is {recording['status']}; only a completed "
                                "recording can be analysed.", status=recording["status"])
    job, created = analysis_create(recording=recording, requested_by=principal.uid,
                                   force=force)
    if created:
        job = _dispatch_quickly(job)
    return (202 if created else 200), analysis_view(job)


def _dispatch_quickly(job: dict) -> dict:
    """The one short dispatch try of the request that created `job`; whatever goes wrong
    leaves the job queued for the sweep (the job exists: the request still succeeds)."""
    try:
        return analysis_dispatch(job, now=utc_now(),
                                 timeout=settings.ANALYSIS_DISPATCH_QUICK_TIMEOUT_SECONDS)
    except Exception:
        log.exception("analysis_dispatch_crashed", job_id=job["jobId"])
        return store.job_read(job["jobId"]) or job


def analysis_create(*, recording: dict, requested_by: str,
                    force: bool = False) -> tuple[dict, bool]:
    """The recording's job: (the current one, False) unless it failed or `force`;
    otherwise (a new queued job, True), which the recording's `analysisId` then names and
    which supersedes (fails) a current one still running."""
    recording_id = recording["recordingId"]
    current = store.job_read(recording.get("analysisId") or job_id_for(recording_id, 0))
    if current is not None and current["status"] != Status.FAILED.value and not force:
        return current, False
    generation = int(current["generation"]) + 1 if current is not None else 0
    now = utc_now()
    job = {
        "jobId": job_id_for(recording_id, generation), "generation": generation,
        "recordingId": recording_id, "callId": recording.get("callId"),
        "participants": list(recording.get("participants") or []),
        "status": Status.QUEUED.value, "progress": 0, "seq": 1,
        "message": ("Waiting for the analysis server." if settings.ANALYSIS_SERVER_URL
                    else "Queued: no analysis server is configured (ANALYSIS_SERVER_URL)."),
        "attempts": 0, "nextAttemptAt": now, "engine": None, "result": None, "error": None,
        "createdAt": now, "updatedAt": now, "completedAt": None, "requestedBy": requested_by,
        "language": settings.ANALYSIS_LANGUAGE,
    }
    job, created = store.job_create(job)
    if not created:
        return job, False
    recordings.recording_update(recording_id, {"analysisId": job["jobId"]})
    if current is not None and current["status"] not in FINAL:
        store.job_apply(current["jobId"], "failed", lambda _: {
            "message": "Superseded by a new analysis.", "completedAt": now,
            "nextAttemptAt": None,
            "error": {"code": "superseded", "message": f"Superseded by {job['jobId']}."}},
            now=now)
    log.info("analysis_created", job_id=job["jobId"], recording_id=recording_id,
             requested_by=requested_by)
    return job, True


def analysis_auto_for_recording(sender=None, *, recording: dict, **_) -> None:
    """ANALYSIS_AUTO: a recording that became completed gets its job (and one quick
    dispatch try). Never raises: the upload that triggered it has succeeded already."""
    if not settings.ANALYSIS_AUTO or recording.get("analysisId"):
        return
    try:
        job, created = analysis_create(recording=recording, requested_by="auto")
        if created:
            _dispatch_quickly(job)
    except Exception:  # the sweep creates and dispatches it later
        log.exception("analysis_auto_failed", recording_id=recording.get("recordingId"))


# --- dispatching -----------------------------------------------------------------------------

def _backoff(attempts: int) -> timedelta:
    return timedelta(seconds=min(settings.ANALYSIS_RETRY_BASE_SECONDS * 2 ** (attempts - 1),
                                 BACKOFF_CAP_SECONDS))


def _public_url(path: str) -> str:
    return settings.ANALYSIS_CALLBACK_BASE_URL.rstrip("/") + path


def _audio_url(job: dict, recording: dict) -> str:
    """A signed Storage URL when the credentials can sign, else our own job-scoped URL."""
    signed = storage.recording_signed_url(object_name=recording["storagePath"],
                                          ttl_seconds=settings.ANALYSIS_AUDIO_URL_TTL_SECONDS)
    if signed:
        return signed
    return _public_url(f"/api/analysis/{job['jobId']}/audio?token="
                       f"{signing.audio_token(job['jobId'])}")


def _job_request(job: dict) -> dict:
    recording = recordings.recording_read(job["recordingId"])
    if recording is None or not recording.get("storagePath"):
        raise NotFound("The job's recording is gone.", code="recording_not_found")
    return {
        "job_id": job["jobId"], "audio_url": _audio_url(job, recording),
        "callback_url": _public_url(f"/api/webhooks/analysis?job_id={quote(job['jobId'])}"),
        "duration_ms": recording.get("duration"), "spec": recording.get("spec"),
        "language": job.get("language") or settings.ANALYSIS_LANGUAGE,
    }


def analysis_dispatch(job: dict, *, now: datetime, timeout: float) -> dict:
    """One attempt to hand a queued, due job to the analysis server; the job after it.

    The attempt is claimed first (nextAttemptAt moves past the request's timeout in a
    transaction), so two sweeps never post the same job at once."""
    if not settings.ANALYSIS_SERVER_URL:
        return job
    lease = now + timedelta(seconds=timeout + 30)

    def claim(current: dict) -> dict | None:
        due = current.get("nextAttemptAt")
        return {"nextAttemptAt": lease} if due is not None and due <= now else None

    claimed = store.job_apply(job["jobId"], "retry", claim, now=now)
    if not claimed.changed:
        return claimed.job or job
    job = claimed.job
    attempts = int(job.get("attempts") or 0) + 1
    try:
        outcome = client.job_post(_job_request(job), timeout=timeout)
    except (NotFound, storage.StorageError) as exc:
        outcome = client.Outcome("refused", None, str(exc))
    done = utc_now()
    if outcome.kind == "accepted":
        applied = store.job_apply(job["jobId"], "accepted", lambda _: {
            "attempts": attempts, "nextAttemptAt": None, "engine": outcome.engine,
            "message": "The analysis server accepted the job.", "error": None}, now=done)
    elif outcome.kind == "transient" and attempts < settings.ANALYSIS_MAX_ATTEMPTS:
        applied = store.job_apply(job["jobId"], "retry", lambda _: {
            "attempts": attempts, "nextAttemptAt": done + _backoff(attempts),
            "message": f"Retrying: {outcome.message}",
            "error": {"code": "analysis_unavailable", "message": outcome.message,
                      "httpStatus": outcome.status}}, now=done)
    else:
        code = "analysis_refused" if outcome.kind == "refused" else "analysis_unavailable"
        message = (outcome.message if outcome.kind == "refused" else
                   f"Gave up after {attempts} attempts: {outcome.message}")
        applied = store.job_apply(job["jobId"], "failed", lambda _: {
            "attempts": attempts, "nextAttemptAt": None, "completedAt": done,
            "message": message,
            "error": {"code": code, "message": message, "httpStatus": outcome.status}},
            now=done)
    log.info("analysis_dispatched", job_id=job["jobId"], outcome=outcome.kind,
             http_status=outcome.status, attempts=attempts)
    return applied.job or job


def analysis_sweep(*, now: datetime | None = None, limit: int = 20) -> dict:
    """The sweep's part: with ANALYSIS_AUTO, completed recordings without a job get one;
    due queued jobs are dispatched; jobs processing without news for
    ANALYSIS_STALE_SECONDS fail. Each step bounded by `limit` per run."""
    now = now or utc_now()
    created = _auto_create(limit=limit) if settings.ANALYSIS_AUTO else 0
    outcomes: dict[str, int] = {}
    if settings.ANALYSIS_SERVER_URL:
        for job in store.jobs_due(now=now, limit=limit):
            status = analysis_dispatch(job, now=now,
                                       timeout=settings.ANALYSIS_DISPATCH_TIMEOUT_SECONDS)["status"]
            outcomes[status] = outcomes.get(status, 0) + 1
    stale = 0
    for job in store.jobs_stale(
            updated_before=now - timedelta(seconds=settings.ANALYSIS_STALE_SECONDS),
            limit=limit):
        message = (f"No news from the analysis server for "
                   f"{settings.ANALYSIS_STALE_SECONDS} s; giving up.")
        applied = store.job_apply(job["jobId"], "failed", lambda _, m=message: {
            "completedAt": now, "message": m, "error": {"code": "stale", "message": m}},
            now=now)
        stale += applied.changed
    return {"created": created, "dispatched": outcomes, "stale": stale}


def _auto_create(*, limit: int) -> int:
    """Jobs for completed recordings that have none, in the order they completed (the
    recorder process writes its recordings itself, so they are found here)."""
    cursor = store.auto_cursor_read() or ""
    found = recordings.recordings_oldest([("status", "==", "completed"),
                                          ("updatedAt", ">=", cursor)], limit=limit)
    created = 0
    for recording in found:
        if not recording.get("analysisId") and recording.get("storagePath"):
            created += analysis_create(recording=recording, requested_by="auto")[1]
    if found and found[-1].get("updatedAt"):
        store.auto_cursor_write(found[-1]["updatedAt"])
    return created


# --- callbacks from the analysis server ------------------------------------------------------

def _delivery_id(webhook_id: str) -> str:
    """A Firestore document id for a webhook id (opaque ids are hashed)."""
    if _SAFE_DOC_ID.match(webhook_id) and not webhook_id.startswith("__"):
        return webhook_id
    return "sha256-" + hashlib.sha256(webhook_id.encode()).hexdigest()


def _payload(body: bytes) -> dict:
    try:
        payload = json.loads(body)
    except ValueError:
        raise ValidationFailed("The webhook body is not JSON.")
    if not isinstance(payload, dict):
        raise ValidationFailed("The webhook body must be a JSON object.")
    if "type" not in payload and isinstance(payload.get("analysis_results"), dict):
        # The seeds' analysis-complete body: `{"analysis_results": {...}}`.
        payload = {**payload, "type": "completed", "result": payload["analysis_results"]}
    if payload.get("type") not in WEBHOOK_EVENTS:
        raise ValidationFailed("type must be one of: " + ", ".join(WEBHOOK_EVENTS) + ".")
    progress = payload.get("progress")
    if progress is not None and (isinstance(progress, bool)
                                 or not isinstance(progress, (int, float))
                                 or not 0 <= progress <= 100):
        raise ValidationFailed("progress must be a number from 0 to 100.")
    for name, kind in (("message", str), ("result", dict)):
        if payload.get(name) is not None and not isinstance(payload[name], kind):
            raise ValidationFailed(f"{name} must be a {kind.__name__}.")
    return payload


def _transcript(raw) -> dict | None:
    if isinstance(raw, str):
        return {"text": raw, "segments": []}
    if isinstance(raw, dict):
        segments = raw.get("segments")
        return {"text": str(raw.get("text") or ""),
                "segments": segments if isinstance(segments, list) else []}
    return None


def _store_transcript(job: dict, transcript: dict, language) -> str:
    """The transcript as JSON in Storage at `analysis/<jobId>.json`; its object name."""
    object_name = f"analysis/{job['jobId']}.json"
    document = {"jobId": job["jobId"], "recordingId": job.get("recordingId"),
                "language": language, **transcript}
    with tempfile.TemporaryDirectory(prefix="memharbor-transcript-") as folder:
        path = Path(folder) / "transcript.json"
        path.write_text(json.dumps(document, ensure_ascii=False), encoding="utf-8")
        try:
            storage.recording_upload(path=path, object_name=object_name,
                                     content_type="application/json; charset=utf-8",
                                     metadata={"jobId": job["jobId"]})
        except storage.StorageError as exc:
            # Not 2xx: the analysis server delivers the result again later.
            raise storage.unavailable(exc, "Storage could not take the transcript") from exc
    return object_name


def _result(job: dict, raw: dict) -> dict:
    summary = raw.get("summary")
    summary = str(summary)[:MAX_SUMMARY_CHARS] if summary else None
    metrics = raw.get("metrics") if isinstance(raw.get("metrics"), dict) else None
    if metrics is not None and len(json.dumps(metrics)) > MAX_METRICS_BYTES:
        metrics = {"omitted": f"larger than {MAX_METRICS_BYTES} bytes"}
    transcriber = raw.get("transcriber")
    if transcriber is not None and not isinstance(transcriber, (str, dict)):
        transcriber = str(transcriber)
    language = raw.get("language") if isinstance(raw.get("language"), str) else None
    transcript = _transcript(raw.get("transcript"))
    path = _store_transcript(job, transcript, language) if transcript else None
    return {"summary": summary, "metrics": metrics, "language": language,
            "transcriber": transcriber, "transcriptPath": path}


def analysis_webhook(*, job_id: str, body: bytes, headers: dict[str, str]) -> dict:
    """Apply one signed callback: 401 unless its signature verifies, 404 for an unknown
    job; a delivery seen before (same `webhook-id`) and anything after the job's final
    state are answered 200 and change nothing. Progress never goes down."""
    try:
        signing.verify(body, headers)
    except signing.SignatureInvalid as exc:
        raise WebhookSignatureInvalid(f"The webhook signature is not valid: {exc}")
    payload = _payload(body)
    if payload.get("job_id") not in (None, job_id):
        raise ValidationFailed("The body's job_id is not the job_id of the URL.")
    job = store.job_read(job_id)
    if job is None:
        raise AnalysisNotFound()
    event, now = payload["type"], utc_now()
    message = payload.get("message")
    if event == "progress":
        wanted = min(int(payload["progress"]), 99) if payload.get("progress") is not None \
            else None  # 100 is for a completed job

        def changes(current: dict) -> dict | None:
            have = int(current.get("progress") or 0)
            if wanted is not None and wanted < have:
                return None  # late or out of order: progress never goes down
            fields = {"progress": max(have, wanted or 0)}
            if message:
                fields["message"] = message[:500]
            if current["status"] == Status.PROCESSING.value and all(
                    current.get(k) == v for k, v in fields.items()):
                return None  # nothing new
            return fields
    elif event == "completed":
        # The transcript is stored before the job says completed (a final job skips it).
        result = _result(job, payload.get("result") or {}) \
            if job["status"] not in FINAL else None

        def changes(current: dict) -> dict:
            return {"progress": 100, "result": result, "error": None, "nextAttemptAt": None,
                    "message": (message or "Analysis completed.")[:500], "completedAt": now}
    else:
        text = (message or "The analysis server reported a failure.")[:500]

        def changes(current: dict) -> dict:
            return {"message": text, "nextAttemptAt": None, "completedAt": now,
                    "error": {"code": "analysis_failed", "message": text}}
    applied = store.job_apply(job_id, event, changes, now=now,
                              delivery_id=_delivery_id(headers.get("webhook-id", "")))
    if applied.job is None:
        raise AnalysisNotFound()
    if applied.moved_to == Status.COMPLETED and applied.job.get("callId"):
        store.call_analysis_set(applied.job["callId"], job_id=job_id,
                                summary=(applied.job.get("result") or {}).get("summary"))
    log.info("analysis_webhook", job_id=job_id, kind=event, applied=applied.changed,
             duplicate=applied.duplicate, status=applied.job["status"])
    return {"success": True, "jobId": job_id, "applied": applied.changed,
            "duplicate": applied.duplicate, "status": applied.job["status"],
            "progress": int(applied.job.get("progress") or 0),
            "seq": int(applied.job.get("seq") or 0)}


# --- the job's own audio URL -----------------------------------------------------------------

def analysis_audio(*, job_id: str, token: str) -> MediaFile:
    """The recording a job analyses, for the holder of the job's audio token, while the
    job is not final."""
    if not signing.audio_token_valid(job_id, token):
        raise AudioTokenInvalid()
    job = store.job_read(job_id)
    if job is None:
        raise AnalysisNotFound()
    if job["status"] in FINAL:
        raise AnalysisFinished()
    recording = recordings.recording_read(job["recordingId"])
    if recording is None or not recording.get("storagePath"):
        raise NotFound("The job's recording is gone.", code="recording_not_found")
    fmt = recording.get("format") or "wav"
    return MediaFile(recording["storagePath"], f"audio/{fmt}", f"{job_id}.{fmt}")
