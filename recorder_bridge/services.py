"""Recording actions for the apps: start and stop the recorder bot on a call's channel,
list active sessions and stored recordings; and what a call that ends means for its
recordings."""

from __future__ import annotations

import time
from datetime import timedelta

import structlog
from django.conf import settings

from calls import store as call_store
from calls.states import FINAL, actor_of
from core.clock import utc_now
from core.errors import (
    AppError,
    NoActiveCall,
    NotFound,
    NotInCall,
    RecorderUnavailable,
    RecordingNotFound,
)
from core.principal import Principal
from recorder_bridge import claims, placement
from recorder_bridge.client import recorder_call, recorder_call_at
from recorder_bridge.placement import recorder_configured
from recorder_bridge.tokens import recorder_token_build
from recordings import store

log = structlog.get_logger("recordings")

# A stop the recorder finishes by itself: the hang-up does not wait for the conversion and
# the upload, and nothing of it lives in this worker (the sweep stops what is left).
_STOP_LATER_TIMEOUT = 5.0
_CLAIM_MARGIN = 30.0  # seconds past the start timeout before a "starting" claim is stale
_CLAIM_POLL_SECONDS = 0.2  # how often a start waiting for another start looks again
_STOP_ANSWER_MARGIN = 5.0  # seconds the recorder may take past the wait to answer
_RETRY_BATCH = 100  # failed recordings one sweep sends to the nodes (the rest next time)


def _participant(call: dict | None, principal: Principal) -> bool:
    return bool(call) and actor_of(call, principal.uid) is not None


def recording_start(*, principal: Principal, channel: str, source: str = "agora") -> dict:
    """Send the recorder bot into the active call on `channel` (a participant or an admin);
    its first Agora token is made here (recorder_bridge.tokens). A call has one session:
    a start while it records answers that session (see `claims`)."""
    calls = call_store.calls_on_channel(channel)
    if not calls:
        raise NoActiveCall()
    call = next((c for c in calls if _participant(c, principal)), calls[0])
    if not _participant(call, principal) and not principal.admin:
        raise NotInCall("Only the call's participants or an admin can record it.")
    call_id = call["callId"]
    # Waiting for another request's start is bounded like that start, plus a margin.
    deadline = time.monotonic() + settings.RECORDER_START_TIMEOUT_SECONDS + _CLAIM_MARGIN
    while time.monotonic() < deadline:
        token = claims.claim_take(call_id=call_id, channel=channel)
        if token is not None:
            started = _session_start(call=call, channel=channel, source=source, token=token)
            if started is not None:
                return started
            # The claim went meanwhile: taken over as stale, or released as the call ended.
            if all(c["callId"] != call_id for c in call_store.calls_on_channel(channel)):
                raise NoActiveCall("The call on this channel has ended.")
            continue
        held = claims.claim_read(call_id)
        if held is None:
            continue  # released since: claim it
        if held.state == "recording" and held.sid:
            if _session_active(held.sid):
                return _start_answer(held.data, channel)
            claims.claim_drop(call_id, held)  # that session ended by itself (idle, crash)
        elif held.started_before(utc_now() - timedelta(
                seconds=settings.RECORDER_START_TIMEOUT_SECONDS + _CLAIM_MARGIN)):
            claims.claim_drop(call_id, held)
        else:
            time.sleep(_CLAIM_POLL_SECONDS)  # another request is starting it: wait for it
    raise RecorderUnavailable("Another start of this call's recording did not finish.")


def _session_start(*, call: dict, channel: str, source: str, token: str) -> dict | None:
    """Start the session this request claimed; None if the claim was lost meanwhile (the
    session then stops again and the caller looks at who holds the call now)."""
    try:
        agora = recorder_token_build(channel=channel)  # renewed through the API before expiry
        started = recorder_call("POST", "/sessions",
                                timeout=settings.RECORDER_START_TIMEOUT_SECONDS,
                                json={"channel": channel, "uid": settings.RECORDER_UID,
                                      "token": agora.token, "callId": call["callId"],
                                      "source": source})
    except BaseException:
        claims.claim_release(call_id=call["callId"], token=token)
        raise
    if not claims.claim_started(call_id=call["callId"], token=token, session=started):
        _stop_later(started["sid"], reason="duplicate_start")
        return None
    store.call_recording_set(call["callId"], started["sid"])
    return _start_answer(started, channel)


def _start_answer(session: dict, channel: str) -> dict:
    return {"sid": session["sid"], "channel": channel, "uid": session.get("uid"),
            "filename": session.get("filename"), "status": "recording"}


def _session_active(sid: str) -> bool:
    try:
        return recorder_call("GET", f"/sessions/{sid}").get("status") in ("starting",
                                                                           "recording")
    except AppError as exc:
        if exc.status == 404:
            return False
        raise


def _session(sid: str | None, channel: str | None) -> dict:
    if sid:
        return recorder_call("GET", f"/sessions/{sid}")
    active = recorder_call("GET", "/sessions")["sessions"]
    found = next((s for s in active if s["channel"] == channel), None)
    if found is None:
        raise RecordingNotFound("No active recording on this channel.")
    return found


