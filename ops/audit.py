"""The access log, `auditLog/{id}`: who streamed, downloaded, deleted, reviewed or retried
what, and who signed in to the console; from where (client IP, request id) and when.

Written by the server only and readable by no app (firestore.rules' default deny);
`expireAt` lets a Firestore TTL policy drop entries after `AUDIT_RETENTION_DAYS`.
"""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta

import structlog
from django.conf import settings
from google.cloud import firestore

from core.clock import utc_now
from integrations.firebase import firestore_client

AUDIT_LOG = "auditLog"
ACTIONS = ("stream", "download", "delete", "delete_user_recordings", "review", "retry",
           "console_sign_in", "console_sign_in_failed", "console_sign_out", "sweep")

log = structlog.get_logger("ops.audit")


def audit_record(*, uid: str | None, action: str, target: str | None, ip: str | None,
                 request_id: str | None, outcome: str = "ok", now: datetime | None = None,
                 detail: dict | None = None) -> dict:
    """Keep one entry; a failure to write it is logged, never raised (the request it
    describes has happened already)."""
    assert action in ACTIONS, action
    now = now or utc_now()
    entry = {"uid": uid, "action": action, "target": target, "ip": ip,
             "requestId": request_id, "outcome": outcome, "at": now,
             "expireAt": now + timedelta(days=settings.AUDIT_RETENTION_DAYS),
             "detail": detail or {}}
    entry_id = uuid.uuid4().hex
    try:
        firestore_client().collection(AUDIT_LOG).document(entry_id).set(entry)
    except Exception as exc:  # the log line below still says it happened
        log.warning("audit_write_failed", error=type(exc).__name__)
    log.info("audit", action=action, target=target, audit_uid=uid, ip=ip, outcome=outcome)
    return {**entry, "id": entry_id}


def audit_entries(*, action: str | None = None, uid: str | None = None, limit: int = 50,
                  before: datetime | None = None) -> list[dict]:
    """The newest entries first, filtered by action and uid; `before` pages back."""
    query = firestore_client().collection(AUDIT_LOG)
    if action:
        query = query.where(filter=firestore.FieldFilter("action", "==", action))
    if uid:
        query = query.where(filter=firestore.FieldFilter("uid", "==", uid))
    if before:
        query = query.where(filter=firestore.FieldFilter("at", "<", before))
    query = query.order_by("at", direction=firestore.Query.DESCENDING).limit(limit)
    return [{**snap.to_dict(), "id": snap.id} for snap in query.stream()]
