"""Agora's channel events (Notifications / NCS callbacks) applied to the call on that channel.

Agora signs each callback with the Notifications secret (`Agora-Signature-V2`: hex
HMAC-SHA256 of the raw body; `Agora-Signature`: hex HMAC-SHA1), sends duplicates (same
`noticeId`) and delivers out of order (`payload.clientSeq` orders one user's events). Each
event is one small transaction on its call: the `noticeId` is recorded
(`agoraNotices/{noticeId}`, with `expireAt` for a Firestore TTL policy), a `clientSeq` not
newer than the last one of that (channel, uid) is ignored, the party's presence changes,
and a presence rule that is due (calls/presence.py) ends the call. Everything that is not
about a party of a known call (unknown event types, unknown channels, the recorder's uid,
uids nobody got a token for, replays) is answered and has no effect.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from datetime import UTC, datetime, timedelta

import structlog
from django.conf import settings

from calls import presence, store
from calls.services import announce_applied, contended, limits
from calls.states import FINAL
from core.clock import utc_now
from core.errors import InvalidSignature, MalformedJson, ServiceUnavailable, ValidationFailed

log = structlog.get_logger("calls.channel_events")

MAX_BODY_BYTES = 64 * 1024


def signature_valid(body: bytes, *, secret: str, v2: str | None, v1: str | None) -> bool:
    """Agora-Signature-V2 (HMAC-SHA256) or, when it is absent, Agora-Signature (SHA1)."""
    if v2 is not None:
        expected, given = hmac.new(secret.encode(), body, hashlib.sha256).hexdigest(), v2
    elif v1 is not None:
        expected, given = hmac.new(secret.encode(), body, hashlib.sha1).hexdigest(), v1
    else:
        return False
    return hmac.compare_digest(expected.encode(), given.strip().lower().encode())


def _ignored(reason: str, **fields) -> dict:
    log.debug("channel_event_ignored", reason=reason, **fields)
    return {"success": True, "result": "ignored", "reason": reason}


def _event_time(event: dict, payload: dict, now: datetime) -> datetime:
    if isinstance(payload.get("ts"), (int, float)) and payload["ts"] > 0:
        return datetime.fromtimestamp(payload["ts"], tz=UTC)
    if isinstance(event.get("notifyMs"), (int, float)) and event["notifyMs"] > 0:
        return datetime.fromtimestamp(event["notifyMs"] / 1000, tz=UTC)
    return now


def _parse(body: bytes) -> tuple[str, int, dict, dict]:
    try:
        event = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        raise MalformedJson() from None
    if not isinstance(event, dict):
        raise ValidationFailed("The body must be a JSON object.")
    notice_id, event_type, payload = event.get("noticeId"), event.get("eventType"), event.get(
        "payload")
    if not isinstance(notice_id, str) or not 1 <= len(notice_id) <= 256:
        raise ValidationFailed("noticeId: a string is required.",
                               details=[{"field": "noticeId", "message": "required"}])
    if isinstance(event_type, bool) or not isinstance(event_type, int):
        raise ValidationFailed("eventType: an integer is required.",
                               details=[{"field": "eventType", "message": "required"}])
    if not isinstance(payload, dict):
        raise ValidationFailed("payload: an object is required.",
                               details=[{"field": "payload", "message": "required"}])
    return notice_id, event_type, payload, event


def channel_event_receive(*, body: bytes, signature_v2: str | None,
                          signature_v1: str | None, now: datetime | None = None) -> dict:
    """Verify and apply one Agora notification; the answer Agora gets (always quick)."""
    secret = settings.AGORA_NCS_SECRET
    if not secret:
        raise ServiceUnavailable("Channel events are not enabled (AGORA_NCS_SECRET).",
                                 code="channel_events_disabled")
    if not signature_valid(body, secret=secret, v2=signature_v2, v1=signature_v1):
        raise InvalidSignature()
    notice_id, event_type, payload, event = _parse(body)
    now = now or utc_now()
    if event_type not in presence.KNOWN or event_type == 101:
        return _ignored("event_type", event_type=event_type)
    channel = payload.get("channelName")
    entry = store.channel_read(channel) if isinstance(channel, str) and channel else None
    if entry is None:
        return _ignored("unknown_channel", channel=channel)
    at = _event_time(event, payload, now)
    if event_type == presence.CHANNEL_DESTROYED:
        users = [entry["callerId"], entry["receiverId"]]
        key, seq, joined, reason = None, None, False, "channel_destroyed"
    else:
        uid = payload.get("uid")
        if isinstance(uid, bool) or not isinstance(uid, int):
            raise ValidationFailed("payload.uid: an integer is required.",
                                   details=[{"field": "payload.uid", "message": "required"}])
        if uid == settings.RECORDER_UID:
            return _ignored("recorder", channel=channel)
        user = (entry.get("agoraUids") or {}).get(str(uid))
        if user is None:
            return _ignored("unknown_uid", channel=channel, uid=uid)
        seq = payload.get("clientSeq")
        seq = seq if isinstance(seq, int) and not isinstance(seq, bool) else None
        users, key, joined = [user], str(uid), event_type in presence.JOINED
        reason = payload.get("reason")

    def update(call: dict) -> dict | None:
        if call["status"] in FINAL:
            return None  # too late to matter
        seqs = call.get("agoraSeq") or {}
        if key is not None and seq is not None:
            if seq <= seqs.get(key, -1):
                return None  # an older event of this uid, delivered late
            seqs = {**seqs, key: seq}
        changes: dict = {"agoraSeq": seqs}
        for user in users:
            if joined or presence.present(call, user):
                changes.update(presence.presence_changes({**call, **changes}, uid=user,
                                                         joined=joined, at=at, reason=reason))
        return changes

    notice = (notice_id.replace("/", "_"), {
        "eventType": event_type, "channel": channel, "receivedAt": now,
        "expireAt": now + timedelta(days=settings.AGORA_NOTICE_TTL_DAYS)})
    try:
        applied = contended(store.call_apply, entry["callId"], None, now=now, limits=limits(),
                             by=None, update=update, notice=notice)
    except store.CallNotFound:
        return _ignored("unknown_call", channel=channel)
    if applied.ignored:
        return _ignored(applied.ignored, channel=channel, notice_id=notice_id)
    announce_applied(applied)
    log.info("channel_event", call_id=entry["callId"], event_type=event_type,
             status=applied.call["status"], system=applied.system)
    return {"success": True, "result": "applied", "callId": entry["callId"],
            "status": applied.call["status"]}
