"""The recording library: recordings the apps upload (de-duplicated, converted to the
speech-ready WAV, kept until Storage has them), lookups, playback files, the admin
listing, upload statistics and retries. Recorder recordings and uploads are the same
kind of document (`recordings/{id}`, `source: recorder | upload`) and listed together.

An upload's life: `pending` (received, being converted) -> `uploading` (going to
Storage) -> `completed`, or `failed` with `error` when Storage could not take it. A
failed upload keeps its original on disk (`RECORDING_UPLOADS_DIR/<id>.<ext>`) or in
Storage, so `recording_retry` and the sweep can finish it later; nothing is lost.
"""

from __future__ import annotations

import os
import re
import shutil
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path

import structlog
from django.conf import settings

from api.auth import Principal
from api.errors import ApiError, Conflict, Forbidden, NotFound, ServiceUnavailable
from calls import store as call_store
from calls.states import actor_of
from library import store
from library.uploads import ReceivedFile
from media import audio, storage
from recorder.sink import iso, utc_now
from recorder_bridge.client import recorder_call

log = structlog.get_logger("library")

# Upload ids are uuid5(call id + sha256): the same bytes for the same call are one recording.
UPLOAD_NAMESPACE = uuid.UUID("6f0c8e8a-3f5e-5b8e-9d53-5c0b7e1a2f44")
STATUSES = ("pending", "uploading", "recording", "processing", "completed", "failed")
IN_PROGRESS = ("pending", "uploading")
SPEC = {"sampleRate": audio.WAV_SAMPLE_RATE, "channels": audio.WAV_CHANNELS,
        "bitDepth": audio.WAV_BITS}
MATCH_WINDOW = timedelta(minutes=2)  # check-exists by channel + timestamp

# ffmpeg's container name -> (extension, content type) of an original as stored.
_CONTAINERS = {
    "mp3": ("mp3", "audio/mpeg"),
    "mov,mp4,m4a,3gp,3g2,mj2": ("m4a", "audio/mp4"),
    "amr": ("amr", "audio/amr"),
    "wav": ("wav", "audio/wav"),
    "matroska,webm": ("webm", "audio/webm"),
    "ogg": ("ogg", "audio/ogg"),
    "flac": ("flac", "audio/flac"),
    "aac": ("aac", "audio/aac"),
}
_AMR_CODECS = ("amr_nb", "amr_wb")


class UnsupportedAudio(ApiError):
    code = "unsupported_audio"


# --- who may see what --------------------------------------------------------------------

def _call_for(principal: Principal, call_id: str) -> dict:
    call = call_store.call_read(call_id)
    if call is None:
        raise NotFound("No call with this id.", code="call_not_found")
    if not (principal.admin or actor_of(call, principal.uid) is not None):
        raise Forbidden("Only the call's participants or an admin can do this.",
                        code="not_in_call")
    return call


def _recording_for(principal: Principal, recording_id: str) -> dict:
    recording = store.recording_read(recording_id)
    if recording is None:
        raise NotFound("No recording with this id.", code="recording_not_found")
    if not (principal.admin or principal.uid in (recording.get("participants") or [])):
        raise Forbidden("Only the call's participants or an admin can do this.",
                        code="not_in_call")
    return recording


# --- uploads -----------------------------------------------------------------------------

def upload_id(call_id: str, sha256: str) -> str:
    return str(uuid.uuid5(UPLOAD_NAMESPACE, f"{call_id}:{sha256}"))


def _original_kind(info: audio.AudioInfo) -> tuple[str, str]:
    ext, content_type = _CONTAINERS.get(info.container, (None, None))
    if ext == "m4a" and info.codec in _AMR_CODECS:
        return "3gp", "audio/3gpp"
    if ext is None:
        ext = re.sub(r"[^a-z0-9]", "", info.container.split(",")[0].lower())[:8] or "bin"
        content_type = "application/octet-stream"
    return ext, content_type


