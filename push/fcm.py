"""Android pushes over FCM HTTP v1 (`messages:send`), authenticated with the service
account through google-auth's AuthorizedSession (it fetches, caches and refreshes the
OAuth token, and retries once on 401 itself). UNAVAILABLE / INTERNAL / QUOTA_EXCEEDED
get one retry, honouring Retry-After up to a cap so an invite never waits long.
"""

from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass

import requests
import structlog
from google.auth.transport.requests import AuthorizedSession
from google.oauth2 import service_account

log = structlog.get_logger("push.fcm")

FCM_SCOPE = "https://www.googleapis.com/auth/firebase.messaging"
PRODUCTION_URL = "https://fcm.googleapis.com"
_RETRY_CODES = {"UNAVAILABLE", "INTERNAL", "QUOTA_EXCEEDED"}
_MAX_RETRY_WAIT_SECONDS = 1.0
_FCM_ERROR_TYPE = "type.googleapis.com/google.firebase.fcm.v1.FcmError"


@dataclass(frozen=True)
class FcmResult:
    ok: bool
    status: int | None
    error: str | None  # FcmError code (UNREGISTERED, ...), else the RPC status, or ours
    dead: bool = False


def fcm_error_code(body: dict) -> str | None:
    """The FcmError code when the answer carries one, else the RPC status string."""
    error = body.get("error") or {}
    for detail in error.get("details") or []:
        if detail.get("@type") == _FCM_ERROR_TYPE and detail.get("errorCode"):
            return detail["errorCode"]
    return error.get("status")


class FcmClient:
    """Sends data messages for one Firebase project; safe to share between threads."""

    def __init__(self, *, project_id: str, service_account_info: dict, base_url: str,
                 timeout: float = 3.0, sleep=time.sleep):
        self.project_id = project_id
        self._info = service_account_info
        self.url = f"{base_url.rstrip('/')}/v1/projects/{project_id}/messages:send"
        self._timeout = timeout
        self._sleep = sleep
        self._lock = threading.Lock()
        self._session: AuthorizedSession | None = None
        self._pid = 0

    def _http(self) -> AuthorizedSession:
        with self._lock:
            if self._session is None or self._pid != os.getpid():
                credentials = service_account.Credentials.from_service_account_info(
                    self._info, scopes=[FCM_SCOPE])
                self._session = AuthorizedSession(credentials)
                self._pid = os.getpid()
            return self._session

    def send_data(self, *, token: str, data: dict[str, str], ttl_seconds: int,
                  priority: str = "HIGH") -> FcmResult:
        """Send one data message (Android priority HIGH or NORMAL); never raises for a
        provider failure."""
        message = {"message": {"token": token, "data": data,
                               "android": {"priority": priority, "ttl": f"{ttl_seconds}s"}}}
        result, wait = self._post(message)
        if result.error in _RETRY_CODES:
            self._sleep(min(max(wait, 0.0), _MAX_RETRY_WAIT_SECONDS))
            result, _ = self._post(message)
        if result.error == "INVALID_ARGUMENT":
            log.warning("fcm_invalid_argument", status=result.status)
        return result

    def _post(self, message: dict) -> tuple[FcmResult, float]:
        try:
            response = self._http().post(self.url, json=message, timeout=self._timeout)
        except requests.Timeout:
            return FcmResult(ok=False, status=None, error="timeout"), 0.0
        except Exception as exc:  # google-auth RefreshError, connection errors, ...
            log.warning("fcm_request_failed", error=repr(exc))
            return FcmResult(ok=False, status=None, error="connection_error"), 0.0
        if response.status_code == 200:
            return FcmResult(ok=True, status=200, error=None), 0.0
        try:
            code = fcm_error_code(response.json()) or f"http_{response.status_code}"
        except ValueError:
            code = f"http_{response.status_code}"
        try:
            wait = float(response.headers.get("Retry-After", "0.3"))
        except ValueError:
            wait = 0.3
        return FcmResult(ok=False, status=response.status_code, error=code,
                         dead=code == "UNREGISTERED"), wait
