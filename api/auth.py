"""Who is calling: Firebase ID tokens, development tokens, and the ops key.

- `Authorization: Bearer <Firebase ID token>`: verified by firebase-admin (RS256 signature
  against Google's certificates, audience = project id, issuer, expiry). Admin = custom
  claim `admin: true`.
- Local development only (`AUTH_MODE=dev` with debug on): `Bearer dev:<uid>` and
  `Bearer dev:<uid>:admin`.
- `X-Ops-Key: <OPS_API_KEY>` for ops endpoints (cron), compared in constant time.
- `X-Recorder-Secret: <RECORDER_SECRET>` for the recorder process's own calls (its token
  renewal), compared in constant time.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from functools import wraps

import structlog
from django.conf import settings
from django.http import HttpRequest
from firebase_admin import auth as firebase_auth
from ninja.security import APIKeyHeader, HttpBearer

from api.errors import api_error_response
from core.cache import ExpiringCache
from core.errors import (
    AdminRequired,
    AppError,
    Forbidden,
    ServiceUnavailable,
    Unauthenticated,
)
from core.principal import Principal
from integrations import firebase

log = structlog.get_logger("api.auth")

_DEV_TOKEN = re.compile(r"^dev:(?P<uid>[A-Za-z0-9._\-]{1,128})(?P<admin>:admin)?$")


# Verified claims by token digest, until shortly before the token expires. An app reuses
# one ID token for up to an hour; verifying its RS256 signature once instead of on every
# request keeps authenticated endpoints close to a trivial endpoint's speed.
verified_tokens = ExpiringCache()


def dev_auth_enabled() -> bool:
    return settings.AUTH_MODE == "dev" and settings.DEBUG


def _principal_from_dev_token(token: str) -> Principal:
    if not dev_auth_enabled():
        raise Unauthenticated(
            "Development tokens ('dev:<uid>') are accepted only in local development mode.",
            code="invalid_token",
        )
    match = _DEV_TOKEN.match(token)
    if not match:
        raise Unauthenticated("A development token is 'dev:<uid>' or 'dev:<uid>:admin'.",
                              code="invalid_token")
    admin = bool(match["admin"])
    return Principal(uid=match["uid"], admin=admin, via="dev", claims={"admin": admin})


def _principal_from_id_token(token: str) -> Principal:
    digest = hashlib.sha256(token.encode()).digest()
    claims = verified_tokens.get(digest)
    if claims is None:
        try:
            claims = firebase.verify_id_token(token)
        except firebase_auth.ExpiredIdTokenError:
            raise Unauthenticated("The ID token has expired; refresh it and retry.",
                                  code="token_expired") from None
        except firebase_auth.CertificateFetchError as exc:
            log.warning("auth_certificates_unavailable", error=str(exc))
            raise ServiceUnavailable("Cannot fetch the token signing certificates right now.",
                                     code="auth_unavailable") from None
        except (firebase_auth.InvalidIdTokenError, ValueError) as exc:
            raise Unauthenticated(f"The ID token is not valid: {exc}",
                                  code="invalid_token") from None
        # A margin so a cached token never outlives its own expiry.
        verified_tokens.put(digest, claims, expires_at=float(claims.get("exp", 0)) - 5)
    return Principal(uid=claims["uid"], admin=claims.get("admin") is True, claims=claims)


def principal_from_id_token(token: str) -> Principal:
    """The user of a Firebase ID token (or a dev token in dev mode); raises 401."""
    if token.startswith("dev:"):
        return _principal_from_dev_token(token)
    return _principal_from_id_token(token)


def principal_from_bearer(request: HttpRequest) -> Principal:
    """The caller named by the Authorization header; raises 401 with the reason."""
    header = request.headers.get("Authorization", "")
    if not header:
        raise Unauthenticated()
    scheme, _, token = header.partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        raise Unauthenticated("The Authorization header must be 'Bearer <token>'.",
                              code="invalid_authorization_header")
    if token.startswith("dev:"):
        return _principal_from_dev_token(token)
    return _principal_from_id_token(token)


def principal_from_ops_key(request: HttpRequest) -> Principal | None:
    """The ops principal when `X-Ops-Key` is present and right; None when absent."""
    key = request.headers.get("X-Ops-Key")
    if key is None:
        return None
    expected = settings.OPS_API_KEY
    if not expected or not hmac.compare_digest(key.encode(), expected.encode()):
        raise Forbidden("The ops key is not valid.", code="invalid_ops_key")
    return Principal(uid="ops", via="ops")


def _remember(request: HttpRequest, principal: Principal) -> Principal:
    request.principal = principal
    structlog.contextvars.bind_contextvars(uid=principal.uid)
    return principal


class UserAuth(HttpBearer):
    """Any authenticated app user (Firebase ID token, or a dev token in dev mode)."""

    def __call__(self, request: HttpRequest) -> Principal:
        return _remember(request, principal_from_bearer(request))

    def authenticate(self, request: HttpRequest, token: str) -> Principal:  # pragma: no cover
        raise NotImplementedError  # __call__ does the whole job


class OpsOrAdminAuth(APIKeyHeader):
    """The ops key, or an admin user's token (for ops endpoints such as the sweep)."""

    param_name = "X-Ops-Key"

    def __call__(self, request: HttpRequest) -> Principal:
        principal = principal_from_ops_key(request) or principal_from_bearer(request)
        if principal.via != "ops" and not principal.admin:
            raise AdminRequired()
        return _remember(request, principal)

    def authenticate(self, request: HttpRequest, key: str | None) -> Principal:  # pragma: no cover
        raise NotImplementedError


class RecorderAuth(APIKeyHeader):
    """The recorder process: `X-Recorder-Secret` equal to RECORDER_SECRET."""

    param_name = "X-Recorder-Secret"

    def __call__(self, request: HttpRequest) -> Principal:
        given = request.headers.get("X-Recorder-Secret", "")
        expected = settings.RECORDER_SECRET
        if not expected or not hmac.compare_digest(given.encode(), expected.encode()):
            raise Unauthenticated("Missing or wrong X-Recorder-Secret.",
                                  code="invalid_recorder_secret")
        return _remember(request, Principal(uid="recorder", via="recorder"))

    def authenticate(self, request: HttpRequest, key: str | None) -> Principal:  # pragma: no cover
        raise NotImplementedError


user_auth = UserAuth()
recorder_auth = RecorderAuth()
ops_or_admin_auth = OpsOrAdminAuth()


def docs_access(view):
    """The OpenAPI docs and schema: open in debug mode or with API_DOCS_PUBLIC=1, else for
    the ops key or an admin (they list every endpoint and error an attacker would probe)."""
    @wraps(view)
    def guarded(request: HttpRequest, *args, **kwargs):
        if not (settings.DEBUG or settings.API_DOCS_PUBLIC):
            try:
                ops_or_admin_auth(request)
            except AppError as exc:
                return api_error_response(exc)
        return view(request, *args, **kwargs)

    return guarded
