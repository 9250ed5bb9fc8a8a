"""The one error hierarchy of Memharbor: what a client should see when something is refused.

Each class carries its HTTP status and a stable machine `code`; raise sites name the class,
never a string code. Rendering (`{"success": false, "error": {"code", "message"}}`) lives in
`api/errors.py`; the recorder renders the same shape itself. No HTTP framework here.
"""

from __future__ import annotations


class AppError(Exception):
    """An error the client should see: HTTP status, stable machine code, human message.

    `extra` adds top-level fields to the error object (e.g. `status`, `callId`, `reason`).
    """

    status = 400
    code = "bad_request"
    message = "The request is not valid."

    def __init__(self, message: str | None = None, *, code: str | None = None,
                 http_status: int | None = None, **extra):
        self.message = message or self.message
        self.code = code or self.code
        self.status = http_status or self.status
        self.extra = extra
        super().__init__(self.message)


# --- 400 --------------------------------------------------------------------------------

class ValidationFailed(AppError):
    code = "validation_error"


class MalformedJson(AppError):
    code = "malformed_json"
    message = "The request body is not valid JSON."


class HostNotServed(AppError):
    # Not the host itself in the message: it is the client's, and Django's text advises on
    # ALLOWED_HOSTS.
    code = "disallowed_host"
    message = "The Host header names a host this server does not serve."


class UnsupportedAudio(AppError):
    code = "unsupported_audio"
    message = "The file is not audio this server can read."


# --- 401 / 403 ----------------------------------------------------------------------------

class Unauthenticated(AppError):
    status = 401
    code = "unauthenticated"
    message = "Authentication required: send 'Authorization: Bearer <Firebase ID token>'."


class WebhookSignatureInvalid(AppError):
    status = 401
    code = "invalid_signature"
    message = "The webhook signature is not valid."


class Forbidden(AppError):
    status = 403
    code = "forbidden"
    message = "You are not allowed to do this."


class NotInCall(Forbidden):
    """The one refusal for someone who is not a party of the call (or its recording)."""

    code = "not_in_call"
    message = "Only the call's participants (or an admin) can do this."


class WrongParty(Forbidden):
    code = "wrong_party"


class UidReserved(Forbidden):
    code = "uid_reserved"
    message = "This Agora uid is reserved for the recorder."


class InvalidSignature(Unauthenticated):
    code = "invalid_signature"
    message = "The request's signature is missing or does not match its body."
class AudioTokenInvalid(Forbidden):
    code = "invalid_audio_token"
    message = "The audio token is not valid for this job."


class AdminRequired(Forbidden):
    code = "admin_required"
    message = "This endpoint needs the ops key or an admin account."


# --- 404 ----------------------------------------------------------------------------------

class NotFound(AppError):
    status = 404
    code = "not_found"
    message = "Not found."


class CallNotFound(NotFound):
    code = "call_not_found"
    message = "No call with this id."


class NoActiveCall(NotFound):
    code = "no_active_call"
    message = "No ringing or accepted call on this channel."


class RecordingNotFound(NotFound):
    code = "recording_not_found"
    message = "No recording with this id."


class AnalysisNotFound(NotFound):
    code = "analysis_not_found"
    message = "No analysis job with this id."


# --- 409 ----------------------------------------------------------------------------------

class Conflict(AppError):
    status = 409
    code = "conflict"


class InvalidTransition(Conflict):
    code = "invalid_transition"


class UidTaken(Conflict):
    code = "uid_taken"
    message = "Another participant of this call holds this Agora uid."


class RecordingNotReady(Conflict):
    code = "recording_not_ready"


class NotFailed(Conflict):
    code = "not_failed"


class SourceMissing(Conflict):
    code = "source_missing"


# --- 410 ------------------------------------------------------------------------------------

class Gone(AppError):
    status = 410
    code = "gone"


class RecordingDeleted(Gone):
    code = "recording_deleted"
    message = "This recording was deleted."


class AnalysisFinished(Gone):
    code = "analysis_finished"
    message = "The analysis job is finished; its audio URL no longer works."


class CallNotActive(AppError):
    status = 410
    code = "call_not_active"
    message = "No ringing or accepted call on this channel any more."


# --- 411 / 413 / 415 / 429 / 5xx ----------------------------------------------------------

class LengthRequired(AppError):
    status = 411
    code = "length_required"
    message = "Send the request body with a Content-Length."


class PayloadTooLarge(AppError):
    status = 413
    code = "payload_too_large"


class UnsupportedMediaType(AppError):
    status = 415
    code = "unsupported_media_type"


class TooManyAttempts(AppError):
    status = 429
    code = "too_many_attempts"
    message = "Too many failed attempts; wait a few minutes and try again."


class ServiceUnavailable(AppError):
    status = 503
    code = "service_unavailable"


class Contention(ServiceUnavailable):
    code = "contention"
    message = "Too many simultaneous changes to this call; retry."


class AudioUnavailable(ServiceUnavailable):
    code = "audio_unavailable"


class DependencyTimeout(ServiceUnavailable):
    """Firestore or Storage did not answer within its deadline; the answer carries
    `Retry-After: <retry_after>` seconds."""

    code = "dependency_timeout"
    message = "A service this server depends on did not answer in time; retry shortly."

    def __init__(self, message: str | None = None, *, retry_after: int = 5, **kwargs):
        super().__init__(message, **kwargs)
        self.retry_after = retry_after


class RecorderUnavailable(ServiceUnavailable):
    code = "recorder_unavailable"
    message = "The recorder service cannot be reached."


class RecorderBusy(ServiceUnavailable):
    code = "recorder_busy"
    message = "Every recorder records as many sessions as it can; retry later."
