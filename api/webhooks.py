"""Webhooks from outside services, authenticated only by their signatures."""

from __future__ import annotations

from django.http import HttpRequest
from ninja import Router

from api.schemas import ChannelEventOut, answers
from calls import channel_events
from core.errors import PayloadTooLarge

router = Router(tags=["webhooks"], auth=None)


@router.post("/agora", **answers(ChannelEventOut, 400, 401, 413, 503),
             summary="Agora channel events (Notifications), signed with its secret")
def agora(request: HttpRequest):
    body = request.body
    if len(body) > channel_events.MAX_BODY_BYTES:
        raise PayloadTooLarge(f"A channel event is at most {channel_events.MAX_BODY_BYTES} bytes.")
    return channel_events.channel_event_receive(
        body=body, signature_v2=request.headers.get("Agora-Signature-V2"),
        signature_v1=request.headers.get("Agora-Signature"))
