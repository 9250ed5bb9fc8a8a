"""The one place that renders errors as HTTP answers.

Every error body is `{"error": {"code", "message"}}` plus `"success": false`, which the
seed's clients read. App code raises a `core.errors.AppError` subclass; nothing else builds
error JSON.
"""

from __future__ import annotations

import http
import math

import structlog
from django.conf import settings
from django.core.exceptions import DisallowedHost
from django.http import HttpRequest, JsonResponse

from core.errors import AppError, DependencyTimeout, HostNotServed
from integrations.firebase import deadline_exceeded

log = structlog.get_logger("api.errors")


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


def api_error_response(exc: AppError) -> JsonResponse:
    retry_after = getattr(exc, "retry_after", None)
    headers = {"Retry-After": str(retry_after)} if retry_after is not None else None
    return error_response(http_status=exc.status, code=exc.code, message=exc.message,
                          headers=headers, **exc.extra)


def dependency_timeout_response(request: HttpRequest,
                                exc: BaseException) -> JsonResponse | None:
    """503 dependency_timeout when `exc` is a Firestore call that ran out of its deadline
    (FIRESTORE_TIMEOUT_SECONDS); None for any other exception."""
    if not deadline_exceeded(exc):
        return None
    log.warning("dependency_timeout", path=request.path, error=f"{type(exc).__name__}: {exc}")
    return api_error_response(DependencyTimeout(
        f"Firestore did not answer within {settings.FIRESTORE_TIMEOUT_SECONDS:g} s; "
        "retry shortly.", retry_after=max(1, math.ceil(settings.FIRESTORE_TIMEOUT_SECONDS))))


def server_error_response(request: HttpRequest) -> JsonResponse:
    """500 with the request id to quote, nothing of the failure."""
    request_id = getattr(request, "request_id", "")
    return error_response(
        http_status=500, requestId=request_id,
        message=f"Internal server error; quote request id {request_id} when reporting it.")


def internal_error_response(request: HttpRequest, exc: BaseException) -> JsonResponse:
    """Log the traceback, answer 500 with the request id and nothing of the exception."""
    log.error("unhandled_exception", exc_info=exc, path=request.path)
    return server_error_response(request)


# Django's own error views (config/urls.py handler400/403/404/500): JSON, never its HTML.

def django_bad_request(request, exception=None):
    if isinstance(exception, DisallowedHost):
        return api_error_response(HostNotServed())
    return error_response(http_status=400, message="The request is not valid for this server.")


def django_forbidden(request, exception=None):
    return error_response(http_status=403, message="You are not allowed to do this.")


def django_not_found(request, exception=None):
    return error_response(http_status=404, message=f"No endpoint at {request.path}.")


def django_server_error(request):
    return server_error_response(request)

