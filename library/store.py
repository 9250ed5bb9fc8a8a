"""Firestore `recordings/{recordingId}`: reads, atomic claims and the listing queries.

Every query here orders by `recordedAt` (ISO 8601 strings, which sort by time) and is
served by the composite indexes in `firestore.indexes.json`; counts and byte totals are
aggregation queries, so the server never reads documents it does not return.
"""

from __future__ import annotations

from dataclasses import dataclass

from google.api_core import exceptions as gexc
from google.cloud import firestore

from integrations.firebase import firestore_client

Filter = tuple[str, str, object]  # (field, operator, value)


def pair_key(uid_a: str, uid_b: str) -> str:
    """The same value for both orders of two users: their shared recordings' `pair`."""
    return "|".join(sorted((uid_a, uid_b)))


def _recordings():
    return firestore_client().collection("recordings")


def _as_dict(snap) -> dict:
    return {**snap.to_dict(), "recordingId": snap.id}


def recording_read(recording_id: str) -> dict | None:
    snap = _recordings().document(recording_id).get()
    return _as_dict(snap) if snap.exists else None


def recording_claim(recording_id: str, document: dict) -> tuple[bool, dict]:
    """Create the document unless it exists: (True, document) or (False, the existing)."""
    try:
        _recordings().document(recording_id).create(document)
    except gexc.AlreadyExists:
        existing = recording_read(recording_id)
        if existing is not None:
            return False, existing
        _recordings().document(recording_id).create(document)  # deleted in between
    return True, {**document, "recordingId": recording_id}


def recording_move(recording_id: str, *, expect: tuple[str, ...], changes: dict) -> dict | None:
    """Apply `changes` only if the status is one of `expect`, atomically (a precondition
    on the update time read); None when the status was another. Returns the new document."""
    ref = _recordings().document(recording_id)
    for _ in range(5):
        snap = ref.get()
        if not snap.exists or snap.get("status") not in expect:
            return None
        updates = {key: value(snap.to_dict()) if callable(value) else value
                   for key, value in changes.items()}
        try:
            ref.update(updates, option=firestore_client().write_option(
                last_update_time=snap.update_time))
        except gexc.FailedPrecondition:
            continue  # changed since read: look again
        return {**snap.to_dict(), **updates, "recordingId": recording_id}
    return None


def recording_update(recording_id: str, fields: dict) -> None:
    _recordings().document(recording_id).update(fields)


def recording_delete(recording_id: str) -> None:
    _recordings().document(recording_id).delete()


def _filtered(filters: list[Filter]):
    query = _recordings()
    for field, op, value in filters:
        query = query.where(filter=firestore.FieldFilter(field, op, value))
    return query


def recordings_find(filters: list[Filter], *, limit: int = 1,
                    newest: str = "recordedAt") -> list[dict]:
    """The recordings matching every filter with the latest `newest` field first."""
    query = (_filtered(filters).order_by(newest, direction=firestore.Query.DESCENDING)
             .limit(limit))
    return [_as_dict(snap) for snap in query.stream()]


@dataclass
class Page:
    items: list[dict]
    next_token: str | None


class BadPageToken(Exception):
    pass


def recordings_page(filters: list[Filter], *, limit: int, page_token: str | None) -> Page:
    """One page, newest first; `next_token` (a recording id) continues after it."""
    query = (_filtered(filters).order_by("recordedAt", direction=firestore.Query.DESCENDING)
             .limit(limit))
    if page_token:
        last = _recordings().document(page_token).get()
        if not last.exists:
            raise BadPageToken(page_token)
        query = query.start_after(last)
    items = [_as_dict(snap) for snap in query.stream()]
    return Page(items, items[-1]["recordingId"] if len(items) == limit else None)


def recordings_count(filters: list[Filter]) -> int:
    """How many recordings match (one count aggregation, no documents read)."""
    result = _filtered(filters).count(alias="n").get()
    return int(result[0][0].value)


def recordings_sum(filters: list[Filter], field: str) -> int:
    """The sum of a numeric field over the matching recordings (a sum aggregation)."""
    result = _filtered(filters).sum(field, alias="s").get()
    return int(result[0][0].value or 0)


def recordings_oldest(filters: list[Filter], *, limit: int) -> list[dict]:
    """Matching recordings, oldest `updatedAt` first (the sweep's work list)."""
    query = _filtered(filters).order_by("updatedAt").limit(limit)
    return [_as_dict(snap) for snap in query.stream()]
