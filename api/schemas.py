"""Response schemas of every endpoint: what `/api/openapi.json` documents and what each
answer is checked against.

The JSON the apps read is binding, so these models describe it and never reshape it:
- every model answers exactly the keys it was given, in the order given: a declared field
  the view did not send stays absent (never `null`), and undeclared keys pass through
  (`extra="allow"`), so a field added to a document reaches the apps even before it is
  declared here;
- types are ones pydantic validates without converting (no `float` for an int, no
  `datetime` for a string): timestamps are the ISO 8601 strings the services produce;
- errors are raised and rendered by the handler in `api/main.py`; `ErrorBody` only
  documents that shape.
"""

from __future__ import annotations

from datetime import date, datetime, time
from typing import Annotated, Any, Literal

from django.core.serializers.json import DjangoJSONEncoder
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ModelWrapValidatorHandler,
    PrivateAttr,
    SerializerFunctionWrapHandler,
    create_model,
    model_serializer,
    model_validator,
)

from calls.states import Status as CallStatusEnum
from recordings.states import STATUSES

CallStatus = Literal[tuple(s.value for s in CallStatusEnum)]  # type: ignore[valid-type]
RecordingStatus = Literal[STATUSES]  # type: ignore[valid-type]
Source = Literal["recorder", "upload"]


def _as_rendered(value: Any) -> Any:
    # A datetime that reached a view unconverted is answered as the JSON renderer writes
    # it; the schema must not change that string.
    if isinstance(value, datetime | date | time):
        return DjangoJSONEncoder().default(value)
    return value


Timestamp = Annotated[
    str, BeforeValidator(_as_rendered),
    Field(description="ISO 8601 UTC, e.g. 2026-02-04T05:49:23.670148Z",
          json_schema_extra={"format": "date-time"}),
]


class Out(BaseModel):
    """A response body: the keys given, as given and in the order given, and any
    undeclared ones too."""

    model_config = ConfigDict(extra="allow")
    _given_order: list[str] | None = PrivateAttr(None)

    @model_validator(mode="wrap")
    @classmethod
    def _remember_order(cls, data: Any, handler: ModelWrapValidatorHandler):
        model = handler(data)
        if isinstance(data, dict) and isinstance(model, Out):
            model._given_order = list(data)
        return model

    # No return annotation: pydantic would document the serialized body as that type.
    @model_serializer(mode="wrap")
    def _keys_given(self, handler: SerializerFunctionWrapHandler):
        data = handler(self)
        given = self.model_fields_set | set(self.__pydantic_extra__ or ())
        order = self._given_order or list(data)
        return {key: data[key] for key in order if key in given and key in data}


# --- errors -------------------------------------------------------------------------------

class FieldError(Out):
    field: str = Field(description="Dotted path of the request field ('' for the whole body)")
    message: str


class ErrorDetail(Out):
    code: str = Field(description="Stable machine code, e.g. validation_error, "
                                  "unauthenticated, not_in_call, call_not_found, "
                                  "invalid_transition, busy, recorder_unavailable")
    message: str = Field(description="For people; may change")
    details: list[FieldError] | None = Field(None, description="validation_error: each field")
    status: str | None = Field(None, description="invalid_transition, not_failed, "
                                                 "recording_not_ready: the current status")
    callId: str | None = Field(None, description="busy: the call holding the line; "
                                                 "invalid_transition: the call")
    reason: str | None = Field(None, description="unsupported_audio, audio_unavailable: "
                                                 "what the audio tools said")
    requestId: str | None = Field(None, description="internal_error: quote it when reporting")


class ErrorBody(Out):
    """Every error answer. The error object may carry more fields than those listed."""

    success: Literal[False]
    error: ErrorDetail


