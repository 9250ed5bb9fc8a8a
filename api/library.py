"""The recording library's endpoints: uploads from the apps, lookups, playback and
download with HTTP Range, the admin listing, upload statistics and retries."""

from __future__ import annotations

from typing import Annotated, Literal

from django.http import HttpRequest
from ninja import File, Form, Query, Router, Schema
from ninja.files import UploadedFile
from ninja.responses import Status
from pydantic import Field, StringConstraints, model_validator

from api import delivery
from api.auth import ops_or_admin_auth, user_auth
from api.calls import CallId
from api.schemas import (
    MEDIA_DOCS,
    AdminRecordingsOut,
    CheckExistsOut,
    HasRecordingOut,
    UploadOut,
    UploadStatusOut,
    answers,
)
from library import admin, lookups, retries, uploads
from recordings.states import STATUSES

recordings_router = Router(tags=["recording library"], auth=user_auth)
calls_router = Router(tags=["recording library"], auth=user_auth)
users_router = Router(tags=["recording library"], auth=user_auth)
admin_router = Router(tags=["recording library"], auth=ops_or_admin_auth)

RecordingId = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_\-]{1,128}$")]
Uid = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9._\-]{1,128}$")]
RecordingStatus = Literal[STATUSES]  # type: ignore[valid-type]
Source = Literal["recorder", "upload"]
# 409 recording_not_ready (not completed yet); 416 when no range overlaps the file.
_MEDIA_ERRORS = (400, 401, 403, 404, 409, 416, 503)


class UploadIn(Schema):
    call_id: CallId
    duration: int | None = Field(None, ge=0, le=86400, description="seconds, as the app saw")
    original_filename: str | None = Field(None, max_length=255)


@recordings_router.post("/upload", summary="Upload a call's recording (multipart)",
                        **answers({200: UploadOut, 201: UploadOut, 202: UploadOut},
                                  400, 401, 403, 404, 411, 413, 503))
def upload(request: HttpRequest, recording: File[UploadedFile], form: Form[UploadIn]):
    # FILE_UPLOAD_HANDLERS makes `recording` a ReceivedFile: on disk, with its sha256.
    return Status(*uploads.recording_upload_receive(
        principal=request.principal, call_id=form.call_id, received=recording.received(),
        original_filename=form.original_filename, declared_duration=form.duration))


class CheckExistsIn(Schema):
    call_id: CallId | None = None
    sha256: str | None = Field(None, pattern=r"^[0-9a-fA-F]{64}$")
    channel: str | None = Field(None, min_length=1, max_length=64)
    timestamp: str | None = Field(None, max_length=40,
                                  description="epoch s or ms, or ISO 8601; with channel")

    @model_validator(mode="after")
    def _one_way(self):
        given = [name for name in ("call_id", "sha256", "channel") if getattr(self, name)]
        if len(given) != 1:
            raise ValueError("send exactly one of call_id, sha256 or channel (+ timestamp)")
        if self.timestamp and not self.channel:
            raise ValueError("timestamp goes with channel")
        return self


@recordings_router.get("/check-exists", **answers(CheckExistsOut, 400, 401, 403, 404, 503),
                       summary="Is this recording on the server already?")
def check_exists(request: HttpRequest, params: Query[CheckExistsIn]):
    return lookups.recording_check_exists(
        principal=request.principal, call_id=params.call_id, sha256=params.sha256,
        channel=params.channel, timestamp=params.timestamp)


class StatusIn(Schema):
    source: Source | None = None


@recordings_router.get("/upload-status", auth=ops_or_admin_auth,
                       **answers(UploadStatusOut, 400, 401, 403, 503),
                       summary="Recordings per status, last upload, bytes stored (admin)")
def upload_status(request: HttpRequest, params: Query[StatusIn]):
    return admin.recordings_upload_status(source=params.source)


class FileIn(Schema):
    file: Literal["wav", "original"] = "wav"


@recordings_router.get("/{recording_id}/stream",
                       **answers(None, *_MEDIA_ERRORS, docs=MEDIA_DOCS),
                       summary="Play a recording (HTTP Range; may redirect to Storage)")
def stream(request: HttpRequest, recording_id: RecordingId, params: Query[FileIn]):
    media = lookups.recording_media(principal=request.principal, recording_id=recording_id,
                                     variant=params.file)
    return delivery.media_response(request, media, attachment=False)


@recordings_router.get("/{recording_id}/download",
                       **answers(None, *_MEDIA_ERRORS, docs=MEDIA_DOCS),
                       summary="Download a recording (attachment)")
def download(request: HttpRequest, recording_id: RecordingId, params: Query[FileIn]):
    media = lookups.recording_media(principal=request.principal, recording_id=recording_id,
                                     variant=params.file)
    return delivery.media_response(request, media, attachment=True)


@recordings_router.post("/{recording_id}/retry-upload",
                        **answers({200: UploadOut, 202: UploadOut}, 400, 401, 403, 404, 409,
                                  502, 503),
                        summary="Retry a failed recording (admin or a participant)")
def retry_upload(request: HttpRequest, recording_id: RecordingId):
    return Status(*retries.recording_retry(principal=request.principal,
                                            recording_id=recording_id))


@calls_router.get("/{call_id}/has-recording",
                  **answers(HasRecordingOut, 400, 401, 403, 404, 503),
                  summary="Does this call have a recording?")
def call_has_recording(request: HttpRequest, call_id: CallId):
    return lookups.call_has_recording(principal=request.principal, call_id=call_id)


@users_router.get("/{uid}/has-recording", **answers(HasRecordingOut, 400, 401, 503),
                  summary="The user's latest call with a completed recording")
def user_has_recording(request: HttpRequest, uid: Uid):
    return lookups.user_has_recording(principal=request.principal, uid=uid)


class AdminListIn(Schema):
    date_from: str | None = Field(None, max_length=40, description="YYYY-MM-DD or ISO 8601")
    date_to: str | None = Field(None, max_length=40, description="inclusive")
    group_id: str | None = Field(None, max_length=128)
    user_id: str | None = Field(None, max_length=128)
    status: RecordingStatus | None = None
    source: Source | None = None
    format: str | None = Field(None, pattern=r"^[a-z0-9]{1,8}$")
    limit: int = Field(50, ge=1, le=200)
    next_page_token: RecordingId | None = None


@admin_router.get("/recordings", **answers(AdminRecordingsOut, 400, 401, 403, 503),
                  summary="Every recording, filtered and paged (admin)")
def admin_recordings(request: HttpRequest, params: Query[AdminListIn]):
    return admin.recordings_admin_list(
        date_from=params.date_from, date_to=params.date_to, group_id=params.group_id,
        user_id=params.user_id, status=params.status, source=params.source,
        fmt=params.format, limit=params.limit, page_token=params.next_page_token)