_SERVER_SIDE_AUDIO_ERRORS = ("ffmpeg_missing", "timeout", "ffmpeg_failed")


def _audio_failure(exc: audio.AudioError, what: str) -> ApiError:
    """The file's fault (400 unsupported_audio) or the server's (503, the upload stays
    pending and the sweep finishes it)."""
    if exc.code in _SERVER_SIDE_AUDIO_ERRORS:
        log.error("audio_tools_failed", error=exc.code, detail=exc.message[:300])
        return ServiceUnavailable(f"The server cannot process audio right now ({exc.code}).",
                                  code="audio_unavailable", reason=exc.code)
    return UnsupportedAudio(f"{what} ({exc.code}).", reason=exc.code)


def _probe_upload(path: Path) -> audio.AudioInfo:
    try:
        info = audio.probe(path=path, timeout_s=120)
    except audio.AudioError as exc:
        raise _audio_failure(exc, "The file is not audio this server can read") from exc
    if not info.has_audio or info.duration_ms <= 0:
        raise UnsupportedAudio("The file holds no audio.", reason="not_audio")
    return info


def _safe_original_name(name: str | None) -> str | None:
    if not name:
        return None
    name = re.split(r"[/\\]", name)[-1]
    name = "".join(ch for ch in name if ch.isprintable()).strip().strip(".")
    return name[:200] or None


def _kept_path(recording_id: str, ext: str) -> Path:
    """Where an upload's original waits until Storage has it."""
    return settings.RECORDING_UPLOADS_DIR / f"{recording_id}.{ext}"


def _keep(received: Path, recording_id: str, ext: str) -> Path:
    """Link the received file to its kept name."""
    kept = _kept_path(recording_id, ext)
    temporary = kept.with_name(f".{kept.name}.{uuid.uuid4().hex}")
    try:
        os.link(received, temporary)
    except OSError:  # another filesystem: copy instead
        shutil.copyfile(received, temporary)
    os.replace(temporary, kept)
    return kept


def _kept_file(recording: dict) -> Path | None:
    kept = _kept_path(recording["recordingId"], recording.get("originalFormat") or "bin")
    return kept if kept.exists() else None


def _reopen(recording_id: str) -> dict | None:
    """failed -> pending for one more attempt, atomically; None if it was not failed."""
    return store.recording_move(recording_id, expect=("failed",), changes={
        "status": "pending", "error": None, "updatedAt": iso(utc_now()),
        "retryCount": lambda doc: int(doc.get("retryCount") or 0) + 1})


