"""Who to ring and with what: reads `users/{uid}`, sends over APNs (iOS VoIP) or FCM
(Android), removes device tokens the providers call dead, never fails the caller."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import structlog
from django.conf import settings
from google.cloud import firestore

from integrations.firebase import firestore_client
from push import payloads
from push.apns import PRODUCTION_URL as APNS_PRODUCTION
from push.apns import SANDBOX_URL as APNS_SANDBOX
from push.apns import ApnsClient
from push.fcm import PRODUCTION_URL as FCM_PRODUCTION
from push.fcm import FcmClient

log = structlog.get_logger("push")

# call event -> (who is told, push type). The receiver's phone rings and must be told to
# stop; the caller learns everything else from the call document it listens to.
_ROUTES = {
    "incoming_call": ("receiver", payloads.INCOMING_CALL),
    "call_cancelled": ("receiver", payloads.CALL_CANCELLED),
    "call_declined": ("receiver", payloads.CALL_CANCELLED),  # the receiver's other devices
    "call_missed": ("receiver", payloads.CALL_MISSED),
    "call_ended": ("other", payloads.CALL_ENDED),
}


@dataclass(frozen=True)
class PushOutcome:
    sent: bool
    platform: str | None
    error: str | None

    def call_fields(self) -> dict:
        return {"pushSent": self.sent, "pushPlatform": self.platform, "pushError": self.error}


def _apns_missing() -> list[str]:
    names = ("APNS_TEAM_ID", "APNS_KEY_ID", "APNS_BUNDLE_ID")
    missing = [name for name in names if not getattr(settings, name)]
    if not (settings.APNS_KEY_CONTENT or settings.APNS_KEY_PATH):
        missing.append("APNS_KEY_PATH or APNS_KEY_CONTENT")
    return missing


def _fcm_service_account() -> dict | None:
    if settings.FCM_SERVICE_ACCOUNT_JSON:
        return json.loads(settings.FCM_SERVICE_ACCOUNT_JSON)
    if settings.FCM_SERVICE_ACCOUNT_PATH:
        return json.loads(Path(settings.FCM_SERVICE_ACCOUNT_PATH).read_text())
    return None


@lru_cache(maxsize=1)
def apns_client() -> ApnsClient | None:
    if _apns_missing():
        return None
    key = settings.APNS_KEY_CONTENT.replace("\\n", "\n") or Path(
        settings.APNS_KEY_PATH).read_text()
    base = settings.APNS_BASE_URL or (APNS_SANDBOX if settings.APNS_USE_SANDBOX
                                      else APNS_PRODUCTION)
    return ApnsClient(team_id=settings.APNS_TEAM_ID, key_id=settings.APNS_KEY_ID,
                      bundle_id=settings.APNS_BUNDLE_ID, private_key_pem=key, base_url=base,
                      ca_file=settings.APNS_CA_FILE or None,
                      timeout=settings.PUSH_TIMEOUT_SECONDS)


@lru_cache(maxsize=1)
def fcm_client() -> FcmClient | None:
    info = _fcm_service_account()
    if info is None:
        return None
    return FcmClient(project_id=settings.FCM_PROJECT_ID or info.get("project_id", ""),
                     service_account_info=info,
                     base_url=settings.FCM_BASE_URL or FCM_PRODUCTION,
                     timeout=settings.PUSH_TIMEOUT_SECONDS)


def providers_report() -> None:
    """Say once, at start-up, which push providers cannot be used and why."""
    missing = _apns_missing()
    if missing:
        log.warning("apns_not_configured", missing=missing,
                    effect="iOS receivers are not rung (pushError apns_not_configured)")
    if not (settings.FCM_SERVICE_ACCOUNT_JSON or settings.FCM_SERVICE_ACCOUNT_PATH):
        log.warning("fcm_not_configured",
                    missing=["FCM_SERVICE_ACCOUNT_PATH or FCM_SERVICE_ACCOUNT_JSON"],
                    effect="Android receivers are not rung (pushError fcm_not_configured)")


def _device(user: dict) -> tuple[str | None, str | None, str | None]:
    """(platform, token field, token) for the user's phone."""
    platform = user.get("platform")
    if platform not in ("ios", "android"):
        platform = "ios" if user.get("voipToken") else "android" if user.get("fcmToken") else None
    field = {"ios": "voipToken", "android": "fcmToken"}.get(platform)
    return platform, field, (user.get(field) if field else None)


def push_to_user(*, uid: str, payload: dict[str, str], ttl_seconds: int) -> PushOutcome:
    """Push `payload` to the phone of `uid`; a failure is reported, never raised."""
    try:
        snap = firestore_client().collection("users").document(uid).get()
    except Exception as exc:  # Firestore down: the call itself must still go through
        log.warning("push_user_lookup_failed", uid=uid, error=repr(exc))
        return PushOutcome(False, None, "user_lookup_failed")
    platform, field, token = _device((snap.to_dict() or {}) if snap.exists else {})
    if not token:
        return PushOutcome(False, platform, "no_device_token")
    if platform == "ios":
        client = apns_client()
        if client is None:
            return PushOutcome(False, platform, "apns_not_configured")
        result = client.send_voip(device_token=token, payload=payload,
                                  expiration=int(time.time()) + ttl_seconds)
        ok, error, dead = result.ok, _snake(result.reason), result.dead
    else:
        client = fcm_client()
        if client is None:
            return PushOutcome(False, platform, "fcm_not_configured")
        result = client.send_data(token=token, data=payload, ttl_seconds=ttl_seconds)
        ok, error, dead = result.ok, _snake(result.error), result.dead
    if dead:
        token_forget(uid=uid, field=field, token=token)
    log.info("push", uid=uid, platform=platform, push_type=payload["type"],
             call_id=payload.get("callId"), sent=ok, error=None if ok else error)
    return PushOutcome(ok, platform, None if ok else error)


def token_forget(*, uid: str, field: str, token: str) -> None:
    """Remove a dead device token, unless the app has written a new one meanwhile."""
    ref = firestore_client().collection("users").document(uid)

    @firestore.transactional
    def forget(transaction):
        snap = ref.get(transaction=transaction)
        if snap.exists and (snap.to_dict() or {}).get(field) == token:
            transaction.update(ref, {field: firestore.DELETE_FIELD})
            return True
        return False

    if forget(firestore_client().transaction()):
        log.info("push_token_removed", uid=uid, field=field)


def call_push(*, call: dict, event: str, ttl_seconds: int) -> PushOutcome | None:
    """The push `event` of `call` implies, sent to whoever it concerns (None: nobody)."""
    route = _ROUTES.get(event)
    if route is None:
        return None
    whom, push_type = route
    if whom == "receiver":
        uid = call["receiverId"]
    else:
        uid = call["callerId"] if call.get("endedBy") == call["receiverId"] else call["receiverId"]
    return push_to_user(uid=uid, payload=payloads.call_payload(call, push_type),
                        ttl_seconds=ttl_seconds)


def _snake(reason: str | None) -> str | None:
    """Apple's CamelCase reasons as the snake_case codes of pushError."""
    if reason is None or "_" in reason or reason.isupper():
        return reason.lower() if reason else reason
    out = "".join(f"_{c.lower()}" if c.isupper() else c for c in reason)
    return out.lstrip("_")
