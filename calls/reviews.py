"""Human reviews of a call: summary, keywords and notes set by a participant or an admin.

One transaction sets the fields on `calls/{id}`, counts the review (`reviewCount`,
`lastReviewAt`) and keeps it in `calls/{id}/reviews/{reviewId}` (who, when, what changed).
"""

from __future__ import annotations

import uuid
from datetime import datetime

from google.cloud import firestore

from calls import store
from calls.access import access_call
from core.clock import utc_now
from core.errors import ValidationFailed
from core.principal import Principal
from integrations.firebase import firestore_client

REVIEWS = "reviews"
MAX_SUMMARY = 2000
MAX_NOTES = 5000
MAX_KEYWORDS = 20
MAX_KEYWORD = 50


def _refuse(field: str, message: str) -> None:
    raise ValidationFailed(f"{field}: {message}", details=[{"field": field, "message": message}])


def review_fields_check(*, summary: str | None, keywords: list[str] | None,
                        notes: str | None) -> dict:
    """The call fields a review sets (only those given), checked against the size limits;
    400 `validation_error` naming the field otherwise."""
    fields: dict = {}
    if summary is not None:
        if len(summary) > MAX_SUMMARY:
            _refuse("humanSummary", f"at most {MAX_SUMMARY} characters")
        fields["humanSummary"] = summary.strip()
    if keywords is not None:
        cleaned = []
        for keyword in keywords:
            if not isinstance(keyword, str):
                _refuse("humanKeywords", "keywords are strings")
            if len(keyword) > MAX_KEYWORD:
                _refuse("humanKeywords", f"each keyword is at most {MAX_KEYWORD} characters")
            keyword = keyword.strip()
            if keyword and keyword not in cleaned:
                cleaned.append(keyword)
        if len(cleaned) > MAX_KEYWORDS:
            _refuse("humanKeywords", f"at most {MAX_KEYWORDS} keywords")
        fields["humanKeywords"] = cleaned
    if notes is not None:
        if len(notes) > MAX_NOTES:
            _refuse("humanNotes", f"at most {MAX_NOTES} characters")
        fields["humanNotes"] = notes.strip()
    if not fields:
        _refuse("", "send at least one of humanSummary, humanKeywords, humanNotes")
    return fields


def call_review(*, principal: Principal, call_id: str, summary: str | None = None,
                keywords: list[str] | None = None, notes: str | None = None,
                now: datetime | None = None) -> dict:
    """Review the call as `principal` (a participant or an admin); returns the review
    kept (`reviewId`, `by`, `at`, `changes` {field: {from, to}}) and the call after it."""
    fields = review_fields_check(summary=summary, keywords=keywords, notes=notes)
    access_call(principal, call_id)
    now = now or utc_now()
    ref = firestore_client().collection(store.CALLS).document(call_id)
    review_id = uuid.uuid4().hex

    @firestore.transactional
    def apply(transaction):
        call = ref.get(transaction=transaction).to_dict()
        changes = {field: {"from": call.get(field), "to": value}
                   for field, value in fields.items() if call.get(field) != value}
        review = {"reviewId": review_id, "callId": call_id, "by": principal.uid,
                  "via": principal.via, "admin": principal.admin, "at": now,
                  "changes": changes}
        updates = {**fields, "reviewCount": int(call.get("reviewCount") or 0) + 1,
                   "lastReviewAt": now, "lastReviewBy": principal.uid}
        transaction.update(ref, updates)
        transaction.create(ref.collection(REVIEWS).document(review_id), review)
        return review, {**call, **updates}

    return store._run(apply)


def call_reviews(call_id: str, *, limit: int = 50) -> list[dict]:
    """The call's reviews, newest first."""
    query = (firestore_client().collection(store.CALLS).document(call_id)
             .collection(REVIEWS).order_by("at", direction=firestore.Query.DESCENDING)
             .limit(limit))
    return [snap.to_dict() for snap in query.stream()]