def recording_upload_receive(*, principal: Principal, call_id: str, received: ReceivedFile,
                             original_filename: str | None,
                             declared_duration: int | None) -> tuple[int, dict]:
    """Take a recording an app uploads for one of its calls: (HTTP status, answer).

    200: these bytes were already uploaded for this call (the existing recording).
    201: stored (original and WAV in Storage, `completed`).
    202: kept on the server but Storage failed (`failed`, retried by the sweep).
    Raises UnsupportedAudio (nothing stored) for a file that is not readable audio.
    """
    call = _call_for(principal, call_id)
    recording_id = upload_id(call_id, received.sha256)
    existing = store.recording_read(recording_id)
    if existing and existing["status"] != "failed":
        return 200, _upload_answer(existing, duplicate=True)
    info = _probe_upload(Path(received.temporary_file_path()))
    ext, content_type = _original_kind(info)
    now = iso(utc_now())
    if existing:
        claimed = _reopen(recording_id)
        if claimed is None:
            return 200, _upload_answer(store.recording_read(recording_id), duplicate=True)
    else:
        caller, receiver = call["callerId"], call["receiverId"]
        created, claimed = store.recording_claim(recording_id, {
            "sid": recording_id, "callId": call_id, "channel": call.get("channelName"),
            "groupId": call.get("groupId"), "user1": caller, "user2": receiver,
            "participants": [caller, receiver], "pair": store.pair_key(caller, receiver),
            "source": "upload", "status": "pending", "error": None, "retryCount": 0,
            "uploadedBy": principal.uid,
            "originalFilename": _safe_original_name(original_filename)
                                or _safe_original_name(received.name),
            "originalFormat": ext, "originalContentType": content_type,
            "originalSize": received.size, "originalPath": None,
            "sha256": received.sha256, "declaredDuration": declared_duration,
            "duration": info.duration_ms, "format": "wav", "spec": SPEC,
            "filename": f"{recording_id}.wav", "storagePath": None, "url": None,
            "fileSize": None, "storedBytes": 0,
            "recordedAt": iso(call.get("answeredAt") or call.get("createdAt")) or now,
            "createdAt": now, "updatedAt": now, "uploadedAt": None,
        })
        if not created:
            return 200, _upload_answer(claimed, duplicate=True)
    kept = _keep(Path(received.temporary_file_path()), recording_id, ext)
    try:
        finished = _process(claimed, source=kept)
    except UnsupportedAudio as exc:
        # Converting failed although probing passed: a new recording is forgotten
        # entirely; one that existed goes back to failed, its file kept.
        if existing:
            store.recording_update(recording_id, {"status": "failed",
                                                  "error": exc.extra["reason"],
                                                  "updatedAt": iso(utc_now())})
        else:
            store.recording_delete(recording_id)
            kept.unlink(missing_ok=True)
        raise
    return (201 if finished["status"] == "completed" else 202), _upload_answer(finished)


def _upload_answer(recording: dict, *, duplicate: bool = False) -> dict:
    answer = {"success": True, "recordingId": recording["recordingId"],
              "callId": recording.get("callId"), "status": recording["status"],
              "duration": recording.get("duration"), "format": recording.get("format"),
              "fileSize": recording.get("fileSize"), "duplicate": duplicate}
    if recording["status"] == "failed":
        answer["error"] = recording.get("error")
    return answer


def _process(recording: dict, *, source: Path) -> dict:
    """Convert `source` (the original) to the WAV and put both in Storage; returns the
    recording as stored (`completed`, or `failed` with the Storage error)."""
    recording_id = recording["recordingId"]
    wav = settings.RECORDING_UPLOADS_DIR / f".{recording_id}.{uuid.uuid4().hex}.wav"
    try:
        try:
            converted = audio.convert_to_wav(src=source, dst=wav, allow_truncated=True)
        except audio.AudioError as exc:
            raise _audio_failure(exc, "The file could not be converted") from exc
        changes = {"status": "uploading", "updatedAt": iso(utc_now())}
        store.recording_update(recording_id, changes)
        recording = {**recording, **changes}
        try:
            original_path = recording.get("originalPath")
            if not original_path:
                original_path = f"recordings/originals/{recording_id}.{recording['originalFormat']}"
                storage.recording_upload(path=source, object_name=original_path,
                                         content_type=recording["originalContentType"],
                                         metadata={"recordingId": recording_id})
                store.recording_update(recording_id, {"originalPath": original_path})
            storage_path = f"recordings/uploads/{recording_id}.wav"
            stored = storage.recording_upload(path=wav, object_name=storage_path,
                                              content_type="audio/wav",
                                              metadata={"recordingId": recording_id,
                                                        "callId": recording.get("callId") or ""})
        except storage.StorageError as exc:
            changes = {"status": "failed", "error": exc.code, "updatedAt": iso(utc_now())}
            store.recording_update(recording_id, changes)
            log.warning("upload_storage_failed", recording_id=recording_id, error=str(exc))
            return {**recording, **changes}
        now = iso(utc_now())
        changes = {"status": "completed", "error": None, "originalPath": original_path,
                   "storagePath": storage_path, "url": stored.url,
                   "duration": converted.duration_ms, "fileSize": stored.size,
                   "storedBytes": stored.size + int(recording.get("originalSize") or 0),
                   "updatedAt": now, "uploadedAt": now}
        store.recording_update(recording_id, changes)
        if recording.get("callId"):
            call_store.call_update(recording["callId"], {"recordingId": recording_id})
        source.unlink(missing_ok=True)  # Storage has the original now
        log.info("upload_completed", recording_id=recording_id, bytes=stored.size)
        return {**recording, **changes}
    finally:
        wav.unlink(missing_ok=True)