# The codes behind each error status, across the API (an endpoint answers some of them).
_ERROR_DESCRIPTIONS = {
    400: "Bad request: validation_error (with `details`), malformed_json, "
         "malformed_multipart, self_call, unsupported_audio (with `reason`), bad_page_token",
    401: "No valid credentials: unauthenticated, invalid_token, token_expired, "
         "invalid_authorization_header, invalid_signature, invalid_recorder_secret",
    403: "Not allowed: forbidden, not_in_call, wrong_party, not_the_caller, admin_required, "
         "invalid_ops_key, uid_reserved, wrong_uid",
    404: "Not found: not_found, call_not_found, recording_not_found, no_active_call, "
         "bad_cursor, no_original, recording_file_missing, session_not_found",
    409: "Conflict with the current state: invalid_transition (with `status`, `callId`), "
         "busy (with `callId` of the call holding the line), idempotency_key_reused, "
         "recording_not_ready / not_failed (with `status`), source_missing, uid_taken",
    411: "length_required: send the upload with a Content-Length",
    410: "Gone: recording_deleted (the recording was deleted or is being deleted); "
         "analysis_finished (the analysis job is final, its audio URL no longer works); "
         "call_not_active (no more recorder tokens: the call is over)",
    413: "payload_too_large, recording_too_large",
    429: "too_many_attempts",
    416: "range_not_satisfiable (`Content-Range: bytes */<size>`)",
    500: "internal_error, with `requestId`",
    502: "The recorder failed: its own code (start_failed, agora_join_timeout, "
         "recorder_error, ...)",
    503: "Unavailable or contended, retry later: service_unavailable, contention, "
         "recorder_unavailable, auth_unavailable, audio_unavailable (with `reason`), "
         "channel_events_disabled, storage_* codes; dependency_timeout (Firestore or "
         "Storage did not answer in time; `Retry-After` says when to retry)",
}


def answers(ok: type | dict[int, type] | None, *errors: int, docs: dict | None = None) -> dict:
    """The route's `response=` (its success schema, or {status: schema}; ErrorBody for
    each error status it can answer, 500, and 503 for a dependency timeout) and `openapi_extra=` (what each error
    status means; `docs` adds responses that bypass the schemas, e.g. raw bytes)."""
    response = {} if ok is None else dict(ok) if isinstance(ok, dict) else {200: ok}
    described = dict((docs or {}).get("responses", {}))
    for status in dict.fromkeys((*errors, 500, 503)):
        response[status] = ErrorBody
        described[status] = {"description": _ERROR_DESCRIPTIONS[status]}
    return {"response": response, "openapi_extra": {**(docs or {}), "responses": described}}


# --- calls ----------------------------------------------------------------------------------

class InviteOut(Out):
    success: Literal[True]
    callId: str
    channelName: str = Field(description="{groupId}_{callerId}_{receiverId}_{epoch ms}")
    status: CallStatus
    pushSent: bool = Field(description="Whether a push reached APNs/FCM for the receiver")
    pushPlatform: str | None = Field(description="ios | android, or null when not pushed")
    pushError: str | None = Field(description="Why no push was sent, or null")


class AnswerOut(Out):
    success: Literal[True]
    callId: str
    channelName: str
    status: CallStatus


class CallShortOut(Out):
    success: Literal[True]
    callId: str
    status: CallStatus


class EndOut(CallShortOut):
    durationSeconds: int = Field(description="Seconds from answer to end (0 if never answered)")


class PushDevice(Out):
    platform: str | None = Field(None, description="ios | android")
    sent: bool | None = None
    error: str | None = Field(None, description="pushError's codes")


class Presence(Out):
    """A party in the Agora channel, from Agora's channel events."""

    inChannel: bool | None = None
    joinedAt: Timestamp | None = None
    leftAt: Timestamp | None = None
    leaveReason: Any = Field(None, description="Agora's leave reason, as Agora sent it")


class CallDocument(Out):
    """`calls/{callId}` as the apps read it, every stored field (timestamps as ISO 8601),
    plus the seed's `caregiverUserId` and `giverNameSnapshot`."""

    callId: str
    channelName: str
    groupId: str
    callerId: str
    receiverId: str
    callerName: str
    caregiverUserId: str = Field(description="The seed's name for callerId")
    giverNameSnapshot: str = Field(description="The seed's name for callerName")
    groupNameSnapshot: str | None = None
    receiverNameSnapshot: str | None = None
    status: CallStatus
    createdAt: Timestamp
    updatedAt: Timestamp | None = None
    answeredAt: Timestamp | None = None
    endedAt: Timestamp | None = None
    durationSec: int | None = Field(None, description="Seconds from answer to end")
    endedBy: str | None = Field(None, description="uid of the party that ended it; null for "
                                                  "the ring timeout")
    endReason: str | None = Field(None, description="declined, cancelled, no_answer, timeout, "
                                                    "hangup, ...")
    pushSent: bool | None = None
    pushPlatform: str | None = None
    pushError: str | None = None
    pushDevices: dict[str, PushDevice] | None = Field(
        None, description="deviceId -> what the last push to that device did")
    recordingId: str | None = Field(None, description="The call's latest recording")
    agoraUids: dict[str, str] | None = Field(
        None, description="Agora uid (or account) -> the user who holds it on this call")
    presence: dict[str, Presence] | None = Field(None, description="uid -> in the channel?")
    talkSeconds: int | None = Field(None, description="Seconds both parties were in the "
                                                      "channel together")
    togetherSince: Timestamp | None = None
    callerLeftAt: Timestamp | None = None
    agoraSeq: dict[str, int] | None = Field(
        None, description="Agora uid -> the last clientSeq applied")
    humanSummary: str | None = None
    humanKeywords: list[str] | None = None
    humanNotes: str | None = None
    aiSummary: str | None = None
    reviewCount: int | None = None
    lastReviewAt: Timestamp | None = None


