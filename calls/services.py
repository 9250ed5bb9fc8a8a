"""Call actions: invite, answer, cancel, missed, end, status, settling ring timeouts, and
the token rule.

Each action runs its state change as one atomic write (`store.call_apply`) following the
table in `states`, then announces what happened (`call_announce`: the pushes that ring or
stop ringing a phone, and the call-final signal, hang off that one function).
"""

from __future__ import annotations

import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta

import structlog
from django.conf import settings

from calls import presence, states, store
from calls.access import access_call
from calls.events import call_final
from calls.states import Invalid, Status, actor_of
from core.cache import ExpiringCache
from core.clock import utc_now
from core.errors import (
    AppError,
    CallNotFound,
    Conflict,
    Contention,
    Forbidden,
    InvalidTransition,
    NotInCall,
    UidReserved,
    UidTaken,
    ValidationFailed,
    WrongParty,
)
from core.principal import Principal
from integrations import agora
from push import services as push_services

log = structlog.get_logger("calls")

_IDEMPOTENCY_NAMESPACE = uuid.UUID("5f0c8c4e-2b7e-4c55-9d7e-6d656d686172")

_EVENTS = {  # the status a call reached -> the event announced
    Status.ACCEPTED: "call_accepted",
    Status.DECLINED: "call_declined",
    Status.CANCELLED: "call_cancelled",
    Status.MISSED: "call_missed",
    Status.ENDED: "call_ended",
}


def ring_timeout_seconds() -> int:
    return settings.CALL_RING_TIMEOUT_SECONDS


def limits(*, ring_timeout: int | None = None) -> presence.Limits:
    """The ring timeout and the presence rules' limits, from the settings."""
    return presence.Limits(
        ring_timeout=ring_timeout or settings.CALL_RING_TIMEOUT_SECONDS,
        leave_grace=settings.CALL_LEAVE_GRACE_SECONDS,
        caller_gone=settings.CALL_CALLER_GONE_SECONDS,
        join_grace=settings.CALL_JOIN_GRACE_SECONDS,
        max_seconds=settings.CALL_MAX_SECONDS,
        events_enabled=bool(settings.AGORA_NCS_SECRET))


def call_announce(*, call: dict, event: str, device_id: str | None = None,
                  tell: list[str] | None = None) -> dict:
    """Tell the phones what happened to `call`: the one place where a call event becomes
    a push. Returns the push outcome fields (`pushSent`, `pushPlatform`, `pushError`,
    `pushDevices`).

    Events: incoming_call (ring every device of the receiver), call_cancelled /
    call_missed (stop all of them ringing), call_accepted / call_declined (stop the
    receiver's other devices: `device_id` is the one that answered; None: all of them),
    call_ended (tell the other party). A call that reaches a final status
    sends `call_final` (its recordings stop) and forgets its token grants in this process.
    Only the transaction that made the change announces it, so a retried or raced
    transition never pushes twice. `tell` names who hears of a call that ended by itself
    (a presence rule) instead of "the other party".
    """
    log.info("call_event", call_id=call["callId"], call_event=event, status=call["status"])
    ttl = ring_timeout_seconds()
    if event == "incoming_call":  # ring only for what is left of the ring timeout
        left = call["createdAt"] + timedelta(seconds=ttl) - utc_now()
        ttl = max(1, int(left.total_seconds()))
    if call["status"] in states.FINAL:
        _token_members_forget(call)
        call_final.send(sender="calls", call=call)
    if tell is not None:
        for uid in tell:
            # The push goes to the party that did not end the call: name the other one.
            other = call["receiverId"] if uid == call["callerId"] else call["callerId"]
            push_services.call_push(call={**call, "endedBy": other}, event=event,
                                    ttl_seconds=ttl)
        return {}
    outcome = push_services.call_push(call=call, event=event, ttl_seconds=ttl,
                                      device_id=device_id)
    return outcome.call_fields() if outcome else {}


def channel_id_check(value: str, *, field: str) -> str:
    if not agora.channel_id_valid(value):
        raise ValidationFailed(f"{field}: {agora.ID_RULE}",
                               details=[{"field": field, "message": "invalid id"}])
    return value


def _call_document(*, call_id: str, channel: str, group_id: str, caller_id: str,
                   receiver_id: str, caller_name: str, group_name_snapshot: str,
                   receiver_name_snapshot: str, idempotency_key: str | None,
                   now: datetime) -> dict:
    return {
        "callId": call_id,
        "channelName": channel,
        "groupId": group_id,
        "callerId": caller_id,
        "receiverId": receiver_id,
        "callerName": caller_name,
        "groupNameSnapshot": group_name_snapshot,
        "receiverNameSnapshot": receiver_name_snapshot,
        "status": Status.PENDING.value,
        "createdAt": now,
        "updatedAt": now,
        "answeredAt": None,
        "endedAt": None,
        "durationSec": 0,
        "endedBy": None,
        "endReason": None,
        "pushSent": False,
        "pushPlatform": None,
        "pushError": None,
        "pushDevices": {},
        "recordingId": None,
        "agoraUids": {},  # Agora uid (or account) -> the user who holds it on this call
        "presence": {},  # user -> {inChannel, joinedAt, leftAt, leaveReason} (channel events)
        "talkSeconds": 0,
        "idempotencyKey": idempotency_key,
        "humanSummary": "",
        "humanKeywords": [],
        "humanNotes": "",
        "aiSummary": "",
        "reviewCount": 0,
        "lastReviewAt": None,
    }