# --- retries -----------------------------------------------------------------------------

def recording_retry(*, principal: Principal, recording_id: str) -> tuple[int, dict]:
    """Reprocess a failed recording (409 from any other status): an upload from its kept
    file or its stored original, a recorder recording by the recorder (which has it)."""
    recording = _recording_for(principal, recording_id)
    if recording["status"] != "failed":
        raise Conflict(f"Only a failed recording can be retried; this one is "
                       f"{recording['status']}.", code="not_failed",
                       status=recording["status"])
    if recording.get("source") == "recorder":
        return _retry_by_recorder(recording)
    return _retry_upload(recording)


def _retry_upload(recording: dict) -> tuple[int, dict]:
    recording_id = recording["recordingId"]
    kept = _kept_file(recording)
    if kept is None and not recording.get("originalPath"):
        raise Conflict("Neither this server nor Storage holds the original any more; "
                       "upload it again.", code="source_missing")
    claimed = _reopen(recording_id)
    if claimed is None:
        raise Conflict("The recording is being retried already.", code="not_failed",
                       status=(store.recording_read(recording_id) or {}).get("status"))
    if kept is not None:
        return _finish_retry(claimed, kept)
    downloaded = settings.RECORDING_UPLOADS_DIR / f".{recording_id}.{uuid.uuid4().hex}.orig"
    try:
        settings.RECORDING_UPLOADS_DIR.mkdir(parents=True, exist_ok=True)
        storage.recording_download(object_name=claimed["originalPath"], dst=downloaded)
    except storage.StorageError as exc:
        lost = exc.code == "storage_not_found"
        store.recording_update(recording_id, {
            "status": "failed", "error": "source_missing" if lost else exc.code,
            "updatedAt": iso(utc_now())})
        if lost:
            raise Conflict("The original is gone from Storage; upload it again.",
                           code="source_missing") from exc
        raise ServiceUnavailable(f"Storage could not give back the original ({exc.code}).",
                                 code=exc.code) from exc
    try:
        return _finish_retry(claimed, downloaded)
    finally:
        downloaded.unlink(missing_ok=True)


def _finish_retry(recording: dict, source: Path) -> tuple[int, dict]:
    try:
        finished = _process(recording, source=source)
    except UnsupportedAudio as exc:
        store.recording_update(recording["recordingId"], {
            "status": "failed", "error": exc.extra["reason"],
            "updatedAt": iso(utc_now())})
        raise
    return (200 if finished["status"] == "completed" else 202), _upload_answer(finished)


def _retry_by_recorder(recording: dict) -> tuple[int, dict]:
    recording_id = recording["recordingId"]
    claimed = store.recording_move(recording_id, expect=("failed",), changes={
        "status": "processing", "updatedAt": iso(utc_now())})
    if claimed is None:
        raise Conflict("The recording is being retried already.", code="not_failed")
    try:
        answer = recorder_call("POST", "/recordings/retry", json={"sid": recording["sid"]})
    except ApiError:
        store.recording_update(recording_id, {"status": "failed"})
        raise
    if not answer.get("retrying"):
        store.recording_update(recording_id, {"status": "failed"})
        raise Conflict("The recorder no longer holds this recording's file.",
                       code="source_missing")
    return 202, _upload_answer(claimed)


