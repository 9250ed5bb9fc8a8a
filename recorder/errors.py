"""One error type for the recorder, rendered as `{"error": {"code", "message"}}`."""

from __future__ import annotations


class RecorderError(Exception):
    code = "recorder_error"
    status = 500

    def __init__(self, message: str, *, code: str | None = None, status: int | None = None):
        super().__init__(message)
        self.message = message
        if code:
            self.code = code
        if status:
            self.status = status

    def as_json(self) -> dict:
        return {"error": {"code": self.code, "message": self.message}}


class BadRequest(RecorderError):
    code, status = "bad_request", 400


class Unauthorized(RecorderError):
    code, status = "unauthorized", 401


class SessionNotFound(RecorderError):
    code, status = "session_not_found", 404


class ShuttingDown(RecorderError):
    code, status = "shutting_down", 503


class RecorderBusy(RecorderError):
    """RECORDER_MAX_SESSIONS sessions already: the API places the session elsewhere."""
    code, status = "recorder_busy", 503


class AgoraNotConfigured(RecorderError):
    code, status = "agora_not_configured", 503


class AgoraJoinTimeout(RecorderError):
    code, status = "agora_join_timeout", 504


class StartFailed(RecorderError):
    """The page could not start recording (join refused, browser error, ...)."""
    code, status = "start_failed", 502
