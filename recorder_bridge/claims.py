"""`recordingSessions/{callId}`: the one recorder session a call may have. A start claims
the document with an atomic create, so racing starts agree on one session; a stop or the
call's end releases it. Server-only (firestore.rules deny the apps everything here)."""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import datetime

from google.api_core import exceptions as gexc

from core.clock import iso, utc_now
from integrations.firebase import firestore_client

COLLECTION = "recordingSessions"


@dataclass(frozen=True)
class Claim:
    """A claim as read: `state` is "starting" (its owner is asking the recorder) or
    "recording" (with the session's `sid`)."""

    data: dict
    update_time: datetime  # the precondition for replacing or releasing exactly this claim

    @property
    def state(self) -> str:
        return self.data.get("state", "")

    @property
    def sid(self) -> str | None:
        return self.data.get("sid")

    def started_before(self, moment: datetime) -> bool:
        return (self.data.get("claimedAt") or "") < iso(moment)


def _ref(call_id: str):
    return firestore_client().collection(COLLECTION).document(call_id)


def claim_take(*, call_id: str, channel: str) -> str | None:
    """Claim the call's session for this request: its token, or None when it is held."""
    token = secrets.token_urlsafe(16)
    try:
        _ref(call_id).create({"callId": call_id, "channel": channel, "state": "starting",
                              "token": token, "claimedAt": iso(utc_now())})
    except gexc.AlreadyExists:
        return None
    return token


def claim_read(call_id: str) -> Claim | None:
    snap = _ref(call_id).get()
    return Claim(snap.to_dict(), snap.update_time) if snap.exists else None


def claim_started(*, call_id: str, token: str, session: dict) -> bool:
    """The owner's start succeeded: the claim names the session others get. False if the
    claim is no longer this owner's (it was taken over as stale meanwhile)."""
    claim = claim_read(call_id)
    if claim is None or claim.data.get("token") != token:
        return False
    try:
        _ref(call_id).update({"state": "recording", "sid": session["sid"],
                              "uid": session.get("uid"), "filename": session.get("filename"),
                              "startedAt": iso(utc_now())},
                             option=firestore_client().write_option(
                                 last_update_time=claim.update_time))
    except (gexc.FailedPrecondition, gexc.NotFound):
        return False
    return True


def claim_drop(call_id: str, claim: Claim) -> bool:
    """Release exactly `claim` (not one taken since it was read); False if it changed."""
    try:
        _ref(call_id).delete(option=firestore_client().write_option(
            last_update_time=claim.update_time))
    except (gexc.FailedPrecondition, gexc.NotFound):
        return False
    return True


def claim_release(*, call_id: str, token: str | None = None, sid: str | None = None) -> None:
    """Release the call's claim if it is this owner's (`token`) or this session's (`sid`),
    or whichever it is when neither is given (the call ended)."""
    claim = claim_read(call_id)
    if claim is None:
        return
    if token is not None and claim.data.get("token") != token:
        return
    if sid is not None and claim.sid != sid:
        return
    claim_drop(call_id, claim)