def uploads_retry_due(*, now: datetime | None = None, limit: int = 20) -> dict:
    """The sweep's part: uploads interrupted mid-way (a worker died) become `failed`;
    failed uploads are retried up to RECORDING_UPLOAD_AUTO_RETRIES times. Bounded by
    `limit` per run so one sweep never runs long."""
    now = now or utc_now()
    stale_before = iso(now - timedelta(seconds=settings.RECORDING_UPLOAD_STALE_SECONDS))
    interrupted = 0
    for status in IN_PROGRESS:
        for recording in store.recordings_oldest(
                [("source", "==", "upload"), ("status", "==", status),
                 ("updatedAt", "<", stale_before)], limit=limit):
            if store.recording_move(recording["recordingId"], expect=(status,), changes={
                    "status": "failed", "error": "interrupted", "updatedAt": iso(now)}):
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
        except ApiError as exc:
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


# --- lookups -----------------------------------------------------------------------------

def _when(value: str) -> datetime:
    """An instant from epoch seconds or milliseconds, or ISO 8601 (UTC if no zone)."""
    value = value.strip()
    if re.fullmatch(r"\d{9,13}", value):
        number = int(value)
        return datetime.fromtimestamp(number / 1000 if len(value) >= 12 else number,
                                      tz=timezone.utc)
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise ApiError(f"{value!r} is not a time (epoch seconds or ms, or ISO 8601).",
                       code="validation_error") from None
    return moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)


def _iso_bound(moment: datetime) -> str:
    # Stored times are ISO strings ending in Z, maybe with fractions; a bound without
    # the Z sorts before every stored time of the same second.
    return moment.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S")


def recording_check_exists(*, principal: Principal, call_id: str | None, sha256: str | None,
                           channel: str | None, timestamp: str | None) -> dict:
    """Whether the server already holds a recording (any status) of a call, of a file
    (sha256), or on a channel around a time; the apps ask before uploading."""
    filters: list[store.Filter] = []
    if call_id:
        _call_for(principal, call_id)
        filters.append(("callId", "==", call_id))
    else:
        if not principal.admin:
            filters.append(("participants", "array_contains", principal.uid))
        if sha256:
            filters.append(("sha256", "==", sha256.lower()))
        else:
            filters.append(("channel", "==", channel))
            if timestamp:
                moment = _when(timestamp)
                filters += [("recordedAt", ">=", _iso_bound(moment - MATCH_WINDOW)),
                            ("recordedAt", "<", _iso_bound(moment + MATCH_WINDOW))]
    found = store.recordings_find(filters)
    recording = found[0] if found else None
    return {"exists": recording is not None,
            "recordingId": recording["recordingId"] if recording else None,
            "status": recording["status"] if recording else None}


def _has_recording(recording: dict | None, call_id: str | None) -> dict:
    return {"hasRecording": recording is not None,
            "callId": recording.get("callId") if recording else call_id,
            "recordingId": recording["recordingId"] if recording else None,
            "recordedAt": recording.get("recordedAt") if recording else None,
            "duration": recording.get("duration") if recording else None}


def call_has_recording(*, principal: Principal, call_id: str) -> dict:
    """The call's latest completed recording, if any."""
    _call_for(principal, call_id)
    found = store.recordings_find([("callId", "==", call_id), ("status", "==", "completed")])
    return _has_recording(found[0] if found else None, call_id)


def user_has_recording(*, principal: Principal, uid: str) -> dict:
    """The latest call of `uid` with a completed recording. The user and admins see all
    of the user's calls; anyone else only the calls they had with that user."""
    if principal.admin or principal.uid == uid:
        who = ("participants", "array_contains", uid)
    else:
        who = ("pair", "==", store.pair_key(principal.uid, uid))
    found = store.recordings_find([who, ("status", "==", "completed")])
    return _has_recording(found[0] if found else None, None)


# --- files for playback and download -------------------------------------------------------

@dataclass(frozen=True)
class MediaFile:
    object_name: str
    content_type: str
    filename: str  # for Content-Disposition


