"""The NinjaAPI: routers, and the one exception handler that renders every error."""

from __future__ import annotations

from django.core.exceptions import RequestDataTooBig, SuspiciousOperation
from django.http import Http404, HttpRequest
from django.http.multipartparser import MultiPartParserError
from ninja import NinjaAPI
from ninja.errors import AuthenticationError, HttpError, ValidationError
from ninja.parser import Parser

from api import errors
from api.analysis import analysis_router, analyze_router
from api.auth import docs_access
from api.calls import router as call_router
from api.deletion import recordings_router as deletion_recordings_router
from api.deletion import users_router as deletion_users_router
from api.health import router as health_router
from api.library import admin_router, calls_router, recordings_router, users_router
from api.recordings import router as recording_router
from api.reviews import router as review_router
from api.tokens import router as token_router
from api.webhooks import router as webhooks_router
from core.errors import AppError, MalformedJson, NotFound, Unauthenticated, UnsupportedMediaType


class JsonBodyParser(Parser):
    """A body is read as JSON only when its Content-Type says JSON; ninja alone reads any."""

    def parse_body(self, request: HttpRequest):
        media_type = request.content_type.lower()
        if media_type != "application/json" and not (
                media_type.startswith("application/") and media_type.endswith("+json")):
            raise UnsupportedMediaType(
                f"Send the body as application/json, not {request.content_type or 'untyped'}.")
        return super().parse_body(request)


api = NinjaAPI(
    title="Memharbor API",
    parser=JsonBodyParser(),
    version="1",
    description="Agora tokens, calls, pushes and recordings for Memharbor's mobile apps.",
    urls_namespace="api",
    docs_decorator=docs_access,
)

api.add_router("/health", health_router)
api.add_router("/token", token_router)
api.add_router("/call", call_router)
api.add_router("/recording", recording_router)
api.add_router("/recordings", recordings_router)
api.add_router("/recordings", analyze_router)
api.add_router("/analysis", analysis_router)
api.add_router("/calls", calls_router)
api.add_router("/users", users_router)
api.add_router("/admin", admin_router)
api.add_router("/calls", review_router)
api.add_router("/recordings", deletion_recordings_router)
api.add_router("/users", deletion_users_router)
api.add_router("/webhooks", webhooks_router)


# Names our views give their schema parameters: an error about the whole schema (a model
# validator) is located at the parameter, which means nothing to the client.
_SCHEMA_PARAMS = {"params", "form", "payload"}


def _validation_message(exc: ValidationError) -> tuple[str, list[dict]]:
    details = []
    for error in exc.errors:
        # loc is ("body", "<param name>", "field", ...) for JSON and ("query" | "form" |
        # "file" | "path", "field") otherwise; the client knows only the field path.
        loc = [str(part) for part in error.get("loc", ())]
        where = loc[0] if loc else "body"
        loc = loc[2:] if where == "body" else [p for p in loc[1:] if p not in _SCHEMA_PARAMS]
        field = ".".join(loc)
        message = error.get("msg", "is not valid").removeprefix("Value error, ")
        if not field and where == "body" and error.get("type") == "missing":
            message = "A JSON request body is required."
        details.append({"field": field, "message": message})
    summary = "; ".join(f"{d['field']}: {d['message']}" if d["field"] else d["message"]
                        for d in details)
    return summary or "The request is not valid.", details


def _render_any_error(request: HttpRequest, exc: Exception):
    if isinstance(exc, AppError):
        return errors.api_error_response(exc)
    if isinstance(exc, ValidationError):
        message, details = _validation_message(exc)
        return errors.error_response(http_status=400, code="validation_error", message=message,
                                     details=details)
    if isinstance(exc, AuthenticationError):
        return errors.api_error_response(Unauthenticated())
    if isinstance(exc, HttpError):
        if isinstance(exc.__cause__, AppError):  # raised by JsonBodyParser, wrapped by ninja
            return errors.api_error_response(exc.__cause__)
        if exc.status_code == 400 and str(exc).startswith("Cannot parse request body"):
            return errors.api_error_response(MalformedJson())
        return errors.error_response(http_status=exc.status_code, message=str(exc))
    if isinstance(exc, Http404):
        return errors.api_error_response(NotFound())
    if isinstance(exc, RequestDataTooBig):
        return errors.error_response(http_status=413, message="The request body is too large.")
    if isinstance(exc, (MultiPartParserError, SuspiciousOperation)):
        return errors.error_response(http_status=400, code="malformed_multipart",
                                     message=f"The multipart body is not valid: {exc}")
    timed_out = errors.dependency_timeout_response(request, exc)
    return timed_out if timed_out is not None else errors.internal_error_response(request, exc)


# ninja picks the most specific registered handler, so every class it knows is pointed here.
for _exc_class in (Exception, ValidationError, HttpError, Http404):
    api.add_exception_handler(_exc_class, _render_any_error)