class SweepCallsPart(Out):
    updated: int | None = Field(None, description="Pending calls moved to missed")


class SweepEndedPart(Out):
    ended: int | None = Field(None, description="Calls a presence rule ended")


class SweepStoppedPart(Out):
    stopped: int | None = Field(None, description="Recorder sessions of final calls stopped")


class SweepRetriesNode(Out):
    retrying: int | None = Field(None, description="Its failed recordings it is retrying")
    error: str | None = Field(None, description="It was not healthy or did not answer: the "
                                                "error code (its recordings wait)")
    message: str | None = None
    recordings: int | None = Field(None, description="With error: its failed recordings")


class SweepRetriesPart(Out):
    retrying: int | None = Field(None, description="Failed recorder uploads being retried")
    nodes: dict[str, SweepRetriesNode] | None = Field(
        None, description="RECORDER_NODES: per node holding failed recordings (the node on "
                          "each recording's document)")


class SweepUploadsPart(Out):
    interrupted: int | None = None
    retried: int | None = None
    completed: int | None = None
    abandonedFilesRemoved: int | None = None


class SweepPartFailure(Out):
    error: str | None = Field(None, description="Set instead of the counts when the part "
                                                "failed: its error code")
    message: str | None = None


class SweepReport(Out):
    """One entry per part; a part that failed has `error` and `message` instead."""

    calls: SweepCallsPart | SweepPartFailure
    callsEnded: SweepEndedPart | SweepPartFailure
    recordingsOfEndedCalls: SweepStoppedPart | SweepPartFailure
    recorderRetries: SweepRetriesPart | SweepPartFailure
    uploads: SweepUploadsPart | SweepPartFailure


class SweepOut(Out):
    success: Literal[True]
    timeoutSeconds: int
    updatedCount: int = Field(description="Calls moved to missed")
    report: SweepReport


class ChannelEventOut(Out):
    success: Literal[True]
    result: Literal["applied", "ignored"]
    reason: str | None = Field(None, description="ignored: why (event_type, unknown_channel, "
                                                 "recorder, unknown_uid, unknown_call, "
                                                 "duplicate, stale)")
    callId: str | None = Field(None, description="applied: the call")
    status: CallStatus | None = Field(None, description="applied: the call's status after")


# --- recorder sessions ------------------------------------------------------------------------

class RecordingStartOut(Out):
    sid: str = Field(description="Recording session id (the recording's id once stored)")
    channel: str
    uid: int | None = Field(description="The recorder bot's Agora uid")
    filename: str | None = Field(description="{channel}_{timestamp}.webm while recording")
    status: Literal["recording"]


class RecorderTokenOut(Out):
    token: str = Field(description="The recorder bot's next Agora RTC token")
    expire_at: int = Field(description="Unix time (seconds) when the token expires")
    expire_in: int = Field(description="Seconds from now until it expires (RECORDER_TOKEN_SECONDS)")


class StorageRef(Out):
    url: str | None = None
    firestoreId: str | None = Field(None, description="recordings/{id}")
    storagePath: str | None = None


class RecordingStopOut(Out):
    """The seed's stop answer, plus what the recorder knows of the session."""

    sid: str
    channel: str | None = None
    uid: int | None = None
    callId: str | None = None
    status: str = Field(description="stopped (stored), failed (Storage refused; retried "
                                    "later; `error` says why), or the stored status when it "
                                    "was finished before")
    groupId: str | None = None
    user1: str | None = Field(None, description="The caller")
    user2: str | None = Field(None, description="The receiver")
    filename: str | None = Field(None, description=".wav, or .webm when conversion failed")
    format: str | None = Field(None, description="wav, or webm when conversion failed")
    duration: int | None = Field(None, description="milliseconds")
    firebase: StorageRef | None = Field(None, description="null when not stored")
    error: str | None = Field(None, description="failed: the Storage error code")
    bytes: int | None = None
    chunks: int | None = None
    durationMs: int | None = None
    stopReason: str | None = None
    recovered: bool | None = Field(None, description="Finished after a recorder restart")


