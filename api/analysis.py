"""Analysis endpoints: start a recording's analysis, read a job, follow it as Server-Sent
Events, the job-scoped audio URL the analysis server fetches, the server's signed
callbacks are in api/webhooks.py."""

from __future__ import annotations

from typing import Annotated

from django.conf import settings
from django.core.handlers.asgi import ASGIRequest
from django.http import HttpRequest, HttpResponse, StreamingHttpResponse
from ninja import Query, Router, Schema
from ninja.responses import Status
from pydantic import StringConstraints
from pydantic import ValidationError as PydanticValidationError

from analysis import services
from analysis.states import FINAL
from analysis.stream import job_events, job_events_async
from api import delivery
from api.auth import user_auth
from api.library import RecordingId
from api.schemas import EVENTS_DOCS, MEDIA_DOCS, AnalysisJobOut, AnalysisStartOut, answers
from core.errors import ValidationFailed

analyze_router = Router(tags=["analysis"], auth=user_auth)
analysis_router = Router(tags=["analysis"], auth=user_auth)

JobId = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_\-]{1,128}$")]


class AnalyzeIn(Schema):
    force: bool = False  # admins: a new job even when the recording has one


def _analyze_body(request: HttpRequest) -> AnalyzeIn:
    # The body is optional (apps send none), which ninja's body parameters cannot say.
    raw = request.body.strip()
    if not raw:
        return AnalyzeIn()
    try:
        return AnalyzeIn.model_validate_json(raw)
    except PydanticValidationError as exc:
        message = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'body'}: {e['msg']}"
                            for e in exc.errors())
        raise ValidationFailed(message)


@analyze_router.post("/{recording_id}/analyze",
                     **answers({200: AnalysisStartOut, 202: AnalysisStartOut},
                               400, 401, 403, 404, 409),
                     summary="Analyse a completed recording (202 new job, 200 existing)",
                     description='Optional JSON body `{"force": true}` (admins): a new job.')
def analyze(request: HttpRequest, recording_id: RecordingId):
    return Status(*services.analysis_start(principal=request.principal,
                                           recording_id=recording_id,
                                           force=_analyze_body(request).force))


@analysis_router.get("/{job_id}", **answers(AnalysisJobOut, 400, 401, 403, 404),
                     summary="An analysis job: status, progress, result")
def job(request: HttpRequest, job_id: JobId):
    return services.analysis_read(principal=request.principal, job_id=job_id)


def _last_event_id(request: HttpRequest) -> int:
    raw = request.headers.get("Last-Event-ID", "").strip()
    return int(raw) if raw.isdigit() else 0


@analysis_router.get("/{job_id}/events", **answers(None, 400, 401, 403, 404, docs=EVENTS_DOCS),
                     summary="An analysis job's progress (text/event-stream)")
def events(request: HttpRequest, job_id: JobId):
    job = services.access_job(request.principal, job_id)
    last_seq = _last_event_id(request)
    if job["status"] in FINAL and int(job.get("seq") or 0) <= last_seq:
        return HttpResponse(status=204)  # EventSource stops reconnecting on 204
    # Served by the ASGI event-stream server (nginx routes /events there): the body runs
    # on its event loop, no thread held; under gunicorn (WSGI) it holds the request's thread.
    body = job_events_async if isinstance(request, ASGIRequest) else job_events
    response = StreamingHttpResponse(
        body(job, last_seq=last_seq, view=services.analysis_view,
             poll_seconds=settings.ANALYSIS_STREAM_POLL_SECONDS,
             heartbeat_seconds=settings.ANALYSIS_STREAM_HEARTBEAT_SECONDS,
             max_seconds=settings.ANALYSIS_STREAM_MAX_SECONDS),
        content_type="text/event-stream; charset=utf-8")
    response["Cache-Control"] = "no-cache"
    response["X-Accel-Buffering"] = "no"  # nginx: pass each event on at once
    return response


class AudioIn(Schema):
    token: str = ""


@analysis_router.get("/{job_id}/audio", auth=None,
                     **answers(None, 400, 403, 404, 410, 416, 503, docs=MEDIA_DOCS),
                     summary="The job's audio, for the analysis server (job-scoped token)")
def audio(request: HttpRequest, job_id: JobId, params: Query[AudioIn]):
    media = services.analysis_audio(job_id=job_id, token=params.token)
    return delivery.media_response(request, media, attachment=False)