def call_invite(*, principal: Principal, group_id: str, caller_id: str, receiver_id: str,
                caller_name: str | None = None, group_name_snapshot: str = "",
                receiver_name_snapshot: str = "", idempotency_key: str | None = None,
                now: datetime | None = None) -> dict:
    """Create a pending call from `caller_id` to `receiver_id` and ring the receiver."""
    if principal.uid != caller_id:
        raise Forbidden("caller_id must be your own user id.", code="not_the_caller")
    for field, value in (("group_id", group_id), ("caller_id", caller_id),
                         ("receiver_id", receiver_id)):
        channel_id_check(value, field=field)
    if caller_id == receiver_id:
        raise ValidationFailed("You cannot call yourself.", code="self_call")
    now = now or utc_now()
    call_id = (str(uuid.uuid5(_IDEMPOTENCY_NAMESPACE, f"{caller_id}\n{idempotency_key}"))
               if idempotency_key else str(uuid.uuid4()))
    document = _call_document(
        call_id=call_id,
        channel=agora.channel_name(group_id=group_id, caller_id=caller_id,
                                   receiver_id=receiver_id, at=now),
        group_id=group_id, caller_id=caller_id, receiver_id=receiver_id,
        caller_name=caller_name or caller_id, group_name_snapshot=group_name_snapshot,
        receiver_name_snapshot=receiver_name_snapshot, idempotency_key=idempotency_key,
        now=now)
    try:
        result = contended(store.call_create, document, now=now, limits=limits())
    except store.LineBusy as busy:
        raise Conflict("The caller or the receiver is already in a call.", code="busy",
                       callId=busy.call_id) from None
    for stale in result.timed_out:
        announce_applied(stale)
    call = result.call
    if not result.created:
        if (call["receiverId"], call["groupId"]) != (receiver_id, group_id):
            raise Conflict("This Idempotency-Key was already used for another call.",
                           code="idempotency_key_reused", callId=call_id)
        return call  # a retry: the same call, no second ring
    outcome = call_announce(call=call, event="incoming_call")
    store.call_update(call_id, outcome)
    return {**call, **outcome}


_ROLE_WORDS = {"accept": "the receiver", "decline": "the receiver", "cancel": "the caller",
               "missed": "a participant", "end": "a participant"}


def _refusal_or_decision(call: dict, *, uid: str, action: str):
    actor = actor_of(call, uid)
    if actor is None:
        return NotInCall("You are not a participant of this call.")
    if actor not in states.ALLOWED_ACTORS[action]:
        return WrongParty(f"Only {_ROLE_WORDS[action]} can {action} this call.")
    decision = states.decide(Status(call["status"]), action, actor)
    if isinstance(decision, Invalid):
        return InvalidTransition(f"Cannot {action} a call that is {call['status']}.",
                                 status=call["status"], callId=call["callId"])
    return decision


def call_transition(*, principal: Principal, call_id: str, action: str,
                    device_id: str | None = None, now: datetime | None = None) -> dict:
    """Apply `action` (accept, decline, cancel, missed, end) for the caller `principal`;
    `device_id` is the receiver's device that accepted or declined (its other devices are
    told).

    A repeat of the transition that already happened returns the call unchanged; any
    other impossible move raises 409 invalid_transition with the current status.
    """
    now = now or utc_now()
    try:
        applied = contended(
            store.call_apply, call_id,
            lambda call: _refusal_or_decision(call, uid=principal.uid, action=action),
            now=now, limits=limits(), by=principal.uid)
    except store.CallNotFound:
        raise CallNotFound(f"No call {call_id}.") from None
    announce_applied(applied, device_id=device_id)
    if isinstance(applied.verdict, AppError):
        raise applied.verdict
    return applied.call


def announce_applied(applied: store.Applied, *, device_id: str | None = None) -> None:
    call = applied.call
    if applied.moved:
        call_announce(call=call, event=_EVENTS[Status(call["status"])], device_id=device_id)
    elif applied.system in ("timeout", "caller_left"):  # stop the receiver's ringing
        call_announce(call=call, event=_EVENTS[Status(call["status"])])
    elif applied.system:  # the call ended by itself: tell whoever may still be in it
        there = presence.still_there(call)
        tell = [there] if applied.system == "peer_lost" and there else [
            call["callerId"], call["receiverId"]]
        call_announce(call=call, event="call_ended", tell=tell)


