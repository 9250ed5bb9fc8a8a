"""Call endpoints, with the seed's request (snake_case) and response (camelCase) shapes."""

from __future__ import annotations

from typing import Annotated, Literal

from django.conf import settings
from django.http import HttpRequest
from ninja import Header, Router, Schema
from pydantic import Field, StrictInt, StringConstraints

from api.auth import ops_or_admin_auth, user_auth
from api.schemas import (
    AnswerOut,
    CallDocument,
    CallShortOut,
    EndOut,
    InviteOut,
    SweepOut,
    answers,
)
from calls import services
from core.clock import iso
from core.errors import ValidationFailed
from ops.sweep import sweep_run

router = Router(tags=["calls"], auth=user_auth)

CallId = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_\-]{1,128}$")]
Name = Annotated[str, StringConstraints(max_length=200)]
DeviceId = Annotated[str, StringConstraints(pattern=r"^[^/]{1,200}$")]  # a Firestore doc id


class InviteIn(Schema):
    group_id: str
    caller_id: str
    receiver_id: str
    caller_name: Name | None = None
    group_name_snapshot: Name | None = None
    receiver_name_snapshot: Name | None = None


class AnswerIn(Schema):
    call_id: CallId
    action: Literal["accept", "decline"]
    device_id: DeviceId | None = None  # users/{uid}/devices/{id} that answered


class CallIn(Schema):
    call_id: CallId


class SweepIn(Schema):
    timeout_seconds: StrictInt | None = Field(None, ge=1, le=86400)


_INTERNAL_FIELDS = {"idempotencyKey"}
_TRANSITION_ERRORS = (400, 401, 403, 404, 409, 503)  # answer, cancel, missed, end


def call_public(call: dict) -> dict:
    """The call document as the apps read it (seed names; ISO 8601 UTC timestamps)."""
    public = {key: iso(value) for key, value in call.items() if key not in _INTERNAL_FIELDS}
    public["caregiverUserId"] = call["callerId"]
    public["giverNameSnapshot"] = call["callerName"]
    return public


@router.post("/invite", **answers(InviteOut, 400, 401, 403, 409, 503),
             summary="Start a call: create it and ring the receiver")
def invite(request: HttpRequest, payload: InviteIn,
           idempotency_key: str | None = Header(None, alias="Idempotency-Key")):
    if idempotency_key is not None and not 1 <= len(idempotency_key) <= 255:
        raise ValidationFailed("Idempotency-Key must be 1 to 255 characters.")
    call = services.call_invite(
        principal=request.principal, group_id=payload.group_id, caller_id=payload.caller_id,
        receiver_id=payload.receiver_id, caller_name=payload.caller_name,
        group_name_snapshot=payload.group_name_snapshot or "",
        receiver_name_snapshot=payload.receiver_name_snapshot or "",
        idempotency_key=idempotency_key)
    return {"success": True, "callId": call["callId"], "channelName": call["channelName"],
            "status": call["status"], "pushSent": call["pushSent"],
            "pushPlatform": call["pushPlatform"], "pushError": call["pushError"]}


@router.post("/answer", **answers(AnswerOut, *_TRANSITION_ERRORS),
             summary="Accept or decline (the receiver)")
def answer(request: HttpRequest, payload: AnswerIn):
    call = services.call_transition(principal=request.principal, call_id=payload.call_id,
                                    action=payload.action, device_id=payload.device_id)
    return {"success": True, "callId": call["callId"], "channelName": call["channelName"],
            "status": call["status"]}


def _short(call: dict) -> dict:
    return {"success": True, "callId": call["callId"], "status": call["status"]}


@router.post("/cancel", **answers(CallShortOut, *_TRANSITION_ERRORS),
             summary="Cancel before it is answered (the caller)")
def cancel(request: HttpRequest, payload: CallIn):
    return _short(services.call_transition(principal=request.principal,
                                           call_id=payload.call_id, action="cancel"))


@router.post("/missed", **answers(CallShortOut, *_TRANSITION_ERRORS),
             summary="Mark missed when the client's ring timer runs out")
def missed(request: HttpRequest, payload: CallIn):
    return _short(services.call_transition(principal=request.principal,
                                           call_id=payload.call_id, action="missed"))


@router.post("/end", **answers(EndOut, *_TRANSITION_ERRORS), summary="Hang up (either party)")
def end(request: HttpRequest, payload: CallIn):
    call = services.call_transition(principal=request.principal, call_id=payload.call_id,
                                    action="end")
    return {**_short(call), "durationSeconds": call["durationSec"] or 0}


@router.get("/status/{call_id}", **answers(CallDocument, 400, 401, 403, 404, 503),
            summary="The call document (participants and admins)")
def status(request: HttpRequest, call_id: CallId):
    return call_public(services.call_status_get(principal=request.principal, call_id=call_id))


@router.post("/timeout/sweep", auth=ops_or_admin_auth,
             **answers(SweepOut, 400, 401, 403, 503),
             summary="Move pending calls past the ring timeout to missed (ops key or admin)")
def sweep(request: HttpRequest, payload: SweepIn):
    timeout = payload.timeout_seconds or settings.CALL_RING_TIMEOUT_SECONDS
    report = sweep_run(timeout_seconds=timeout)
    return {"success": True, "timeoutSeconds": timeout, "updatedCount": report.updated_count,
            "report": report.parts}
