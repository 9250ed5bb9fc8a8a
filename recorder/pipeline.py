"""After a recording stops, in the recorder (which has the file): remux the browser WebM,
convert it to a speech-ready WAV (16 kHz mono s16), upload it to Storage at
`recordings/<channel>_<timestamp>.wav` and move Firestore `recordings/{sid}` through
`processing` to `completed`.

If conversion fails the WebM is uploaded instead (`format: webm`). Once stored and
`completed`, the local media (WebM, remux, WAV) are removed; the small JSON sidecar stays.
If Storage is down the files stay on disk, the sidecar and the document say `failed` with
the error, and the next recorder start retries (`recordings_retry`) until the recording is
`completed`.
Uses the shared `recordings` package and the Firebase/Storage integrations, configured
from this process's environment; no Django.
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
from pathlib import Path

from core.clock import iso, utc_now
from media import audio, storage
from recordings import store
from recordings.documents import recording_document

from .sink import write_json_atomically

log = logging.getLogger("recorder.pipeline")

RETRY_STATES = ("stopped", "processing", "failed")  # sidecars whose upload is not done
_in_progress: set[str] = set()  # sids being processed now, never twice at once
_in_progress_lock = threading.Lock()


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _save_sidecar(sidecar: Path, meta: dict, **fields) -> None:
    meta.update(fields)
    write_json_atomically(sidecar, meta)


def recording_finish(*, webm: Path, sid: str, channel: str, call_id: str | None) -> dict:
    """Process one stopped recording; returns the seed's stop fields (`filename`, `format`,
    `duration`, `groupId`, `user1`, `user2`, `firebase` or None, `status`). Never raises
    for an audio or Storage failure: that is recorded and answered."""
    with _in_progress_lock:
        if sid in _in_progress:
            return {"sid": sid, "status": "processing", "firebase": None}
        _in_progress.add(sid)
    try:
        return _finish(webm=webm, sid=sid, channel=channel, call_id=call_id)
    finally:
        with _in_progress_lock:
            _in_progress.discard(sid)


def _finish(*, webm: Path, sid: str, channel: str, call_id: str | None) -> dict:
    sidecar = webm.with_suffix(".json")
    meta = json.loads(sidecar.read_text(encoding="utf-8")) if sidecar.exists() else {}
    _save_sidecar(sidecar, meta, state="processing")
    call = store.call_read(call_id) if call_id else None
    if call is None:
        log.warning("recording %s: no call document (callId %s); stored without parties",
                    sid, call_id)

    remuxed = webm.with_name(webm.stem + ".remux.webm")
    wav = webm.with_suffix(".wav")
    try:
        audio.remux(src=webm, dst=remuxed, allow_truncated=True)
        converted = audio.convert_to_wav(src=remuxed, dst=wav, allow_truncated=True)
        upload, fmt, content_type = wav, "wav", "audio/wav"
        duration_ms = converted.duration_ms
    except audio.AudioError as exc:
        log.warning("recording %s: conversion failed (%s); keeping the WebM", sid, exc.code)
        upload = remuxed if remuxed.exists() else webm
        fmt, content_type = "webm", "audio/webm"
        duration_ms = meta.get("durationMs") or 0
    filename = webm.stem + f".{fmt}"
    storage_path = f"recordings/{filename}"
    retries = int(meta.get("retryCount", 0))
    document = recording_document(
        recording_id=sid, source="recorder", status="processing", call=call, call_id=call_id,
        channel=channel, filename=filename, fmt=fmt, recorded_at=meta.get("startedAt"),
        now=utc_now(), duration=duration_ms, fileSize=upload.stat().st_size,
        sha256=_sha256(upload), storagePath=storage_path, retryCount=retries,
        stopReason=meta.get("stopReason"), recorderNode=meta.get("nodeId"))
    fresh = {key: value for key, value in document.items() if key not in ("status", "createdAt")}
    if store.recording_move(sid, "process", fresh, create=document) is None:
        existing = store.recording_read(sid) or {}
        log.warning("recording %s is %s already; not processed again", sid,
                    existing.get("status"))
        return {**_answer(document), "status": existing.get("status"), "firebase": None}
    try:
        stored = storage.recording_upload(path=upload, object_name=storage_path,
                                          content_type=content_type,
                                          metadata={"sid": sid, "callId": call_id or ""})
    except storage.StorageError as exc:
        retries += 1
        store.recording_move(sid, "fail", {"url": None, "error": exc.code,
                                           "retryCount": retries,
                                           "updatedAt": iso(utc_now())})
        _save_sidecar(sidecar, meta, state="failed", error=exc.code, retryCount=retries)
        log.warning("recording %s: upload failed (%s); kept on disk for a retry", sid, exc.code)
        return {**_answer(document), "firebase": None, "status": "failed", "error": exc.code}
    now = iso(utc_now())
    moved = store.recording_move(sid, "store", {"url": stored.url, "error": None,
                                                "storedBytes": stored.size, "uploadedAt": now,
                                                "updatedAt": now})
    if call:
        store.call_recording_set(call_id, sid)
    _save_sidecar(sidecar, meta, state="completed", recordingId=sid, storagePath=storage_path,
                  format=fmt)
    if moved is not None:  # Storage has it and the document says completed
        recording_files_remove(webm)
    return {**_answer(document), "status": "stopped",
            "firebase": {"url": stored.url, "firestoreId": sid, "storagePath": storage_path}}


def _answer(document: dict) -> dict:
    keys = ("sid", "channel", "groupId", "user1", "user2", "filename", "format", "duration")
    return {key: document[key] for key in keys}


def _local_files(webm: Path) -> tuple[Path, ...]:
    return webm, webm.with_name(webm.stem + ".remux.webm"), webm.with_suffix(".wav")


def recording_files_remove(webm: Path) -> int:
    """Remove a stored recording's local media (the WebM, its remux, the WAV); the small
    sidecar stays as the record of what was done. Returns the bytes freed."""
    freed = 0
    for path in _local_files(webm):
        try:
            freed += path.stat().st_size
            path.unlink()
        except FileNotFoundError:
            pass
    return freed


def recordings_clean_completed(directory: Path) -> int:
    """At start-up: remove the media a previous process left of recordings whose sidecar
    and Firestore document both say completed (it stopped between the two); a recording
    whose document cannot be read now keeps its files. Returns the bytes freed."""
    freed = 0
    for sidecar in sorted(directory.glob("*.json")) if directory.is_dir() else []:
        try:
            meta = json.loads(sidecar.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        webm = sidecar.with_suffix(".webm")
        if meta.get("state") != "completed" or not any(p.exists() for p in _local_files(webm)):
            continue
        try:
            document = store.recording_read(meta.get("recordingId") or meta.get("sid") or "")
        except Exception as exc:  # Firestore down: the next start looks again
            log.warning("recording %s: cannot read its document (%s); files kept",
                        sidecar.stem, type(exc).__name__)
            continue
        if document is not None and document.get("status") == "completed":
            freed += recording_files_remove(webm)
    if freed:
        log.info("removed %d bytes of recordings already stored", freed)
    return freed


def recordings_to_retry(directory: Path, *, states: tuple[str, ...] = RETRY_STATES) -> list[dict]:
    """Sidecars of recordings that stopped but whose upload is not done (at start-up any
    of RETRY_STATES; while running only `failed`, the others are in progress)."""
    found = []
    for sidecar in sorted(directory.glob("*.json")) if directory.is_dir() else []:
        try:
            meta = json.loads(sidecar.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        if meta.get("state") in states and sidecar.with_suffix(".webm").exists():
            found.append({"webm": sidecar.with_suffix(".webm"), "sid": meta.get("sid"),
                          "channel": meta.get("channel", ""), "call_id": meta.get("callId")})
    return found