def call_status_get(*, principal: Principal, call_id: str, now: datetime | None = None) -> dict:
    """The call as its participants (or an admin) see it, with an overdue ring timeout
    persisted first."""
    call = access_call(principal, call_id)
    now = now or utc_now()
    if presence.system_action(call, now=now, limits=limits()):
        applied = contended(store.call_apply, call_id, None, now=now, limits=limits(),
                             by=None)
        announce_applied(applied)
        call = applied.call
    return call


def calls_settle_expired(*, timeout_seconds: int, now: datetime | None = None) -> int:
    """Move every pending call older than `timeout_seconds` to missed (and tell the
    receivers), each in its own transaction; calls that changed meanwhile or stay
    contended are skipped. Returns how many moved."""
    now = now or utc_now()
    cutoff = now - timedelta(seconds=timeout_seconds)

    def settle(call: dict) -> bool:
        try:
            applied = store.call_apply(call["callId"], None, now=now,
                                       limits=limits(ring_timeout=timeout_seconds), by=None)
        except store.StoreContention:  # busy right now: the next sweep will see it again
            log.warning("sweep_skipped_contended_call", call_id=call["callId"])
            return False
        announce_applied(applied)
        return applied.timed_out

    with ThreadPoolExecutor(max_workers=8, thread_name_prefix="sweep") as pool:
        updated = sum(pool.map(settle, store.calls_ringing_since(cutoff)))
    log.info("calls_swept", timeout_seconds=timeout_seconds, updated=updated)
    return updated


def calls_settle_presence(*, now: datetime | None = None, limit: int = 500) -> int:
    """The sweep's part for calls nobody looks at: ringing and accepted calls a presence
    rule ends (calls/presence.py), each in its own transaction. Returns how many ended."""
    now = now or utc_now()
    current, ended = limits(), 0
    left_before = now - timedelta(seconds=current.caller_gone)
    for call in store.calls_presence_due(left_before=left_before, limit=limit):
        if presence.system_action(call, now=now, limits=current) in (None, "timeout"):
            continue  # ring timeouts are the calls part's (and counted there)
        try:
            applied = store.call_apply(call["callId"], None, now=now, limits=current, by=None)
        except store.StoreContention:
            continue
        announce_applied(applied)
        ended += applied.system not in (None, "timeout")
    return ended


# (uid, channel) -> Agora uids/accounts recently granted to that user on that channel: a
# burst of token requests for one call (both apps joining, retries on bad networks) reads
# Firestore once. A call that ends drops its entries here at once; other processes forget
# them within CALL_TOKEN_CACHE_SECONDS.
_token_members = ExpiringCache(max_entries=20000)


def _token_members_forget(call: dict) -> None:
    for uid in (call.get("callerId"), call.get("receiverId")):
        _token_members.delete((uid, call.get("channelName")))


def call_token_check(*, principal: Principal, channel: str, agora_user: int | str,
                     now: datetime | None = None) -> None:
    """Tokens are for the participants of a ringing or accepted call on `channel`
    (unless TOKEN_CHANNEL_POLICY=authenticated): one point read of `channels/{channel}`.
    The first participant to ask for an Agora uid (or account) on a call holds it (one
    write, on the first token); the recorder's uid is nobody's. A positive answer is
    remembered for CALL_TOKEN_CACHE_SECONDS (0: never)."""
    if agora_user == settings.RECORDER_UID:
        raise UidReserved()
    if settings.TOKEN_CHANNEL_POLICY == "authenticated":
        return
    key, held = (principal.uid, channel), str(agora_user)
    granted = _token_members.get(key) or frozenset()
    if held in granted:
        return
    now = now or utc_now()
    entry = store.channel_read(channel)
    # Calls created before channel entries existed are found by a query (and not bound).
    candidates = [entry] if entry else store.calls_on_channel(channel)
    for call in candidates:
        if actor_of(call, principal.uid) is None or call["status"] not in states.ACTIVE:
            continue
        if presence.system_action(call, now=now, limits=limits()):
            applied = contended(store.call_apply, call["callId"], None, now=now,
                                 limits=limits(), by=None)
            announce_applied(applied)
            if applied.call["status"] not in states.ACTIVE:
                continue
        if entry is not None:
            holder = (entry.get("agoraUids") or {}).get(held) or contended(
                store.channel_uid_bind, channel, call["callId"], held, principal.uid)
            if holder != principal.uid:
                raise UidTaken()
        if settings.CALL_TOKEN_CACHE_SECONDS > 0:
            _token_members.put(key, granted | {held},
                               expires_at=time.time() + settings.CALL_TOKEN_CACHE_SECONDS)
        return
    raise NotInCall("Tokens are issued only to the participants of an active call on this "
                    "channel.")


def contended(fn, *args, **kwargs):
    try:
        return fn(*args, **kwargs)
    except store.StoreContention:
        raise Contention() from None
