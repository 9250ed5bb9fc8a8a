"""Recording endpoints (the seed's paths and shapes): start/stop the recorder bot on a
call's channel, active sessions, stored recordings; and the recorder's token renewal."""

from __future__ import annotations

from django.conf import settings
from django.http import HttpRequest
from ninja import Query, Router, Schema
from ninja.responses import Status
from pydantic import Field, model_validator

from api.auth import recorder_auth, user_auth
from api.schemas import (
    RecorderTokenOut,
    RecordingListOut,
    RecordingProcessingOut,
    RecordingSessionsOut,
    RecordingStartOut,
    RecordingStopOut,
    answers,
)
from integrations.agora import CHANNEL_MAX_BYTES, agora_name
from recorder_bridge import services, tokens

router = Router(tags=["recordings"], auth=user_auth)

# The recorder's own 4xx pass through (404 session_not_found, ...); its 5xx are 502.
_RECORDER_ERRORS = (400, 401, 403, 404, 502, 503)


class StartIn(Schema):
    channel: str = Field(min_length=1, max_length=64)
    # Development only: record a local tone instead of joining Agora (make demo).
    source: str | None = Field(None, pattern=r"^tone:\d{2,5}$")

    @model_validator(mode="after")
    def _agora_channel(self):
        agora_name(self.channel, what="channel", max_bytes=CHANNEL_MAX_BYTES)
        if self.source is not None and not settings.DEBUG:
            raise ValueError("source is only accepted in local development mode")
        return self


class StopIn(Schema):
    sid: str | None = Field(None, pattern=r"^[A-Za-z0-9\-]{1,64}$")
    channel: str | None = Field(None, min_length=1, max_length=64)

    @model_validator(mode="after")
    def _one_of(self):
        if (self.sid is None) == (self.channel is None):
            raise ValueError("send exactly one of sid or channel")
        return self


class TokenIn(Schema):
    channel: str = Field(min_length=1, max_length=64)
    uid: int = Field(ge=0, le=2**32 - 1)

    @model_validator(mode="after")
    def _agora_channel(self):
        agora_name(self.channel, what="channel", max_bytes=CHANNEL_MAX_BYTES)
        return self


class ListIn(Schema):
    limit: int = Field(50, ge=1, le=200)
    cursor: str | None = Field(None, pattern=r"^[A-Za-z0-9_\-]{1,128}$")


@router.post("/start", **answers(RecordingStartOut, *_RECORDER_ERRORS),
             summary="Start recording the call on a channel")
def start(request: HttpRequest, payload: StartIn):
    return services.recording_start(principal=request.principal, channel=payload.channel,
                                    source=payload.source or "agora")


@router.post("/stop", **answers({200: RecordingStopOut, 202: RecordingProcessingOut},
                                *_RECORDER_ERRORS),
             summary="Stop a recording; answers when the WAV is stored (200), or 202 while "
                     "it is still processing after RECORDER_STOP_WAIT_SECONDS")
def stop(request: HttpRequest, payload: StopIn):
    stopped = services.recording_stop(principal=request.principal, sid=payload.sid,
                                      channel=payload.channel)
    return Status(202 if stopped.get("status") == "processing" else 200, stopped)


@router.get("/status", **answers(RecordingSessionsOut, 401, 502, 503),
            summary="Recording sessions in progress")
def status(request: HttpRequest):
    return {"sessions": services.recordings_active(principal=request.principal)}


@router.get("/list", **answers(RecordingListOut, 400, 401, 404, 503),
            summary="Stored recordings, newest first")
def recordings(request: HttpRequest, params: Query[ListIn]):
    return services.recordings_list(principal=request.principal, limit=params.limit,
                                    cursor=params.cursor)


@router.post("/token", auth=recorder_auth, **answers(RecorderTokenOut, 400, 401, 403, 410, 503),
             summary="The recorder's next Agora token (X-Recorder-Secret); 410 once the call is over")
def token(request: HttpRequest, payload: TokenIn):
    return tokens.recorder_token_renew(channel=payload.channel, uid=payload.uid)
