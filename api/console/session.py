"""Signing in to the console: the ops key or an admin's Firebase ID token, kept in a
signed-cookie session (no database); failed attempts are rate-limited per client IP,
in this process only (each gunicorn worker counts its own)."""

from __future__ import annotations

import hmac
import threading
import time
from collections import deque
from functools import wraps
from urllib.parse import quote

from django.conf import settings
from django.http import HttpRequest, HttpResponseRedirect
from django.urls import reverse

from api.auth import principal_from_id_token
from api.errors import api_error_response
from core.errors import Forbidden, TooManyAttempts, Unauthenticated
from core.principal import Principal

SESSION_KEY = "console"


class SignInLimiter:
    """At most `max_failures` failed sign-ins per key within `window` seconds."""

    def __init__(self):
        self._failures: dict[str, deque] = {}
        self._lock = threading.Lock()

    def _recent(self, key: str, now: float) -> deque:
        window = settings.CONSOLE_SIGNIN_WINDOW_SECONDS
        times = self._failures.setdefault(key, deque())
        while times and times[0] <= now - window:
            times.popleft()
        return times

    def check(self, key: str) -> None:
        with self._lock:
            if len(self._recent(key, time.monotonic())) >= settings.CONSOLE_SIGNIN_MAX_FAILURES:
                raise TooManyAttempts()

    def failed(self, key: str) -> None:
        with self._lock:
            self._recent(key, time.monotonic()).append(time.monotonic())
            if len(self._failures) > 10_000:  # bounded: forget the quietest keys
                for stale in [k for k, v in self._failures.items() if not v][:5000]:
                    del self._failures[stale]

    def clear(self) -> None:
        with self._lock:
            self._failures.clear()


limiter = SignInLimiter()


def principal_from_credential(credential: str) -> Principal:
    """The ops key, or an admin's Firebase ID token (any other user is refused)."""
    credential = credential.strip()
    if not credential:
        raise Unauthenticated("Paste the ops key or an admin's ID token.", code="no_credential")
    expected = settings.OPS_API_KEY
    if expected and hmac.compare_digest(credential.encode(), expected.encode()):
        return Principal(uid="ops", admin=True, via="ops")
    if credential.count(".") != 2 and not credential.startswith("dev:"):
        raise Unauthenticated("That is not the ops key.", code="invalid_credential")
    principal = principal_from_id_token(credential)
    if not principal.admin:
        raise Forbidden("This account is not an admin.", code="admin_required")
    return principal


def session_sign_in(request: HttpRequest, principal: Principal) -> None:
    request.session.cycle_key()
    request.session[SESSION_KEY] = {"uid": principal.uid, "via": principal.via,
                                    "at": int(time.time())}
    request.session.set_expiry(settings.CONSOLE_SESSION_HOURS * 3600)


def session_principal(request: HttpRequest) -> Principal | None:
    """The console user of this session (an admin for every service), or None."""
    held = request.session.get(SESSION_KEY)
    if not held or not isinstance(held, dict) or not held.get("uid"):
        return None
    return Principal(uid=held["uid"], admin=True, via=f"console:{held.get('via')}")


def console_page(view):
    """A page for a signed-in console user: `request.principal` is set; otherwise the
    sign-in page (or 401 JSON for the poll endpoint)."""

    @wraps(view)
    def guarded(request: HttpRequest, *args, **kwargs):
        principal = session_principal(request)
        if principal is None:
            if request.path.endswith(".json"):
                return api_error_response(Unauthenticated("Sign in to the console."))
            return HttpResponseRedirect(
                f"{reverse('console:sign_in')}?next={quote(request.path, safe='/')}")
        request.principal = principal
        return view(request, *args, **kwargs)

    return guarded

