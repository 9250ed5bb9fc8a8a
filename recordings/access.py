"""The one gate for a recording: who may see or act on `recordings/{id}`."""

from __future__ import annotations

from core.errors import NotInCall, RecordingNotFound
from core.principal import Principal
from recordings import store


def access_recording(principal: Principal, recording_id: str) -> dict:
    """The recording, if `principal` is one of its call's participants or an admin."""
    recording = store.recording_read(recording_id)
    if recording is None:
        raise RecordingNotFound()
    if not (principal.admin or principal.uid in (recording.get("participants") or [])):
        raise NotInCall()
    return recording
