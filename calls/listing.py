"""Calls as the ops console lists them: the ones ringing or in progress, today's by status
and end reason, and every call filtered and paged (newest first). Reads only."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from datetime import datetime

from google.cloud import firestore

from calls.states import ACTIVE, Status
from calls.store import CALLS
from integrations.firebase import firestore_client


def _calls():
    return firestore_client().collection(CALLS)


def _where(query, field: str, op: str, value):
    return query.where(filter=firestore.FieldFilter(field, op, value))


def calls_active(*, limit: int = 200) -> list[dict]:
    """Calls ringing or in progress, newest first (status + createdAt index)."""
    query = _where(_calls(), "status", "in", [s.value for s in ACTIVE])
    query = query.order_by("createdAt", direction=firestore.Query.DESCENDING).limit(limit)
    return [snap.to_dict() for snap in query.stream()]


def calls_tally(*, since: datetime, limit: int = 5000) -> dict:
    """Calls created since `since`: how many per status and per end reason (reads only
    those two fields)."""
    query = _where(_calls(), "createdAt", ">=", since).select(["status", "endReason"])
    by_status: Counter = Counter({s.value: 0 for s in Status})
    by_reason: Counter = Counter()
    total = 0
    for snap in query.limit(limit).stream():
        data = snap.to_dict()
        total += 1
        by_status[data.get("status") or "unknown"] += 1
        if data.get("endReason"):
            by_reason[data["endReason"]] += 1
    return {"total": total, "byStatus": dict(by_status), "byEndReason": dict(by_reason),
            "truncated": total >= limit}


@dataclass
class CallPage:
    items: list[dict]
    next_token: str | None


class BadCursor(Exception):
    pass


def calls_page(*, status: str | None, created_from: datetime | None,
               created_to: datetime | None, user: str | None, group: str | None,
               limit: int, cursor: str | None) -> CallPage:
    """Calls matching every filter given, newest `createdAt` first; `user` is either
    party; `cursor` (a call id) continues after that call."""
    query = _calls()
    if status:
        query = _where(query, "status", "==", status)
    if group:
        query = _where(query, "groupId", "==", group)
    if user:
        query = query.where(filter=firestore.Or([
            firestore.FieldFilter("callerId", "==", user),
            firestore.FieldFilter("receiverId", "==", user)]))
    if created_from:
        query = _where(query, "createdAt", ">=", created_from)
    if created_to:
        query = _where(query, "createdAt", "<", created_to)
    query = query.order_by("createdAt", direction=firestore.Query.DESCENDING).limit(limit)
    if cursor:
        last = _calls().document(cursor).get()
        if not last.exists:
            raise BadCursor(cursor)
        query = query.start_after(last)
    items = [snap.to_dict() for snap in query.stream()]
    return CallPage(items, items[-1]["callId"] if len(items) == limit else None)