class RecordingProcessingOut(Out):
    """A stop still converting or uploading after RECORDER_STOP_WAIT_SECONDS: the recorder
    finishes it; GET /api/recording/status lists it as `processing` meanwhile, and the
    recording (`sid` is its id) ends `completed` or `failed`. Stopping again answers 200
    once it is done."""

    sid: str
    channel: str | None = None
    uid: int | None = None
    callId: str | None = None
    filename: str | None = Field(None, description="{channel}_{timestamp}.webm as recorded")
    status: Literal["processing"]
    bytes: int | None = None
    chunks: int | None = None
    durationMs: int | None = None
    stopReason: str | None = None


class RecorderSession(Out):
    sid: str
    channel: str
    uid: int | None = None
    callId: str | None = None
    source: str | None = None
    filename: str | None = None
    status: str = Field(description="starting, recording, stopping, processing (stopped; "
                                    "being converted and uploaded)")
    startedAt: Timestamp | None = None
    chunks: int | None = None
    bytes: int | None = None
    remoteUsers: int | None = None


class RecordingSessionsOut(Out):
    sessions: list[RecorderSession]


class AudioSpec(Out):
    sampleRate: int
    channels: int
    bitDepth: int


class RecordingDocument(Out):
    """`recordings/{recordingId}`: the fields every source writes, plus an upload's own
    (original*, uploadedBy, declaredDuration); stored fields not listed pass through."""

    recordingId: str
    sid: str | None = None
    callId: str | None = None
    channel: str | None = None
    groupId: str | None = None
    user1: str | None = None
    user2: str | None = None
    participants: list[str] | None = None
    pair: str | None = None
    partiesKnown: bool | None = None
    source: Source | None = None
    status: RecordingStatus
    error: str | None = None
    retryCount: int | None = None
    filename: str | None = None
    format: str | None = None
    spec: AudioSpec | None = None
    duration: int | None = Field(None, description="milliseconds")
    fileSize: int | None = Field(None, description="bytes of the stored audio")
    sha256: str | None = None
    storagePath: str | None = None
    url: str | None = None
    storedBytes: int | None = None
    recordedAt: Timestamp | None = None
    createdAt: Timestamp | None = None
    updatedAt: Timestamp | None = None
    uploadedAt: Timestamp | None = None
    uploadedBy: str | None = None
    originalFilename: str | None = None
    originalFormat: str | None = None
    originalContentType: str | None = None
    originalSize: int | None = None
    originalPath: str | None = None
    declaredDuration: int | None = Field(None, description="seconds, as the app said")


class RecordingListOut(Out):
    recordings: list[RecordingDocument] = Field(description="Newest first")
    nextCursor: str | None = Field(description="Pass as `cursor` for the next page; null at "
                                               "the end")


# --- recording library ----------------------------------------------------------------------

class UploadOut(Out):
    success: Literal[True]
    recordingId: str
    callId: str | None
    status: RecordingStatus
    duration: int | None = Field(description="milliseconds")
    format: str | None
    fileSize: int | None
    duplicate: bool = Field(description="These bytes were uploaded for this call before")
    error: str | None = Field(None, description="Only when status is failed")


class CheckExistsOut(Out):
    exists: bool
    recordingId: str | None
    status: RecordingStatus | None


class HasRecordingOut(Out):
    hasRecording: bool
    callId: str | None
    recordingId: str | None
    recordedAt: Timestamp | None
    duration: int | None = Field(description="milliseconds")


UploadStatusOut = create_model(
    "UploadStatusOut", __base__=Out,
    __doc__="Recordings per status, the last completed upload, bytes in Storage.",
    **{status: (int, Field(description=f"Recordings {status}")) for status in STATUSES},
    total=(int, ...),
    lastUpload=(Timestamp | None, Field(description="uploadedAt of the last completed upload")),
    lastUploadId=(str | None, ...),
    storageUsed=(int, Field(description="bytes (WAVs and originals)")),
)


class AdminRecording(Out):
    recordingId: str
    callId: str | None
    sid: str | None
    channel: str | None
    groupId: str | None
    user1: str | None
    user2: str | None
    participants: list[str] | None
    source: Source | None
    status: RecordingStatus
    error: str | None
    retryCount: int | None
    duration: int | None = Field(description="milliseconds")
    fileSize: int | None
    format: str | None
    originalFilename: str | None
    originalFormat: str | None
    originalSize: int | None
    recordedAt: Timestamp | None
    createdAt: Timestamp | None
    uploadedAt: Timestamp | None


class AdminRecordingsOut(Out):
    recordings: list[AdminRecording] = Field(description="Newest recordedAt first")
    total: int = Field(description="Every match, not only this page")
    limit: int
    nextPageToken: str | None


