"""The shape of a `recordings/{id}` document: its audio spec, the pair key, and the one
builder every source (the recorder, app uploads) uses."""

from __future__ import annotations

from core.clock import iso

SPEC = {"sampleRate": 16000, "channels": 1, "bitDepth": 16}  # the speech-ready WAV


def pair_key(uid_a: str, uid_b: str) -> str:
    """The same value for both orders of two users: their shared recordings' `pair`."""
    return "|".join(sorted((uid_a, uid_b)))


def parties(call: dict | None) -> dict:
    """groupId / user1 (caller) / user2 (receiver) / participants / pair, from the call
    document only; a recording without a call has no parties (`partiesKnown: false`)."""
    if not call:
        return {"groupId": None, "user1": None, "user2": None, "participants": [],
                "pair": None, "partiesKnown": False}
    caller, receiver = call.get("callerId"), call.get("receiverId")
    return {"groupId": call.get("groupId"), "user1": caller, "user2": receiver,
            "participants": [uid for uid in (caller, receiver) if uid],
            "pair": pair_key(caller, receiver) if caller and receiver else None,
            "partiesKnown": True}


def recording_document(*, recording_id: str, source: str, status: str, call: dict | None,
                       call_id: str | None, channel: str | None, filename: str, fmt: str,
                       recorded_at, now, **fields) -> dict:
    """A whole `recordings/{id}` document; `fields` sets or adds source-specific fields."""
    document = {
        "sid": recording_id, "callId": call_id, "channel": channel, **parties(call),
        "source": source, "status": status, "error": None, "retryCount": 0,
        "filename": filename, "format": fmt, "spec": SPEC if fmt == "wav" else None,
        "duration": None, "fileSize": None, "sha256": None, "storagePath": None,
        "url": None, "storedBytes": 0, "recordedAt": iso(recorded_at) or iso(now),
        "createdAt": iso(now), "updatedAt": iso(now), "uploadedAt": None,
    }
    document.update(fields)
    return document
