"""Recordings the apps upload: received on disk, de-duplicated, converted to the
speech-ready WAV, kept until Storage has them.

An upload's life (see `recordings/states.py`): `pending` (received, being converted) ->
`uploading` (going to Storage) -> `completed`, or `failed` with `error` when Storage could
not take it. A failed upload keeps its original on disk (`RECORDING_UPLOADS_DIR/<id>.<ext>`)
or in Storage, so a retry (`library/retries.py`) can finish it later; nothing is lost.
"""

from __future__ import annotations

import os
import re
import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path

import structlog
from django.conf import settings

from calls.access import access_call
from core.clock import iso, utc_now
from core.errors import AppError, AudioUnavailable, UnsupportedAudio
from core.principal import Principal
from library.events import recording_completed
from media import audio, storage
from recordings import store
from recordings.documents import recording_document

log = structlog.get_logger("library.uploads")

# Upload ids are uuid5(call id + sha256): the same bytes for the same call are one recording.
UPLOAD_NAMESPACE = uuid.UUID("6f0c8e8a-3f5e-5b8e-9d53-5c0b7e1a2f44")


@dataclass(frozen=True)
class Received:
    """A file an app sent, on disk (the web layer received it), with its sha256 (hex)."""

    path: Path
    sha256: str
    size: int
    name: str | None


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


def _audio_failure(exc: audio.AudioError, what: str) -> AppError:
    """The file's fault (400 unsupported_audio) or the server's (503, the upload stays
    pending and the sweep finishes it)."""
    if exc.code in _SERVER_SIDE_AUDIO_ERRORS:
        log.error("audio_tools_failed", error=exc.code, detail=exc.message[:300])
        return AudioUnavailable(f"The server cannot process audio right now ({exc.code}).",
                                reason=exc.code)
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
    return store.recording_move(recording_id, "reopen", {
        "error": None, "updatedAt": iso(utc_now()),
        "retryCount": lambda doc: int(doc.get("retryCount") or 0) + 1})


def recording_fail(recording_id: str, error: str) -> None:
    """Back to `failed` with `error` (from wherever the table allows)."""
    store.recording_move(recording_id, "fail", {"error": error, "updatedAt": iso(utc_now())})


def recording_upload_receive(*, principal: Principal, call_id: str, received: Received,
                             original_filename: str | None,
                             declared_duration: int | None) -> tuple[int, dict]:
    """Take a recording an app uploads for one of its calls: (HTTP status, answer).

    200: these bytes were already uploaded for this call (the existing recording).
    201: stored (original and WAV in Storage, `completed`).
    202: kept on the server but Storage failed (`failed`, retried by the sweep).
    Raises UnsupportedAudio (nothing stored) for a file that is not readable audio.
    """
    call = access_call(principal, call_id)
    recording_id = upload_id(call_id, received.sha256)
    existing = store.recording_read(recording_id)
    if existing and existing["status"] != "failed":
        return 200, _upload_answer(existing, duplicate=True)
    info = _probe_upload(received.path)
    ext, content_type = _original_kind(info)
    if existing:
        claimed = _reopen(recording_id)
        if claimed is None:
            return 200, _upload_answer(store.recording_read(recording_id), duplicate=True)
    else:
        document = recording_document(
            recording_id=recording_id, source="upload", status="pending", call=call,
            call_id=call_id, channel=call.get("channelName"),
            filename=f"{recording_id}.wav", fmt="wav",
            recorded_at=call.get("answeredAt") or call.get("createdAt"), now=utc_now(),
            uploadedBy=principal.uid,
            originalFilename=(_safe_original_name(original_filename)
                              or _safe_original_name(received.name)),
            originalFormat=ext, originalContentType=content_type,
            originalSize=received.size, originalPath=None, sha256=received.sha256,
            declaredDuration=declared_duration, duration=info.duration_ms)
        claimed = store.recording_move(recording_id, "receive", create=document)
        if claimed is None:
            return 200, _upload_answer(store.recording_read(recording_id), duplicate=True)
    kept = _keep(received.path, recording_id, ext)
    try:
        finished = _process(claimed, source=kept)
    except UnsupportedAudio as exc:
        # Converting failed although probing passed: a new recording is forgotten
        # entirely; one that existed goes back to failed, its file kept.
        if existing:
            recording_fail(recording_id, exc.extra["reason"])
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
        recording = store.recording_move(recording_id, "convert",
                                         {"updatedAt": iso(utc_now())}) or recording
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
            recording_fail(recording_id, exc.code)
            log.warning("upload_storage_failed", recording_id=recording_id, error=str(exc))
            return {**recording, "status": "failed", "error": exc.code}
        now = iso(utc_now())
        changes = {"error": None, "originalPath": original_path,
                   "storagePath": storage_path, "url": stored.url,
                   "duration": converted.duration_ms, "fileSize": stored.size,
                   "storedBytes": stored.size + int(recording.get("originalSize") or 0),
                   "updatedAt": now, "uploadedAt": now}
        finished = store.recording_move(recording_id, "store", changes)
        if finished is None:  # the sweep declared it interrupted meanwhile
            return store.recording_read(recording_id) or {**recording, **changes}
        if recording.get("callId"):
            store.call_recording_set(recording["callId"], recording_id)
        source.unlink(missing_ok=True)  # Storage has the original now
        log.info("upload_completed", recording_id=recording_id, bytes=stored.size)
        recording_completed.send(sender="library", recording=finished)
        return finished
    finally:
        wav.unlink(missing_ok=True)


