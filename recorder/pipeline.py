"""After a recording stops, in the recorder (which has the file): remux the browser WebM,
convert it to a speech-ready WAV (16 kHz mono s16), upload it to Storage at
`recordings/<channel>_<timestamp>.wav` and write Firestore `recordings/{sid}`.

If conversion fails the WebM is uploaded instead (`format: webm`). If Storage is down the
files stay on disk, the sidecar and the document say `failed` with the error, and the
next recorder start retries (`recordings_retry`) until the recording is `completed`.
Uses the project's own settings and Firebase/Storage integrations (Django settings).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import threading
from pathlib import Path

from .sink import iso, utc_now, write_json_atomically

log = logging.getLogger("recorder.pipeline")

SPEC = {"sampleRate": 16000, "channels": 1, "bitDepth": 16}
RETRY_STATES = ("stopped", "processing", "failed")  # sidecars whose upload is not done
_in_progress: set[str] = set()  # sids being processed now, never twice at once
_in_progress_lock = threading.Lock()


def _django() -> None:
    """Load the project's settings once in this process (idempotent)."""
    import django
    from django.conf import settings

    if not settings.configured:
        os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    django.setup()


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _parties(channel: str, call: dict | None) -> dict:
    """groupId / user1 (caller) / user2 (receiver): from the call, else from the channel."""
    if call:
        return {"groupId": call.get("groupId"), "user1": call.get("callerId"),
                "user2": call.get("receiverId")}
    parts = channel.split("_")
    return {"groupId": parts[0] if parts else None,
            "user1": parts[1] if len(parts) > 1 else None,
            "user2": parts[2] if len(parts) > 2 else None}


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
    _django()
    from integrations.firebase import firestore_client
    from library.store import pair_key
    from media import audio, storage

    sidecar = webm.with_suffix(".json")
    meta = json.loads(sidecar.read_text(encoding="utf-8")) if sidecar.exists() else {}
    _save_sidecar(sidecar, meta, state="processing")
    db = firestore_client()
    call = None
    if call_id:
        snap = db.collection("calls").document(call_id).get()
        call = snap.to_dict() if snap.exists else None

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
    now = iso(utc_now())
    parties = _parties(channel, call)
    participants = [uid for uid in (parties["user1"], parties["user2"]) if uid]
    document = {
        "sid": sid, "callId": call_id, "channel": channel, **parties,
        "participants": participants,
        "pair": pair_key(*participants) if len(participants) == 2 else None,
        "filename": filename, "format": fmt, "duration": duration_ms,
        "fileSize": upload.stat().st_size, "sha256": _sha256(upload),
        "spec": SPEC if fmt == "wav" else None, "source": "recorder",
        "recordedAt": meta.get("startedAt") or now, "createdAt": now, "updatedAt": now,
        "storagePath": storage_path,
    }
    ref = db.collection("recordings").document(sid)
    try:
        stored = storage.recording_upload(path=upload, object_name=storage_path,
                                          content_type=content_type,
                                          metadata={"sid": sid, "callId": call_id or ""})
    except storage.StorageError as exc:
        retries = int(meta.get("retryCount", 0)) + 1
        ref.set({**document, "status": "failed", "url": None, "error": exc.code,
                 "retryCount": retries})
        _save_sidecar(sidecar, meta, state="failed", error=exc.code, retryCount=retries)
        log.warning("recording %s: upload failed (%s); kept on disk for a retry", sid, exc.code)
        return {**_answer(document), "firebase": None, "status": "failed", "error": exc.code}
    ref.set({**document, "status": "completed", "url": stored.url, "error": None,
             "retryCount": int(meta.get("retryCount", 0)), "storedBytes": stored.size,
             "uploadedAt": iso(utc_now())})
    if call:
        db.collection("calls").document(call_id).update({"recordingId": sid})
    _save_sidecar(sidecar, meta, state="completed", recordingId=sid, storagePath=storage_path,
                  format=fmt)
    return {**_answer(document), "status": "stopped",
            "firebase": {"url": stored.url, "firestoreId": sid, "storagePath": storage_path}}


def _answer(document: dict) -> dict:
    keys = ("sid", "channel", "groupId", "user1", "user2", "filename", "format", "duration")
    return {key: document[key] for key in keys}


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
