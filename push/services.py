"""Who to tell and with what: every device of the user (`push.devices`), over APNs (a VoIP
push for an incoming call and nothing else; alert or background pushes on the app's own
topic otherwise) or FCM (data messages), all devices at once; removes tokens the providers
call dead; never fails the caller."""

from __future__ import annotations

import contextvars
import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from functools import lru_cache
from pathlib import Path

import structlog
from django.conf import settings

from push import payloads
from push.apns import PRODUCTION_URL as APNS_PRODUCTION
from push.apns import SANDBOX_URL as APNS_SANDBOX
from push.apns import ApnsClient
from push.devices import Device, device_token_forget, devices_of
from push.fcm import PRODUCTION_URL as FCM_PRODUCTION
from push.fcm import FcmClient

log = structlog.get_logger("push")

RING, ALERT, BACKGROUND = "ring", "alert", "background"
# A missed-call notification is worth delivering to a phone that is off for a while.
ALERT_TTL_SECONDS = 24 * 3600


@dataclass(frozen=True)
class _Route:
    whom: str       # receiver | other (the party that did not hang up)
    push_type: str  # the payload's `type`
    kind: str       # RING (VoIP / FCM high), ALERT or BACKGROUND (FCM normal)
    skip_answering_device: bool = False


# call event -> what is sent to whom. The receiver's devices ring and must be told to stop;
# the caller learns everything else from the call document it listens to.
_ROUTES = {
    "incoming_call": _Route("receiver", payloads.INCOMING_CALL, RING),
    "call_cancelled": _Route("receiver", payloads.CALL_CANCELLED, BACKGROUND),
    "call_missed": _Route("receiver", payloads.CALL_MISSED, ALERT),
    "call_accepted": _Route("receiver", payloads.CALL_ANSWERED_ELSEWHERE, BACKGROUND,
                            skip_answering_device=True),
    "call_declined": _Route("receiver", payloads.CALL_DECLINED_ELSEWHERE, BACKGROUND,
                            skip_answering_device=True),
    "call_ended": _Route("other", payloads.CALL_ENDED, BACKGROUND),
}


@dataclass(frozen=True)
class PushOutcome:
    sent: bool                # at least one device was reached
    platform: str | None      # the first device (most recently updated) that was reached
    error: str | None         # why none was reached
    devices: dict = field(default_factory=dict)  # deviceId -> {platform, sent, error}

    def call_fields(self) -> dict:
        return {"pushSent": self.sent, "pushPlatform": self.platform, "pushError": self.error,
                "pushDevices": self.devices}


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


def apns_base_url(environment: str | None = None) -> str:
    """Apple's host for a device's `apnsEnvironment` (None: APNS_USE_SANDBOX decides);
    APNS_BASE_URL, when set, replaces both."""
    if settings.APNS_BASE_URL:
        return settings.APNS_BASE_URL
    sandbox = settings.APNS_USE_SANDBOX if environment is None else environment == "sandbox"
    return APNS_SANDBOX if sandbox else APNS_PRODUCTION


@lru_cache(maxsize=4)
def _apns_client_at(base_url: str) -> ApnsClient | None:
    if _apns_missing():
        return None
    key = settings.APNS_KEY_CONTENT.replace("\\n", "\n") or Path(
        settings.APNS_KEY_PATH).read_text()
    return ApnsClient(team_id=settings.APNS_TEAM_ID, key_id=settings.APNS_KEY_ID,
                      bundle_id=settings.APNS_BUNDLE_ID, private_key_pem=key, base_url=base_url,
                      ca_file=settings.APNS_CA_FILE or None,
                      timeout=settings.PUSH_TIMEOUT_SECONDS)


_apns_clients_lock = threading.Lock()


def apns_client(base_url: str | None = None) -> ApnsClient | None:
    """The one client (one HTTP/2 connection, one JWT) per APNs host, built once even when
    several devices are rung at the same moment; None: APNs not configured."""
    with _apns_clients_lock:
        return _apns_client_at(base_url or apns_base_url())


apns_client.cache_clear = _apns_client_at.cache_clear  # after a settings change


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


@dataclass(frozen=True)
class _Attempt:
    """One push to one device: which token it used and what became of it."""
    field: str                # the device's token field: voipToken, apnsToken or fcmToken
    token: str | None
    ok: bool = False
    error: str | None = None  # pushError's codes
    dead: bool = False        # the provider says the token will never work again
    dead_since_ms: int | None = None


def _deliver(*, uid: str, device: Device, route: _Route, data: dict[str, str],
             ttl_seconds: int) -> dict:
    """Send one device what `route` says; {platform, sent, error}. Never raises."""
    send = _deliver_apns if device.platform == "ios" else _deliver_fcm
    attempt = send(device, route, data, ttl_seconds)
    if attempt.dead:
        try:
            device_token_forget(uid=uid, device_id=device.id, field=attempt.field,
                                token=attempt.token, dead_since_ms=attempt.dead_since_ms)
        except Exception as exc:  # the push outcome stands; the next push tries again
            log.warning("push_token_forget_failed", uid=uid, device_id=device.id,
                        error=repr(exc))
    error = None if attempt.ok else attempt.error
    log.info("push", uid=uid, device_id=device.id, platform=device.platform,
             push_type=data["type"], kind=route.kind, call_id=data.get("callId"),
             sent=attempt.ok, error=error)
    return {"platform": device.platform, "sent": attempt.ok, "error": error}