MEDIA_DOCS = {
    "responses": {
        200: {"description": "The whole file",
              "content": {"audio/wav": {"schema": {"type": "string", "format": "binary"}},
                          "audio/*": {"schema": {"type": "string", "format": "binary"}}}},
        206: {"description": "The requested range(s); several ranges as "
                             "multipart/byteranges",
              "headers": {"Content-Range": {"schema": {"type": "string"}}},
              "content": {"audio/*": {"schema": {"type": "string", "format": "binary"}},
                          "multipart/byteranges": {"schema": {"type": "string",
                                                              "format": "binary"}}}},
        302: {"description": "A short-lived signed Storage URL that serves the bytes and the "
                             "ranges itself",
              "headers": {"Location": {"schema": {"type": "string", "format": "uri"}}}},
    },
}


# --- health -----------------------------------------------------------------------------------

class Probe(Out):
    status: Literal["ok", "down"]
    latencyMs: float
    error: str | None = Field(None, description="down: the exception's class name")


class RecorderNode(Out):
    """One recorder node: with RECORDER_NODES each registered one (`recorderNodes/{nodeId}`,
    counts as of its last heartbeat), else the one at RECORDER_SERVICE_URL."""

    nodeId: str | None = Field(None, description="RECORDER_NODE_ID (null for a recorder that "
                                                 "does not register)")
    url: str = Field(description="Where the API reaches it (no credentials)")
    status: Literal["ok", "down", "stale"] = Field(
        description="ok: healthy and answers /health; down: healthy but does not answer; "
                    "stale: no heartbeat within 3 x RECORDER_HEARTBEAT_SECONDS (not asked)")
    healthy: bool = Field(description="Its heartbeat is fresh (placement uses it)")
    capacity: int | None = Field(None, description="RECORDER_MAX_SESSIONS")
    sessions: int | None = Field(None, description="Sessions recording")
    free: int | None = Field(None, description="capacity - sessions")
    heartbeatAt: str | None = None
    heartbeatAgeSeconds: float | None = None
    browser: str | None = Field(None, description="up | down")
    latencyMs: float | None = None
    error: str | None = Field(None, description="down: why")


class RecorderProbe(Out):
    status: Literal["ok", "down", "not_configured"]
    latencyMs: float | None = None
    error: str | None = Field(None, description="down: the exception's class name, or "
                                                "no_healthy_node")
    browser: str | None = Field(None, description="up | down (RECORDER_SERVICE_URL alone)")
    sessions: int | None = Field(None, description="Recording sessions in progress")
    capacity: int | None = Field(None, description="Sessions the usable nodes take in all")
    freeCapacity: int | None = Field(None, description="Sessions they can still take (the "
                                                       "nodes whose status is ok)")
    nodes: list[RecorderNode] | None = None


class HealthOut(Out):
    status: Literal["ok", "degraded", "down"] = Field(
        description="down (503) without Firestore; degraded without Storage")
    firestore: Probe
    storage: Probe
    recorder: RecorderProbe


class LiveOut(Out):
    status: Literal["ok"]


# --- analysis -------------------------------------------------------------------------------

AnalysisStatus = Literal["queued", "processing", "completed", "failed"]


class AnalysisStartOut(Out):
    jobId: str
    status: AnalysisStatus
    progress: int = Field(description="0-100, never decreasing")


class AnalysisJobOut(Out):
    """The seeds' `{status, progress, message, result}` plus the job's own fields."""

    jobId: str
    recordingId: str | None = None
    callId: str | None = None
    status: AnalysisStatus
    progress: int
    message: str | None = None
    seq: int | None = Field(None, description="Increases with every change (the SSE event id)")
    attempts: int | None = None
    nextAttemptAt: str | None = None
    engine: str | None = None
    result: dict | None = Field(None, description="summary, metrics, language, transcriber, "
                                                  "transcriptPath (JSON in Storage)")
    error: str | dict | None = None
    createdAt: str | None = None
    updatedAt: str | None = None
    completedAt: str | None = None
    requestedBy: str | None = None


EVENTS_DOCS = {"responses": {
    200: {"description": "text/event-stream: a comment at once, `retry: 3000`, then an event "
                         "per change (`id:` seq, `event:` progress|completed|failed, `data:` "
                         "the job as JSON), a comment heartbeat every 15 s; closes after the "
                         "terminal event. `Last-Event-ID` resumes after that seq.",
          "content": {"text/event-stream": {"schema": {"type": "string"}}}},
    204: {"description": "The job is final and the client has seen its last event"}}}


class AnalysisWebhookOut(Out):
    success: Literal[True]
    jobId: str
    applied: bool = Field(description="False for a replay, a stale or a late event")
