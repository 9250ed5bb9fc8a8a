"""What the apps look up: whether a recording exists (before uploading), whether a call
or a user has one, and which Storage object plays or downloads."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

from calls.access import access_call
from core.errors import NotFound, RecordingNotReady
from core.principal import Principal
from library.times import window_bounds
from recordings import store
from recordings.access import access_recording
from recordings.documents import pair_key

MATCH_WINDOW = timedelta(minutes=2)  # check-exists by channel + timestamp


def recording_check_exists(*, principal: Principal, call_id: str | None, sha256: str | None,
                           channel: str | None, timestamp: str | None) -> dict:
    """Whether the server already holds a recording (any status) of a call, of a file
    (sha256), or on a channel around a time; the apps ask before uploading."""
    filters: list[store.Filter] = []
    if call_id:
        access_call(principal, call_id)
        filters.append(("callId", "==", call_id))
    else:
        if not principal.admin:
            filters.append(("participants", "array_contains", principal.uid))
        if sha256:
            filters.append(("sha256", "==", sha256.lower()))
        else:
            filters.append(("channel", "==", channel))
            if timestamp:
                first, after = window_bounds(timestamp, field="timestamp", around=MATCH_WINDOW)
                filters += [("recordedAt", ">=", first), ("recordedAt", "<", after)]
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
    access_call(principal, call_id)
    found = store.recordings_find([("callId", "==", call_id), ("status", "==", "completed")])
    return _has_recording(found[0] if found else None, call_id)


def user_has_recording(*, principal: Principal, uid: str) -> dict:
    """The latest call of `uid` with a completed recording. The user and admins see all
    of the user's calls; anyone else only the calls they had with that user."""
    if principal.admin or principal.uid == uid:
        who = ("participants", "array_contains", uid)
    else:
        who = ("pair", "==", pair_key(principal.uid, uid))
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
    recording = access_recording(principal, recording_id)
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
        raise RecordingNotReady(f"The recording is {recording['status']}, not playable yet.",
                                status=recording["status"])
    fmt = recording.get("format") or "wav"
    return MediaFile(recording["storagePath"], f"audio/{fmt}", f"{stem}.{fmt}")


