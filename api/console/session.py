"""Signing in to the console: the ops key or an admin's Firebase ID token, into a session
kept in Firestore (api.console.sessions); failed attempts are rate-limited per client IP
across every worker and server (counted in Firestore)."""

from __future__ import annotations

import hashlib
import hmac
import time
from datetime import timedelta
from functools import wraps
from urllib.parse import quote

from django.conf import settings
from django.http import HttpRequest, HttpResponseRedirect
from django.urls import reverse
from google.cloud import firestore

from api.auth import principal_from_id_token
from api.errors import api_error_response
from core.clock import utc_now
from core.errors import Forbidden, TooManyAttempts, Unauthenticated
from core.principal import Principal
from integrations.firebase import firestore_client

SESSION_KEY = "console"
FAILURES = "consoleSignInFailures"


class SignInLimiter:
    """At most `CONSOLE_SIGNIN_MAX_FAILURES` failed sign-ins per key within
    `CONSOLE_SIGNIN_WINDOW_SECONDS`, shared by every process: a sliding-window counter (the
    count of this fixed window plus the previous window's, weighted by how much of it still
    overlaps the sliding one). One document per key and window, `consoleSignInFailures/
    {sha256(key)}-{window}`, bumped with an atomic increment; `expireAt` for a TTL policy."""

    def _windows(self, key: str) -> tuple[float, list]:
        window = settings.CONSOLE_SIGNIN_WINDOW_SECONDS
        now = time.time()
        index = int(now // window)
        digest = hashlib.sha256(key.encode()).hexdigest()[:32]
        collection = firestore_client().collection(FAILURES)
        overlap = 1 - (now - index * window) / window  # of the previous window, 1 -> 0
        return overlap, [collection.document(f"{digest}-{i}") for i in (index, index - 1)]

    def check(self, key: str) -> None:
        overlap, (current, previous) = self._windows(key)
        counts = {snap.reference.path: snap.get("count") if snap.exists else 0
                  for snap in firestore_client().get_all([current, previous])}
        if counts[current.path] + overlap * counts[previous.path] \
                >= settings.CONSOLE_SIGNIN_MAX_FAILURES:
            raise TooManyAttempts()

    def failed(self, key: str) -> None:
        _, (current, _) = self._windows(key)
        expire = utc_now() + timedelta(seconds=2 * settings.CONSOLE_SIGNIN_WINDOW_SECONDS)
        current.set({"count": firestore.Increment(1), "expireAt": expire}, merge=True)


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