def _deliver_apns(device: Device, route: _Route, data: dict[str, str],
                  ttl_seconds: int) -> _Attempt:
    if route.kind == RING:
        attempt = _Attempt("voipToken", device.voip_token, error="no_voip_token")
    else:  # never the VoIP token: iOS kills an app whose VoIP push is not a call
        attempt = _Attempt("apnsToken", device.apns_token, error="no_apns_token")
    if not attempt.token:
        return attempt
    client = apns_client(apns_base_url(device.apns_environment))
    if client is None:
        return replace(attempt, error="apns_not_configured")
    now = int(time.time())
    if route.kind == RING:
        result = client.send(device_token=attempt.token, payload=data, push_type="voip",
                             expiration=now + ttl_seconds)
    elif route.kind == ALERT:
        result = client.send(device_token=attempt.token, payload=payloads.apns_alert(data),
                             push_type="alert", collapse_id=data["callId"],
                             expiration=now + max(ttl_seconds, ALERT_TTL_SECONDS))
    else:
        result = client.send(device_token=attempt.token,
                             payload=payloads.apns_background(data), push_type="background",
                             expiration=now + ttl_seconds)
    return replace(attempt, ok=result.ok, error=_snake(result.reason), dead=result.dead,
                   dead_since_ms=result.dead_since_ms)


def _deliver_fcm(device: Device, route: _Route, data: dict[str, str],
                 ttl_seconds: int) -> _Attempt:
    attempt = _Attempt("fcmToken", device.fcm_token, error="no_fcm_token")
    if not attempt.token:
        return attempt
    client = fcm_client()
    if client is None:
        return replace(attempt, error="fcm_not_configured")
    ttl = ttl_seconds if route.kind != ALERT else max(ttl_seconds, ALERT_TTL_SECONDS)
    result = client.send_data(token=attempt.token, data=data, ttl_seconds=ttl,
                              priority="HIGH" if route.kind == RING else "NORMAL")
    return replace(attempt, ok=result.ok, error=_snake(result.error), dead=result.dead)


def _push_to_user(*, uid: str, route: _Route, data: dict[str, str], ttl_seconds: int,
                 skip_device: str | None = None) -> PushOutcome:
    """Send `data` to every device of `uid` (but `skip_device`) at once; a failure is
    reported, never raised."""
    try:
        devices = [d for d in devices_of(uid=uid) if d.id != skip_device]
    except Exception as exc:  # Firestore down: the call itself must still go through
        log.warning("push_user_lookup_failed", uid=uid, error=repr(exc))
        return PushOutcome(False, None, "user_lookup_failed")
    if not devices:
        log.info("push", uid=uid, push_type=data["type"], call_id=data.get("callId"),
                 sent=False, error="no_device_token")
        return PushOutcome(False, None, "no_device_token")

    def deliver(device: Device) -> dict:
        return _deliver(uid=uid, device=device, route=route, data=data,
                        ttl_seconds=ttl_seconds)

    if len(devices) == 1:
        answers = [deliver(devices[0])]
    else:  # one thread per device: APNs streams share one connection, FCM one session
        with ThreadPoolExecutor(max_workers=len(devices), thread_name_prefix="push") as pool:
            futures = [pool.submit(contextvars.copy_context().run, deliver, device)
                       for device in devices]
            answers = [future.result() for future in futures]
    reached = [answer for answer in answers if answer["sent"]]
    return PushOutcome(sent=bool(reached),
                       platform=reached[0]["platform"] if reached else None,
                       error=None if reached else answers[0]["error"],
                       devices={d.id: a for d, a in zip(devices, answers, strict=True)})


def call_push(*, call: dict, event: str, ttl_seconds: int,
              device_id: str | None = None) -> PushOutcome | None:
    """The pushes `event` of `call` implies, sent to every device of whoever it concerns
    (None: nobody is told). `device_id` is the receiver's device that answered: it is not
    told that the call was answered or declined elsewhere."""
    route = _ROUTES.get(event)
    if route is None:
        return None
    if route.whom == "receiver":
        uid = call["receiverId"]
    else:
        uid = call["callerId"] if call.get("endedBy") == call["receiverId"] else call["receiverId"]
    return _push_to_user(uid=uid, route=route, data=payloads.call_payload(call, route.push_type),
                        ttl_seconds=ttl_seconds,
                        skip_device=device_id if route.skip_answering_device else None)


def _snake(reason: str | None) -> str | None:
    """Apple's CamelCase reasons as the snake_case codes of pushError."""
    if reason is None or "_" in reason or reason.isupper():
        return reason.lower() if reason else reason
    out = "".join(f"_{c.lower()}" if c.isupper() else c for c in reason)
    return out.lstrip("_")
