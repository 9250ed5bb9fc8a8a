"""Recording actions for the apps: start and stop the recorder bot on a call's channel,
list active sessions and stored recordings."""

from __future__ import annotations

import threading

import structlog
from django.conf import settings
from google.cloud import firestore

from api.auth import Principal
from api.errors import Forbidden, NotFound
from calls import store
from calls.states import actor_of
from integrations.agora import rtc_token_build
from integrations.firebase import firestore_client
from recorder_bridge.client import recorder_call

log = structlog.get_logger("recordings")


def _participant(call: dict | None, principal: Principal) -> bool:
    return bool(call) and actor_of(call, principal.uid) is not None


def recording_start(*, principal: Principal, channel: str, source: str = "agora") -> dict:
    """Send the recorder bot into the active call on `channel` (a participant or an admin);
    its Agora token is made here, for uid RECORDER_UID, as an audience member."""
    calls = store.calls_on_channel(channel)
    if not calls:
        raise NotFound("No ringing or accepted call on this channel.", code="no_active_call")
    call = next((c for c in calls if _participant(c, principal)), calls[0])
    if not _participant(call, principal) and not principal.admin:
        raise Forbidden("Only the call's participants or an admin can record it.",
                        code="not_in_call")
    expire = min(86400, int(settings.RECORDER_MAX_SECONDS) + 600)
    token = rtc_token_build(app_id=settings.AGORA_APP_ID,
                            app_certificate=settings.AGORA_APP_CERT, channel=channel,
                            user=settings.RECORDER_UID, role="subscriber",
                            expire_seconds=expire, version=settings.AGORA_TOKEN_VERSION)
    started = recorder_call("POST", "/sessions", timeout=settings.RECORDER_START_TIMEOUT_SECONDS,
                            json={"channel": channel, "uid": settings.RECORDER_UID,
                                  "token": token.token, "callId": call["callId"],
                                  "source": source})
    store.call_update(call["callId"], {"recordingId": started["sid"]})
    return {"sid": started["sid"], "channel": channel, "uid": started.get("uid"),
            "filename": started.get("filename"), "status": "recording"}


def _session(sid: str | None, channel: str | None) -> dict:
    if sid:
        return recorder_call("GET", f"/sessions/{sid}")
    active = recorder_call("GET", "/sessions")["sessions"]
    found = next((s for s in active if s["channel"] == channel), None)
    if found is None:
        raise NotFound("No active recording on this channel.", code="recording_not_found")
    return found


def recording_stop(*, principal: Principal, sid: str | None = None,
                   channel: str | None = None) -> dict:
    """Stop a recording (by sid, or the active one on `channel`); answers once the WAV is
    stored, in the seed's shape (`filename`, `format`, `duration`, `firebase`, ...)."""
    session = _session(sid, channel)
    call = store.call_read(session["callId"]) if session.get("callId") else None
    if not _participant(call, principal) and not principal.admin:
        raise Forbidden("Only the call's participants or an admin can stop its recording.",
                        code="not_in_call")
    return recorder_call("POST", f"/sessions/{session['sid']}/stop",
                         timeout=settings.RECORDER_STOP_TIMEOUT_SECONDS)


def recording_stop_for_call(call: dict) -> None:
    """A call ended: stop its recording in the background (the hang-up must not wait)."""
    sid = call.get("recordingId")
    if not sid or not settings.RECORDER_SERVICE_URL:
        return

    def stop() -> None:
        try:
            recorder_call("POST", f"/sessions/{sid}/stop",
                          timeout=settings.RECORDER_STOP_TIMEOUT_SECONDS)
        except Exception as exc:  # logged; the recorder's own limits end it anyway
            log.warning("recording_stop_on_end_failed", sid=sid, error=repr(exc))

    threading.Thread(target=stop, name=f"stop-recording-{sid}", daemon=True).start()


def recordings_retry_failed() -> None:
    """Ask the recorder to retry the uploads that failed (the sweep does, every run)."""
    if not settings.RECORDER_SERVICE_URL:
        return
    try:
        answer = recorder_call("POST", "/recordings/retry")
    except Exception as exc:  # the sweep's own job must not fail because of the recorder
        log.warning("recordings_retry_failed", error=repr(exc))
        return
    if answer.get("retrying"):
        log.info("recordings_retry", retrying=answer["retrying"])


def recordings_active(*, principal: Principal) -> list[dict]:
    """Sessions recording now: all for an admin, else those of the caller's calls."""
    sessions = recorder_call("GET", "/sessions")["sessions"]
    if principal.admin:
        return sessions
    return [s for s in sessions if s.get("callId")
            and _participant(store.call_read(s["callId"]), principal)]


def recordings_list(*, principal: Principal, limit: int, cursor: str | None) -> dict:
    """Stored recordings, newest first, `limit` a page; `nextCursor` continues."""
    query = firestore_client().collection("recordings")
    if not principal.admin:
        query = query.where(filter=firestore.FieldFilter("participants", "array_contains",
                                                         principal.uid))
    query = query.order_by("createdAt", direction=firestore.Query.DESCENDING).limit(limit)
    if cursor:
        last = firestore_client().collection("recordings").document(cursor).get()
        if not last.exists:
            raise NotFound("The cursor does not name a recording.", code="bad_cursor")
        query = query.start_after(last)
    items = [{"recordingId": snap.id, **snap.to_dict()} for snap in query.stream()]
    return {"recordings": items,
            "nextCursor": items[-1]["recordingId"] if len(items) == limit else None}
