"""The receiver's phones and tablets: `users/{uid}/devices/{deviceId}` (written by the app)
plus the legacy fields on `users/{uid}` (one device, id `legacy`); and forgetting the
tokens APNs or FCM call dead."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import structlog
from django.conf import settings
from google.cloud import firestore

from integrations.firebase import firestore_client

log = structlog.get_logger("push")

LEGACY_DEVICE_ID = "legacy"
TOKEN_FIELDS = ("voipToken", "apnsToken", "fcmToken")
ENVIRONMENTS = ("production", "sandbox")


@dataclass(frozen=True)
class Device:
    id: str
    platform: str | None          # "ios" | "android" | None (no token says which)
    voip_token: str | None = None  # iOS PushKit: incoming calls only
    apns_token: str | None = None  # iOS regular: everything else
    fcm_token: str | None = None   # Android
    apns_environment: str | None = None  # "production" | "sandbox"; None: APNS_USE_SANDBOX
    updated_at: datetime | None = None

    @property
    def tokens(self) -> set[str]:
        return {t for t in (self.voip_token, self.apns_token, self.fcm_token) if t}


def _text(value) -> str | None:
    return value if isinstance(value, str) and value else None


def _device(device_id: str, fields: dict) -> Device | None:
    """A Device from a document's fields; None when it has no token at all."""
    voip, apns, fcm = (_text(fields.get(name)) for name in TOKEN_FIELDS)
    platform = fields.get("platform")
    if platform not in ("ios", "android"):
        platform = "ios" if voip or apns else "android" if fcm else None
    if not (voip or apns or fcm):
        return None
    environment = fields.get("apnsEnvironment")
    updated_at = fields.get("updatedAt")
    return Device(id=device_id, platform=platform, voip_token=voip, apns_token=apns,
                  fcm_token=fcm,
                  apns_environment=environment if environment in ENVIRONMENTS else None,
                  updated_at=updated_at if isinstance(updated_at, datetime) else None)


def devices_of(*, uid: str) -> list[Device]:
    """The devices to tell about a call: at most PUSH_MAX_DEVICES, the most recently
    updated first, the legacy fields last (and not when a device carries the same token).
    Raises whatever Firestore raises."""
    user_ref = firestore_client().collection("users").document(uid)
    limit = settings.PUSH_MAX_DEVICES
    query = (user_ref.collection("devices")
             .order_by("updatedAt", direction=firestore.Query.DESCENDING).limit(limit))
    found = [d for d in (_device(snap.id, snap.to_dict() or {}) for snap in query.stream())
             if d is not None and d.id != LEGACY_DEVICE_ID]
    user = user_ref.get()
    legacy = _device(LEGACY_DEVICE_ID, (user.to_dict() or {}) if user.exists else {})
    if legacy is not None and len(found) < limit and not any(
            legacy.tokens & device.tokens for device in found):
        found.append(legacy)
    return found


def device_token_forget(*, uid: str, device_id: str, field: str, token: str,
                        dead_since_ms: int | None = None) -> None:
    """Remove a token a provider called dead from one device: only if the app has not
    written another one meanwhile and, when the provider says since when the token is dead
    (APNs 410 `timestamp`), only if the device was not updated after that. A device left
    without any token is deleted. The legacy device is `users/{uid}` itself."""
    if device_id == LEGACY_DEVICE_ID:
        token_forget(uid=uid, field=field, token=token)
        return
    ref = (firestore_client().collection("users").document(uid)
           .collection("devices").document(device_id))

    @firestore.transactional
    def forget(transaction) -> str | None:
        snap = ref.get(transaction=transaction)
        fields = (snap.to_dict() or {}) if snap.exists else {}
        if fields.get(field) != token:
            return None
        updated_at = fields.get("updatedAt")
        if dead_since_ms is not None and isinstance(updated_at, datetime) \
                and updated_at.timestamp() * 1000 >= dead_since_ms:
            return "kept_newer_than_provider"
        if not any(fields.get(name) for name in TOKEN_FIELDS if name != field):
            transaction.delete(ref)
            return "device_deleted"
        transaction.update(ref, {field: firestore.DELETE_FIELD})
        return "token_removed"

    what = forget(firestore_client().transaction())
    if what:
        log.info("push_token_forget", uid=uid, device_id=device_id, field=field, result=what)


def token_forget(*, uid: str, field: str, token: str) -> None:
    """Remove a dead token from the legacy fields on `users/{uid}`, unless the app has
    written a new one meanwhile."""
    ref = firestore_client().collection("users").document(uid)

    @firestore.transactional
    def forget(transaction):
        snap = ref.get(transaction=transaction)
        if snap.exists and (snap.to_dict() or {}).get(field) == token:
            transaction.update(ref, {field: firestore.DELETE_FIELD})
            return True
        return False

    if forget(firestore_client().transaction()):
        log.info("push_token_removed", uid=uid, device_id=LEGACY_DEVICE_ID, field=field)
