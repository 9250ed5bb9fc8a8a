"""Retrying recordings that failed: an upload from its kept file or its stored original, a
recorder recording by the recorder (which has the file); and the sweep's part (interrupted
uploads, automatic retries, files dead workers left)."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta
from pathlib import Path

import structlog
from django.conf import settings

from core.clock import iso, utc_now
from core.errors import AppError, NotFailed, SourceMissing, UnsupportedAudio
from core.principal import Principal
from library.uploads import _kept_file, _process, _reopen, _upload_answer, recording_fail
from media import storage
from recorder_bridge.client import recorder_call
from recordings import store
from recordings.access import access_recording
from recordings.states import Status

log = structlog.get_logger("library.retries")


def recording_retry(*, principal: Principal, recording_id: str) -> tuple[int, dict]:
    """Reprocess a failed recording (409 from any other status): an upload from its kept
    file or its stored original, a recorder recording by the recorder (which has it)."""
    recording = access_recording(principal, recording_id)
    if recording["status"] != "failed":
        raise NotFailed(f"Only a failed recording can be retried; this one is "
                        f"{recording['status']}.", status=recording["status"])
    if recording.get("source") == "recorder":
        return _retry_by_recorder(recording)
    return _retry_upload(recording)


def _retry_upload(recording: dict) -> tuple[int, dict]:
    recording_id = recording["recordingId"]
    kept = _kept_file(recording)
    if kept is None and not recording.get("originalPath"):
        raise SourceMissing("Neither this server nor Storage holds the original any more; "
                            "upload it again.")
    claimed = _reopen(recording_id)
    if claimed is None:
        raise NotFailed("The recording is being retried already.",
                        status=(store.recording_read(recording_id) or {}).get("status"))
    if kept is not None:
        return _finish_retry(claimed, kept)
    downloaded = settings.RECORDING_UPLOADS_DIR / f".{recording_id}.{uuid.uuid4().hex}.orig"
    try:
        settings.RECORDING_UPLOADS_DIR.mkdir(parents=True, exist_ok=True)
        storage.recording_download(object_name=claimed["originalPath"], dst=downloaded)
    except storage.StorageError as exc:
        lost = exc.code == "storage_not_found"
        recording_fail(recording_id, "source_missing" if lost else exc.code)
        if lost:
            raise SourceMissing("The original is gone from Storage; upload it again.") from exc
        raise storage.unavailable(exc, "Storage could not give back the original") from exc
    try:
        return _finish_retry(claimed, downloaded)
    finally:
        downloaded.unlink(missing_ok=True)


def _finish_retry(recording: dict, source: Path) -> tuple[int, dict]:
    try:
        finished = _process(recording, source=source)
    except UnsupportedAudio as exc:
        recording_fail(recording["recordingId"], exc.extra["reason"])
        raise
    return (200 if finished["status"] == "completed" else 202), _upload_answer(finished)


def _retry_by_recorder(recording: dict) -> tuple[int, dict]:
    recording_id = recording["recordingId"]
    claimed = store.recording_move(recording_id, "process", {"updatedAt": iso(utc_now())},
                                   expect=(Status.FAILED,))
    if claimed is None:
        raise NotFailed("The recording is being retried already.")
    try:
        answer = recorder_call("POST", "/recordings/retry", json={"sid": recording["sid"]})
    except AppError:
        recording_fail(recording_id, recording.get("error") or "retry_failed")
        raise
    if not answer.get("retrying"):
        recording_fail(recording_id, "source_missing")
        raise SourceMissing("The recorder no longer holds this recording's file.")
    return 202, _upload_answer(claimed)


def uploads_retry_due(*, now: datetime | None = None, limit: int = 20) -> dict:
    """The sweep's part: uploads interrupted mid-way (a worker died) become `failed`;
    failed uploads are retried up to RECORDING_UPLOAD_AUTO_RETRIES times. Bounded by
    `limit` per run so one sweep never runs long."""
    now = now or utc_now()
    stale_before = iso(now - timedelta(seconds=settings.RECORDING_UPLOAD_STALE_SECONDS))
    interrupted = 0
    for status in (Status.PENDING.value, Status.UPLOADING.value):
        for recording in store.recordings_oldest(
                [("source", "==", "upload"), ("status", "==", status),
                 ("updatedAt", "<", stale_before)], limit=limit):
            if store.recording_move(recording["recordingId"], "fail",
                                    {"error": "interrupted", "updatedAt": iso(now)},
                                    expect=(status,)):
                interrupted += 1
    removed = _remove_abandoned_files(older_than=now.timestamp()
                                      - settings.RECORDING_UPLOAD_STALE_SECONDS)
    retried = completed = 0
    for recording in store.recordings_oldest(
            [("source", "==", "upload"), ("status", "==", "failed")], limit=limit):
        if int(recording.get("retryCount") or 0) >= settings.RECORDING_UPLOAD_AUTO_RETRIES:
            continue
        if _kept_file(recording) is None and not recording.get("originalPath"):
            continue  # kept on another host's disk: that host's sweep retries it
        retried += 1
        try:
            status, _ = _retry_upload(recording)
        except AppError as exc:
            log.warning("upload_retry_failed", recording_id=recording["recordingId"],
                        error=exc.code)
            continue
        completed += status == 200
    if interrupted or retried or removed:
        log.info("uploads_retried", interrupted=interrupted, retried=retried,
                 completed=completed, abandoned_files_removed=removed)
    return {"interrupted": interrupted, "retried": retried, "completed": completed,
            "abandonedFilesRemoved": removed}


def _remove_abandoned_files(*, older_than: float) -> int:
    """Half-received bodies and half-converted WAVs of workers that died (hidden names in
    the uploads directory and its `.incoming`); kept originals are never touched."""
    removed = 0
    root = settings.RECORDING_UPLOADS_DIR
    for path in [*root.glob(".*"), *Path(settings.FILE_UPLOAD_TEMP_DIR).glob("*")]:
        try:
            if path.is_file() and path.stat().st_mtime < older_than:
                path.unlink()
                removed += 1
        except FileNotFoundError:
            continue  # finished (or removed) meanwhile
    return removed


