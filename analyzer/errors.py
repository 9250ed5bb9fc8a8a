"""The analyzer's two kinds of error: a refused request (`RequestRefused`, an HTTP answer)
and a failed job (`JobFailed`, reported in the `failed` webhook). Both carry a stable code."""

from __future__ import annotations


class RequestRefused(Exception):
    """Rendered as `{"success": false, "error": {"code", "message"[, "field"]}}`."""

    code = "request_refused"
    status = 400

    def __init__(self, message: str, *, code: str | None = None, field: str | None = None):
        super().__init__(message)
        self.message = message
        self.field = field
        if code:
            self.code = code

    def as_json(self) -> dict:
        error = {"code": self.code, "message": self.message}
        if self.field is not None:
            error["field"] = self.field
        return {"success": False, "error": error}


class InvalidJson(RequestRefused):
    code, status = "invalid_json", 400


class InvalidField(RequestRefused):
    """`field` names the request field that is missing or wrong."""

    code, status = "invalid_field", 400


class InvalidSignature(RequestRefused):
    code, status = "invalid_signature", 401


class QueueFull(RequestRefused):
    code, status = "queue_full", 429


class ShuttingDown(RequestRefused):
    code, status = "shutting_down", 503


class JobFailed(Exception):
    """A job cannot finish; `code` goes to `result.error` of the `failed` webhook."""

    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code = code
        self.message = message