def recording_stop(*, principal: Principal, sid: str | None = None,
                   channel: str | None = None) -> dict:
    """Stop a recording (by sid, or the active one on `channel`); answers once the WAV is
    stored, in the seed's shape (`filename`, `format`, `duration`, `firebase`, ...), or
    `status: failed` with the `error`; still converting or uploading after
    RECORDER_STOP_WAIT_SECONDS, `status: processing` (the recorder finishes it)."""
    session = _session(sid, channel)
    call = call_store.call_read(session["callId"]) if session.get("callId") else None
    if not _participant(call, principal) and not principal.admin:
        raise NotInCall("Only the call's participants or an admin can stop its recording.")
    wait = settings.RECORDER_STOP_WAIT_SECONDS
    stopped = recorder_call("POST", f"/sessions/{session['sid']}/stop", json={"wait": wait},
                            timeout=wait + _STOP_ANSWER_MARGIN)
    if session.get("callId"):
        claims.claim_release(call_id=session["callId"], sid=session["sid"])
    return stopped


def _stop_later(sid: str, *, reason: str) -> None:
    """Ask the recorder to stop `sid` and finish it by itself (it answers at once)."""
    recorder_call("POST", f"/sessions/{sid}/stop", json={"wait": False, "reason": reason},
                  timeout=_STOP_LATER_TIMEOUT)


def recordings_stop_for_call(sender=None, *, call: dict, **_) -> int:
    """A call ended (the call-final signal): stop every session recording its channel.
    A recorder that cannot be reached now is left to the sweep; returns how many stopped."""
    if not recorder_configured():
        return 0
    stopped = 0
    try:
        sessions = recorder_call("GET", "/sessions", timeout=_STOP_LATER_TIMEOUT)["sessions"]
        for session in sessions:
            if (session.get("callId") == call["callId"]
                    or session.get("channel") == call.get("channelName")):
                _stop_later(session["sid"], reason="call_ended")
                stopped += 1
    except AppError as exc:  # the sweep stops it later; the hang-up must not fail
        log.warning("recording_stop_on_end_failed", call_id=call["callId"], error=exc.code)
    claims.claim_release(call_id=call["callId"])
    return stopped


def recordings_stop_of_final_calls() -> dict:
    """The sweep's part: sessions still recording a call that is final are stopped."""
    if not recorder_configured():
        return {"stopped": 0}
    stopped = 0
    for session in recorder_call("GET", "/sessions")["sessions"]:
        call = call_store.call_read(session["callId"]) if session.get("callId") else None
        if call is not None and call["status"] in FINAL:
            _stop_later(session["sid"], reason="call_ended")
            claims.claim_release(call_id=call["callId"])
            stopped += 1
    if stopped:
        log.info("recordings_of_final_calls_stopped", stopped=stopped)
    return {"stopped": stopped}


def recordings_retry_failed() -> dict:
    """The sweep's part: ask the recorder to retry the uploads that failed. Over several
    nodes each failed recording goes to the node that recorded it (its `recorderNode`;
    every healthy node when that is not known); a node that is not healthy or does not
    answer is reported under `nodes` with its error, and the others still retry."""
    if not recorder_configured():
        return {"retrying": 0}
    if not settings.RECORDER_NODES:
        answer = recorder_call("POST", "/recordings/retry")
        if answer.get("retrying"):
            log.info("recordings_retry", retrying=answer["retrying"])
        return {"retrying": int(answer.get("retrying") or 0)}
    held: dict[str, list[str]] = {}
    unknown: list[str] = []
    for recording in store.recordings_oldest([("source", "==", "recorder"),
                                              ("status", "==", "failed")],
                                             limit=_RETRY_BATCH):
        node_id = recording.get("recorderNode")
        (held.setdefault(node_id, []) if node_id else unknown).append(recording["recordingId"])
    urls = placement.recorder_node_urls()
    for node_id in urls if unknown else ():
        held.setdefault(node_id, []).extend(unknown)
    nodes: dict[str, dict] = {}
    for node_id, sids in sorted(held.items()):
        try:
            if node_id not in urls:
                raise RecorderUnavailable(f"The recorder node {node_id} is not healthy (no "
                                          "recent heartbeat).")
            answer = recorder_call_at(urls[node_id], "POST", "/recordings/retry",
                                      json={"sids": sids})
            nodes[node_id] = {"retrying": int(answer.get("retrying") or 0)}
        except AppError as exc:  # that node's recordings wait for the next sweep
            log.warning("recordings_retry_node_failed", node=node_id, error=exc.code)
            nodes[node_id] = {"error": exc.code, "message": exc.message,
                              "recordings": len(sids)}
    retrying = sum(node.get("retrying", 0) for node in nodes.values())
    if retrying:
        log.info("recordings_retry", retrying=retrying)
    return {"retrying": retrying, "nodes": nodes}


def recordings_active(*, principal: Principal) -> list[dict]:
    """Sessions recording now: all for an admin, else those of the caller's calls."""
    sessions = recorder_call("GET", "/sessions")["sessions"]
    if principal.admin:
        return sessions
    return [s for s in sessions if s.get("callId")
            and _participant(call_store.call_read(s["callId"]), principal)]


def recordings_list(*, principal: Principal, limit: int, cursor: str | None) -> dict:
    """Stored recordings, newest first, `limit` a page; `nextCursor` continues."""
    try:
        page = store.recordings_of(None if principal.admin else principal.uid, limit=limit,
                                   cursor=cursor)
    except store.BadPageToken:
        raise NotFound("The cursor does not name a recording.", code="bad_cursor") from None
    return {"recordings": page.items, "nextCursor": page.next_token}
