"""HTTP client for the recorder service (`python -m recorder`), with the shared secret in
`X-Recorder-Secret`. Not reaching it is RecorderUnavailable (503 recorder_unavailable)."""

from __future__ import annotations

from functools import lru_cache

import httpx
from django.conf import settings

from core.errors import AppError, RecorderUnavailable


@lru_cache(maxsize=1)
def _http() -> httpx.Client:
    return httpx.Client(base_url=settings.RECORDER_SERVICE_URL.rstrip("/"),
                        headers={"X-Recorder-Secret": settings.RECORDER_SECRET})


def recorder_call(method: str, path: str, *, json: dict | None = None,
                  timeout: float = 10.0) -> dict:
    """The recorder's JSON answer. Its own 4xx errors keep their code and status; its 5xx
    become 502 with its code."""
    if not settings.RECORDER_SERVICE_URL:
        raise RecorderUnavailable("The recorder is not configured (RECORDER_SERVICE_URL).")
    try:
        response = _http().request(method, path, json=json, timeout=timeout)
    except httpx.HTTPError as exc:
        raise RecorderUnavailable(
            f"The recorder service cannot be reached ({type(exc).__name__}).") from None
    try:
        body = response.json()
    except ValueError:
        raise RecorderUnavailable(
            f"The recorder answered {response.status_code} without JSON.") from None
    if response.status_code >= 400:
        error = body.get("error") or {}
        status = response.status_code if response.status_code < 500 else 502
        raise AppError(error.get("message") or "The recorder refused the request.",
                       code=error.get("code") or "recorder_error", http_status=status)
    return body
