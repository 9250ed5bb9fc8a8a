"""Request id, one JSON log line per request, body-size guard, JSON for every error."""

from __future__ import annotations

import re
import time
import uuid

import structlog
from django.conf import settings
from django.core.exceptions import DisallowedHost
from django.http import HttpRequest, HttpResponse

from api.errors import (
    api_error_response,
    dependency_timeout_response,
    error_response,
    server_error_response,
)
from api.uploads import upload_limit_bytes
from core.errors import HostNotServed, LengthRequired

log = structlog.get_logger("api.request")

UPLOAD_PATH = "/api/recordings/upload"
WEBHOOK_PATH = "/api/webhooks/analysis"
MULTIPART_OVERHEAD = 1024 * 1024  # boundaries, part headers and the form fields
_CLIENT_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:\-]{8,128}$")


class RequestLogMiddleware:
    """Binds a request id (the client's `X-Request-ID` when sane), logs the outcome."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        started = time.perf_counter()
        incoming = request.headers.get("X-Request-ID", "")
        request.request_id = incoming if _CLIENT_REQUEST_ID.match(incoming) else uuid.uuid4().hex
        structlog.contextvars.clear_contextvars()
        structlog.contextvars.bind_contextvars(request_id=request.request_id)
        try:
            response = self._guard_body_size(request) or self.get_response(request)
            response["X-Request-ID"] = request.request_id
            principal = getattr(request, "principal", None)
            log.info(
                "request",
                method=request.method,
                path=request.path,
                status=response.status_code,
                ms=round((time.perf_counter() - started) * 1000, 1),
                uid=principal.uid if principal else None,
            )
            return response
        finally:
            structlog.contextvars.clear_contextvars()

    @staticmethod
    def _guard_body_size(request: HttpRequest) -> HttpResponse | None:
        # Refuse before reading: a declared oversized body is never buffered.
        if request.META.get("HTTP_TRANSFER_ENCODING"):
            # WSGI hands Django no length for a chunked body, so it would read none of it.
            return api_error_response(LengthRequired(
                "Send the body with a Content-Length, not Transfer-Encoding."))
        try:
            declared = int(request.META.get("CONTENT_LENGTH") or 0)
        except ValueError:
            return error_response(http_status=400, message="Content-Length is not a number.")
        limit = settings.API_MAX_BODY_BYTES
        if request.path.rstrip("/") == UPLOAD_PATH:
            if request.method == "POST" and not request.META.get("CONTENT_LENGTH"):
                return api_error_response(
                    LengthRequired("Send the upload with a Content-Length."))
            # The file's own limit is enforced while it streams to disk; this refuses a
            # declared body that cannot fit before reading any of it.
            limit = upload_limit_bytes() + MULTIPART_OVERHEAD
        elif request.path.startswith(WEBHOOK_PATH):
            limit = settings.ANALYSIS_WEBHOOK_MAX_BYTES  # callbacks carry transcripts
        if declared > limit:
            return error_response(
                http_status=413, message=f"The request body is larger than {limit} bytes."
            )
        return None


class JsonErrorMiddleware:
    """Turns Django's and ninja's plain-text and HTML errors (404, 405, a refused Host, dev
    mode's debug pages, ...) into JSON, on every path: this server answers nothing else
    but the console's own pages (marked `console_page`), which are HTML on purpose."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        try:
            request.get_host()  # before CommonMiddleware, whose refusal is HTML in dev mode
        except DisallowedHost:
            return api_error_response(HostNotServed())
        response = self.get_response(request)
        if response.status_code < 400 or getattr(response, "console_page", False):
            return response
        if response.get("Content-Type", "").startswith("application/json"):
            return response
        headers = {}
        if response.status_code == 405:
            headers["Allow"] = response.get("Allow", "")
            message = f"{request.method} is not allowed here; allowed: {headers['Allow']}."
        elif response.status_code == 404:
            message = f"No endpoint at {request.path}."
        elif response.status_code == 500:
            return server_error_response(request)
        else:
            message = None
        return error_response(http_status=response.status_code, message=message, headers=headers)

    def process_exception(self, request: HttpRequest, exception: Exception):
        # Views outside the NinjaAPI (the console): a Firestore deadline is a 503 there too.
        return dependency_timeout_response(request, exception)
