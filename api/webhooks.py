"""Webhooks from outside services, authenticated only by their signatures."""

from __future__ import annotations

from django.conf import settings
from django.http import HttpRequest
from ninja import Query, Router, Schema

from analysis import services as analysis_services
from api.analysis import JobId
from api.schemas import AnalysisWebhookOut, ChannelEventOut, answers
from calls import channel_events
from core.errors import PayloadTooLarge

router = Router(tags=["webhooks"], auth=None)

_WEBHOOK_HEADERS = ("webhook-id", "webhook-timestamp", "webhook-signature")


@router.post("/agora", **answers(ChannelEventOut, 400, 401, 413, 503),
             summary="Agora channel events (Notifications), signed with its secret")
def agora(request: HttpRequest):
    body = request.body
    if len(body) > channel_events.MAX_BODY_BYTES:
        raise PayloadTooLarge(f"A channel event is at most {channel_events.MAX_BODY_BYTES} bytes.")
    return channel_events.channel_event_receive(
        body=body, signature_v2=request.headers.get("Agora-Signature-V2"),
        signature_v1=request.headers.get("Agora-Signature"))


class WebhookIn(Schema):
    job_id: JobId


def _webhook(request: HttpRequest, params: WebhookIn):
    # Read here, not via request.body: callbacks may exceed DATA_UPLOAD_MAX_MEMORY_SIZE
    # (the middleware has refused a declared size over ANALYSIS_WEBHOOK_MAX_BYTES).
    limit = settings.ANALYSIS_WEBHOOK_MAX_BYTES
    body = request.read(limit + 1)
    if len(body) > limit:
        raise PayloadTooLarge(f"The callback is larger than {limit} bytes.")
    headers = {name: request.headers[name] for name in _WEBHOOK_HEADERS
               if name in request.headers}
    return analysis_services.analysis_webhook(job_id=params.job_id, body=body, headers=headers)


@router.post("/analysis", **answers(AnalysisWebhookOut, 400, 401, 404, 413),
             summary="Signed callbacks of the analysis server")
def webhook(request: HttpRequest, params: Query[WebhookIn]):
    return _webhook(request, params)


@router.post("/analysis-complete", **answers(AnalysisWebhookOut, 400, 401, 404, 413),
             summary="Signed callbacks (the seeds' path)")
def webhook_complete(request: HttpRequest, params: Query[WebhookIn]):
    return _webhook(request, params)
