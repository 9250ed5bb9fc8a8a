"""One application error type and the one place that renders errors.

Every error body is `{"error": {"code", "message"}}` plus `"success": false`, which the
seed's clients read. App code raises an `ApiError` subclass; nothing else builds error JSON.
"""

from __future__ import annotations

import http

import structlog
from django.http import HttpRequest, JsonResponse

log = structlog.get_logger("api.errors")


class ApiError(Exception):
    """An error the client should see: HTTP status, stable machine code, human message."""

    status = 400
    code = "bad_request"
    message = "The request is not valid."

    def __init__(self, message: str | None = None, *, code: str | None = None,
                 http_status: int | None = None, **extra):
        self.message = message or self.message
        self.code = code or self.code
        self.status = http_status or self.status
        self.extra = extra  # additional top-level fields of the error object
        super().__init__(self.message)


class ValidationFailed(ApiError):
    code = "validation_error"


class MalformedJson(ApiError):
    code = "malformed_json"
    message = "The request body is not valid JSON."


class Unauthenticated(ApiError):
    status = 401
    code = "unauthenticated"
    message = "Authentication required: send 'Authorization: Bearer <Firebase ID token>'."


class Forbidden(ApiError):
    status = 403
    code = "forbidden"
    message = "You are not allowed to do this."


class NotFound(ApiError):
    status = 404
    code = "not_found"
    message = "Not found."


class Conflict(ApiError):
    status = 409
    code = "conflict"


class PayloadTooLarge(ApiError):
    status = 413
    code = "payload_too_large"


class ServiceUnavailable(ApiError):
    status = 503
    code = "service_unavailable"


_CODES_BY_STATUS = {
    400: "bad_request",
    401: "unauthenticated",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    413: "payload_too_large",
    429: "rate_limited",
    500: "internal_error",
    503: "service_unavailable",
}


def error_response(*, http_status: int, code: str | None = None, message: str | None = None,
                   headers: dict | None = None, **extra) -> JsonResponse:
    """The one JSON shape of every error answer; `extra` adds fields to the error object."""
    body_error = {
        "code": code or _CODES_BY_STATUS.get(http_status, f"http_{http_status}"),
        "message": message or http.HTTPStatus(http_status).phrase,
        **extra,
    }
    response = JsonResponse({"success": False, "error": body_error}, status=http_status,
                            json_dumps_params={"ensure_ascii": False})
    for name, value in (headers or {}).items():
        response[name] = value
    return response


def api_error_response(exc: ApiError) -> JsonResponse:
    return error_response(http_status=exc.status, code=exc.code, message=exc.message,
                          **exc.extra)


def _server_error(request: HttpRequest) -> JsonResponse:
    request_id = getattr(request, "request_id", "")
    return error_response(
        http_status=500, requestId=request_id,
        message=f"Internal server error; quote request id {request_id} when reporting it.")


def internal_error_response(request: HttpRequest, exc: BaseException) -> JsonResponse:
    """Log the traceback, answer 500 with the request id and nothing of the exception."""
    log.error("unhandled_exception", exc_info=exc, path=request.path)
    return _server_error(request)


def django_not_found(request, exception=None):
    return error_response(http_status=404, message=f"No endpoint at {request.path}.")


def django_server_error(request):
    return _server_error(request)