def recording_media(*, principal: Principal, recording_id: str, variant: str) -> MediaFile:
    """The Storage object to play or download: the WAV (`variant="wav"`, the default) or
    an upload's original (`"original"`)."""
    recording = _recording_for(principal, recording_id)
    stem = Path(recording.get("originalFilename") or recording.get("filename")
                or recording_id).stem or recording_id
    if variant == "original":
        if not recording.get("originalPath"):
            raise NotFound("This recording has no original file.", code="no_original")
        ext = recording.get("originalFormat") or "bin"
        return MediaFile(recording["originalPath"],
                         recording.get("originalContentType") or "application/octet-stream",
                         recording.get("originalFilename") or f"{stem}.{ext}")
    if recording["status"] != "completed" or not recording.get("storagePath"):
        raise Conflict(f"The recording is {recording['status']}, not playable yet.",
                       code="recording_not_ready", status=recording["status"])
    fmt = recording.get("format") or "wav"
    return MediaFile(recording["storagePath"], f"audio/{fmt}", f"{stem}.{fmt}")


# --- admin ---------------------------------------------------------------------------------

def _day_or_time(value: str, *, end: bool) -> str:
    if re.fullmatch(r"\d{4}-\d{2}-\d{2}", value):
        day = datetime.fromisoformat(value).replace(tzinfo=timezone.utc)
        return _iso_bound(day + timedelta(days=1) if end else day)
    moment = _when(value)
    return _iso_bound(moment + timedelta(seconds=1) if end else moment)


_LISTED = ("recordingId", "callId", "sid", "channel", "groupId", "user1", "user2",
           "participants", "source", "status", "error", "retryCount", "duration", "fileSize",
           "format", "originalFilename", "originalFormat", "originalSize", "recordedAt",
           "createdAt", "uploadedAt")


def recordings_admin_list(*, date_from: str | None, date_to: str | None,
                          group_id: str | None, user_id: str | None, status: str | None,
                          source: str | None, fmt: str | None, limit: int,
                          page_token: str | None) -> dict:
    """Recordings of every source, newest first, filtered; `total` counts every match."""
    filters: list[store.Filter] = []
    if date_from:
        filters.append(("recordedAt", ">=", _day_or_time(date_from, end=False)))
    if date_to:
        filters.append(("recordedAt", "<", _day_or_time(date_to, end=True)))
    if len(filters) == 2 and filters[0][2] >= filters[1][2]:
        raise ApiError("date_from must be before date_to.", code="validation_error")
    for field, value in (("groupId", group_id), ("status", status), ("source", source),
                         ("format", fmt)):
        if value:
            filters.append((field, "==", value))
    if user_id:
        filters.append(("participants", "array_contains", user_id))
    try:
        page = store.recordings_page(filters, limit=limit, page_token=page_token)
    except store.BadPageToken:
        raise ApiError("next_page_token does not name a recording (it was deleted?).",
                       code="bad_page_token") from None
    return {"recordings": [{key: item.get(key) for key in _LISTED} for item in page.items],
            "total": store.recordings_count(filters), "limit": limit,
            "nextPageToken": page.next_token}


def recordings_upload_status(*, source: str | None = None) -> dict:
    """Counts per status, the last completed upload and the bytes in Storage, from
    aggregation queries (no document is read but the one last upload)."""
    base: list[store.Filter] = [("source", "==", source)] if source else []
    counts = {status: store.recordings_count([*base, ("status", "==", status)])
              for status in STATUSES}
    last = None
    if source in (None, "upload"):
        found = store.recordings_find([("source", "==", "upload"), ("status", "==", "completed")],
                                      newest="uploadedAt")
        last = found[0] if found else None
    return {**counts, "total": sum(counts.values()),
            "lastUpload": last.get("uploadedAt") if last else None,
            "lastUploadId": last["recordingId"] if last else None,
            "storageUsed": store.recordings_sum(base, "storedBytes")}
