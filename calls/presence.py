"""Who is in a call's channel, and the calls that end themselves: a pure rule table.

Agora's channel events (see `channel_events.py`) keep `presence` on the call:
`{userId: {inChannel, joinedAt, leftAt, leaveReason}}`, and `togetherSince` /
`talkSeconds` (time both parties were in the channel together). `system_action` reads a
call and the clock and names the move the system makes (a row of `calls.states.TABLE`
with the SYSTEM actor), or None. No I/O: `store.py` applies it inside the transaction of
whoever looks first (a read, a transition, a token, an event, the sweep).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from calls.states import Status

# Agora NCS event types (RTC): who joined and who left the channel.
JOINED = frozenset({103, 105, 107, 111, 112})  # 111/112: a role change, still in the channel
LEFT = frozenset({104, 106, 108})
CHANNEL_DESTROYED = 102
KNOWN = JOINED | LEFT | {101, CHANNEL_DESTROYED}


@dataclass(frozen=True)
class Limits:
    ring_timeout: int  # CALL_RING_TIMEOUT_SECONDS
    leave_grace: int = 60  # CALL_LEAVE_GRACE_SECONDS
    caller_gone: int = 10  # CALL_CALLER_GONE_SECONDS
    join_grace: int = 120  # CALL_JOIN_GRACE_SECONDS
    max_seconds: int = 14400  # CALL_MAX_SECONDS
    events_enabled: bool = False  # AGORA_NCS_SECRET is set: Agora tells us who is in


def _parties(call: dict) -> tuple[str, str]:
    return call["callerId"], call["receiverId"]


def _seen(call: dict, uid: str) -> dict:
    return (call.get("presence") or {}).get(uid) or {}


def _in(call: dict, uid: str) -> bool:
    return bool(_seen(call, uid).get("inChannel"))


def _out_since(call: dict, uid: str) -> datetime | None:
    """Since when `uid` has been out of the channel of an accepted call (None: in it);
    a party that never joined has been out since the answer."""
    seen = _seen(call, uid)
    if seen.get("inChannel"):
        return None
    return seen.get("leftAt") or call.get("answeredAt")


def _older(moment: datetime | None, seconds: int, now: datetime) -> bool:
    return moment is not None and moment + timedelta(seconds=seconds) <= now


def _ring_timeout(call: dict, now: datetime, limits: Limits) -> bool:
    return _older(call.get("createdAt"), limits.ring_timeout, now)


def _caller_left(call: dict, now: datetime, limits: Limits) -> bool:
    caller = _seen(call, call["callerId"])
    return bool(caller.get("joinedAt")) and not caller.get("inChannel") and _older(
        caller.get("leftAt"), limits.caller_gone, now)


def _max_duration(call: dict, now: datetime, limits: Limits) -> bool:
    return _older(call.get("answeredAt"), limits.max_seconds, now)


def _never_joined(call: dict, now: datetime, limits: Limits) -> bool:
    return (limits.events_enabled
            and not any(_seen(call, uid).get("joinedAt") for uid in _parties(call))
            and _older(call.get("answeredAt"), limits.join_grace, now))


def _both_left(call: dict, now: datetime, limits: Limits) -> bool:
    joined = any(_seen(call, uid).get("joinedAt") for uid in _parties(call))
    outs = [_out_since(call, uid) for uid in _parties(call)]
    return joined and None not in outs and _older(max(outs), limits.leave_grace, now)


def _peer_lost(call: dict, now: datetime, limits: Limits) -> bool:
    caller, receiver = _parties(call)
    for gone, there in ((caller, receiver), (receiver, caller)):
        if _in(call, there) and _older(_out_since(call, gone), limits.leave_grace, now):
            return True
    return False


# status            rule            system action (calls.states.TABLE, SYSTEM actor)
RULES = (
    (Status.PENDING,  _ring_timeout,  "timeout"),
    (Status.PENDING,  _caller_left,   "caller_left"),
    (Status.ACCEPTED, _max_duration,  "max_duration"),
    (Status.ACCEPTED, _never_joined,  "never_joined"),
    (Status.ACCEPTED, _both_left,     "left_channel"),
    (Status.ACCEPTED, _peer_lost,     "peer_lost"),
)


def system_action(call: dict, *, now: datetime, limits: Limits) -> str | None:
    """The move the system makes on `call` now (the first rule that holds), or None."""
    for status, rule, action in RULES:
        if call.get("status") == status.value and rule(call, now, limits):
            return action
    return None


def present(call: dict, uid: str) -> bool:
    """Whether `uid` is in the call's channel now (as far as the events told)."""
    return _in(call, uid)


def still_there(call: dict) -> str | None:
    """The party still in the channel (who hears of a peer_lost end)."""
    return next((uid for uid in _parties(call) if _in(call, uid)), None)


def presence_changes(call: dict, *, uid: str, joined: bool, at: datetime,
                     reason: int | None = None) -> dict:
    """The fields an event for `uid` at `at` changes: their presence, and the time both
    parties were in the channel together."""
    seen = dict(_seen(call, uid))
    if joined:
        seen.update(inChannel=True, joinedAt=seen.get("joinedAt") or at, leftAt=None,
                    leaveReason=None)
    else:
        seen.update(inChannel=False, leftAt=at, leaveReason=reason)
    after = {**call, "presence": {**(call.get("presence") or {}), uid: seen}}
    changes = {"presence": after["presence"]}
    if uid == call["callerId"]:  # queried by the sweep for ringing calls (caller_left)
        changes["callerLeftAt"] = None if joined else at
    together = all(_in(after, party) for party in _parties(call))
    since = call.get("togetherSince")
    if together and since is None:
        changes["togetherSince"] = at
    elif not together and since is not None:
        changes["togetherSince"] = None
        changes["talkSeconds"] = talk_seconds(call, until=at)
    return changes


def talk_seconds(call: dict, *, until: datetime) -> int:
    """`talkSeconds` with the current stretch together (if any) counted up to `until`."""
    total = int(call.get("talkSeconds") or 0)
    since = call.get("togetherSince")
    if since is not None:
        total += max(0, int((until - since).total_seconds()))
    return total
