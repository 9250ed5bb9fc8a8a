"""Calls in Firestore. Every state change is atomic: read, check, then write only if the
call is unchanged since the read (`call_apply`).

Collections (written by the server only):
- `calls/{callId}`: the call document the apps read (fields as in the seed).
- `lines/{uid}`: `{callId, claimedAt}` of the last call that user was part of, so "is
  this user busy?" is an atomic claim of one document rather than a query (a query cannot
  lock documents that do not exist yet, so two racing invites could both pass it).
- `channels/{channelName}`: `{callId, callerId, receiverId, status, createdAt}`, written
  with the call and kept in step by every transition's transaction, so "who may get a
  token for this channel" is one point read.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from google.api_core import exceptions as gexc
from google.cloud import firestore
from google.cloud.firestore_v1.field_path import FieldPath

from calls import presence
from calls.states import ACTIVE, FINAL, Actor, Move, Status, decide
from integrations.firebase import firestore_client

CALLS = "calls"
LINES = "lines"
CHANNELS = "channels"
NOTICES = "agoraNotices"
_MAX_ATTEMPTS = 10  # reads-and-writes retried on contention (a race settles in two)


class CallNotFound(Exception):
    pass


class LineBusy(Exception):
    def __init__(self, call_id: str):
        super().__init__(call_id)
        self.call_id = call_id


class StoreContention(Exception):
    """A transaction kept losing to concurrent writers; the client may retry."""


def _calls():
    return firestore_client().collection(CALLS)


def _channels():
    return firestore_client().collection(CHANNELS)


def _channel_entry(call: dict) -> dict:
    entry = {key: call[key] for key in ("callId", "callerId", "receiverId", "status",
                                        "createdAt")}
    return {**entry, "agoraUids": call.get("agoraUids") or {}}


def ring_expired(call: dict, *, now: datetime, ring_timeout: int) -> bool:
    """A pending call nobody answered within the ring timeout."""
    return (call["status"] == Status.PENDING
            and call["createdAt"] + timedelta(seconds=ring_timeout) <= now)


def _changes_for(call: dict, move: Move, *, now: datetime, by: str | None) -> dict:
    changes = {"status": move.to.value, "updatedAt": now}
    if move.to == Status.ACCEPTED:
        changes["answeredAt"] = now
    if move.to in FINAL:
        changes.update(endedAt=now, endReason=move.end_reason, endedBy=by)
        answered = call.get("answeredAt")
        changes["durationSec"] = max(0, int((now - answered).total_seconds())) if answered else 0
        if call.get("togetherSince") is not None:
            changes.update(talkSeconds=presence.talk_seconds(call, until=now),
                           togetherSince=None)
    return changes


def _run(transactional_fn, *args):
    try:
        return transactional_fn(firestore_client().transaction(max_attempts=_MAX_ATTEMPTS), *args)
    except gexc.Aborted as exc:
        raise StoreContention(str(exc)) from exc
    except ValueError as exc:  # the client's way of saying "still aborted after N attempts"
        if isinstance(exc.__cause__, gexc.Aborted):
            raise StoreContention(str(exc)) from exc
        raise


def call_read(call_id: str) -> dict | None:
    snap = _calls().document(call_id).get()
    return snap.to_dict() if snap.exists else None


@dataclass
class Created:
    call: dict
    created: bool  # False: the call id existed (an idempotent retry)
    timed_out: list = field(default_factory=list)  # Applied: stale calls closed on the way


_CLAIM_GRACE = timedelta(seconds=30)  # a line claimed for a call still being created
_CLAIM_ATTEMPTS = 8


def call_create(call: dict, *, now: datetime, limits: presence.Limits) -> Created:
    """Claim the caller's and the receiver's lines, then create `call`.

    Raises LineBusy with the other call's id when either line holds an active call; an
    expired pending call holding a line is settled as missed on the way. Lines are
    claimed with atomic create / precondition writes rather than one transaction over
    both lines: racing invites for one receiver then never wait on each other's locks.
    """
    ref = _calls().document(call["callId"])
    existing = ref.get()
    if existing.exists:
        return Created(existing.to_dict(), created=False)
    claimed, timed_out = [], []
    try:
        for uid in (call["callerId"], call["receiverId"]):
            timed_out += _line_claim(uid, call["callId"], now=now, limits=limits)
            claimed.append(uid)
    except (LineBusy, StoreContention):
        for uid in claimed:
            _line_release(uid, call["callId"])
        raise
    batch = firestore_client().batch()
    batch.create(ref, call)
    batch.create(_channels().document(call["channelName"]), _channel_entry(call))
    try:
        batch.commit()
    except gexc.Conflict:  # the same idempotency key won a race: that call is the answer
        return Created(ref.get().to_dict(), created=False, timed_out=timed_out)
    return Created(call, created=True, timed_out=timed_out)


def _lines():
    return firestore_client().collection(LINES)


def _line_claim(uid: str, call_id: str, *, now: datetime,
                limits: presence.Limits) -> list[dict]:
    """Point `lines/{uid}` at `call_id` unless it holds an active call (LineBusy)."""
    line_ref = _lines().document(uid)
    for _ in range(_CLAIM_ATTEMPTS):
        try:
            line_ref.create({"callId": call_id, "claimedAt": now})
            return []
        except gexc.Conflict:
            pass
        line = line_ref.get()
        if not line.exists:
            continue  # released meanwhile; try to create it again
        held = line.get("callId")
        if held == call_id:
            return []
        timed_out = []
        held_call = call_read(held)
        if held_call is None:
            if line.get("claimedAt") + _CLAIM_GRACE > now:
                raise LineBusy(held)  # that invite is creating its call right now
        elif held_call["status"] in ACTIVE:
            if presence.system_action(held_call, now=now, limits=limits) is None:
                raise LineBusy(held)
            applied = call_apply(held, None, now=now, limits=limits, by=None)
            if applied.call["status"] in ACTIVE:
                raise LineBusy(held)
            if applied.system:
                timed_out.append(applied)
        try:  # take the line over only if nobody else did since we read it
            line_ref.update({"callId": call_id, "claimedAt": now},
                            option=firestore_client().write_option(
                                last_update_time=line.update_time))
            return timed_out
        except (gexc.FailedPrecondition, gexc.NotFound):
            continue
    raise StoreContention(f"could not claim the line of {uid}")


def _line_release(uid: str, call_id: str) -> None:
    """Give back a line this invite claimed but will not use."""
    line = _lines().document(uid).get()
    if line.exists and line.get("callId") == call_id:
        try:
            line.reference.delete(
                option=firestore_client().write_option(last_update_time=line.update_time))
        except (gexc.FailedPrecondition, gexc.NotFound):
            pass


@dataclass
class Applied:
    call: dict  # the call after this transaction
    verdict: object  # what decide() returned; None when only the system looked
    system: str | None = None  # the system move applied on the way (calls/presence.py)
    ignored: str | None = None  # why nothing changed: "stale" (update), "duplicate" (notice)

    @property
    def moved(self) -> bool:
        return isinstance(self.verdict, Move)

    @property
    def timed_out(self) -> bool:
        return self.system == "timeout"


def call_apply(call_id: str, decide_move: Callable[[dict], object] | None, *, now: datetime,
               limits: presence.Limits, by: str | None,
               update: Callable[[dict], dict | None] | None = None,
               notice: tuple[str, dict] | None = None) -> Applied:
    """Read the call, apply `update(call)` (fields, e.g. presence; None: nothing to do),
    persist the system move that is due (a ring timeout, a presence rule), then write
    `decide_move(call)` when it is a Move. Any other verdict (a refusal) is returned, not
    raised, so a system move is persisted even when the asked-for move is refused.
    `decide_move=None` only settles what the system has to. `notice` (id, fields) is an
    Agora notification recorded in `agoraNotices` in the same write: one seen before
    changes nothing.

    Atomic by compare-and-set rather than a transaction: the changes (with the channel
    entry and the notice) are one batch that commits only if the call's update time is
    still the one read; otherwise it reads and decides again. Of two racing moves exactly
    one commits, and neither holds a lock while the other waits: with transactions both
    hold read locks and both commits wait for the other, which the emulator breaks only by
    its 2 s lock timeout (see BENCHMARKS.md, "Accept/cancel races")."""
    ref = _calls().document(call_id)
    notice_ref = (firestore_client().collection(NOTICES).document(notice[0])
                  if notice else None)
    for _ in range(_MAX_ATTEMPTS):
        snap = ref.get()
        if not snap.exists:
            raise CallNotFound(call_id)
        call = snap.to_dict()
        changes = {}
        if notice_ref is not None and notice_ref.get().exists:
            return Applied(call, None, ignored="duplicate")
        if update is not None:
            more = update(call)
            if more is None:
                return Applied(call, None, ignored="stale")
            changes.update(more)
            call = {**call, **more}
        system = presence.system_action(call, now=now, limits=limits)
        if system:
            move = decide(Status(call["status"]), system, Actor.SYSTEM)
            more = _changes_for(call, move, now=now, by=None if system == "timeout" else "system")
            changes.update(more)
            call = {**call, **more}
        verdict = decide_move(call) if decide_move else None
        if isinstance(verdict, Move):
            more = _changes_for(call, verdict, now=now, by=by)
            changes.update(more)
            call = {**call, **more}
        if not changes:  # a refusal or a repeat: true of the call as it was when read
            return Applied(call, verdict, system)
        batch = firestore_client().batch()
        batch.update(ref, changes, option=firestore_client().write_option(
            last_update_time=snap.update_time))
        if notice_ref is not None:
            batch.create(notice_ref, notice[1])
        if "status" in changes and call.get("channelName"):
            batch.set(_channels().document(call["channelName"]), _channel_entry(call))
        try:
            batch.commit()
        except (gexc.FailedPrecondition, gexc.NotFound, gexc.Conflict, gexc.Aborted):
            continue  # the call (or the notice) was written since the read: decide again
        return Applied(call, verdict, system)
    raise StoreContention(f"call {call_id} kept changing under {_MAX_ATTEMPTS} attempts")


def calls_ringing_since(cutoff: datetime, *, page_size: int = 300) -> Iterator[dict]:
    """Pending calls created before `cutoff`, oldest first, paged by an indexed query
    (status == pending, createdAt < cutoff; see firestore.indexes.json)."""
    query = (_calls().where(filter=firestore.FieldFilter("status", "==", Status.PENDING.value))
             .where(filter=firestore.FieldFilter("createdAt", "<", cutoff))
             .order_by("createdAt").limit(page_size))
    last = None
    while True:
        page = list((query.start_after(last) if last else query).stream())
        for snap in page:
            yield snap.to_dict()
        if len(page) < page_size:
            return
        last = page[-1]


def channel_uid_bind(channel: str, call_id: str, agora_user: str, uid: str) -> str:
    """Bind `agora_user` (a uid or account) on `channel` to `uid` unless someone holds it
    already, in one transaction over the channel entry and the call; returns the holder."""
    entry_ref, call_ref = _channels().document(channel), _calls().document(call_id)
    path = FieldPath("agoraUids", agora_user).to_api_repr()

    @firestore.transactional
    def bind(transaction):
        entry = entry_ref.get(transaction=transaction)
        holder = ((entry.to_dict() or {}).get("agoraUids") or {}).get(agora_user)
        if holder:
            return holder
        transaction.update(entry_ref, {path: uid})
        transaction.update(call_ref, {path: uid})
        return uid

    return _run(bind)


def calls_presence_due(*, left_before: datetime, limit: int) -> Iterator[dict]:
    """Calls a presence rule may end: every accepted call (those in progress are few), and
    ringing calls whose caller left the channel before `left_before` (status +
    callerLeftAt index)."""
    accepted = _calls().where(filter=firestore.FieldFilter("status", "==", Status.ACCEPTED.value))
    ringing = (_calls().where(filter=firestore.FieldFilter("status", "==", Status.PENDING.value))
               .where(filter=firestore.FieldFilter("callerLeftAt", "<", left_before)))
    for query in (accepted, ringing):
        for snap in query.limit(limit).stream():
            yield snap.to_dict()


def channel_read(channel: str) -> dict | None:
    """The call on `channel` in brief (`callId`, parties, `status`, `createdAt`): one
    point read; None for a channel no call was created with."""
    snap = _channels().document(channel).get()
    return snap.to_dict() if snap.exists else None


def calls_on_channel(channel: str, *, limit: int = 5) -> list[dict]:
    """Active calls whose channel is `channel` (channelName + status index)."""
    query = (_calls().where(filter=firestore.FieldFilter("channelName", "==", channel))
             .where(filter=firestore.FieldFilter("status", "in", [s.value for s in ACTIVE]))
             .limit(limit))
    return [snap.to_dict() for snap in query.stream()]


def call_update(call_id: str, fields: dict) -> None:
    """Plain field update outside the state machine (the push outcome)."""
    _calls().document(call_id).update(fields)

