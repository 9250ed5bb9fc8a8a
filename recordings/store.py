"""Firestore `recordings/{recordingId}`: every write to it (status moves checked against
`states.TABLE`) and to a call's `recordingId`, the reads and the listing queries. Shared by
the API and the recorder process (no Django here).

Every query here orders by `recordedAt` (ISO 8601 strings, which sort by time) and is
served by the composite indexes in `firestore.indexes.json`; counts and byte totals are
aggregation queries, so the server never reads documents it does not return.
"""

from __future__ import annotations

from dataclasses import dataclass

from google.api_core import exceptions as gexc
from google.cloud import firestore

from integrations.firebase import firestore_client
from recordings.states import LIVE_STATUSES, next_status

Filter = tuple[str, str, object]  # (field, operator, value)
_MOVE_ATTEMPTS = 5


def _recordings():
    return firestore_client().collection("recordings")


def _as_dict(snap) -> dict:
    return {**snap.to_dict(), "recordingId": snap.id}


def recording_read(recording_id: str) -> dict | None:
    snap = _recordings().document(recording_id).get()
    return _as_dict(snap) if snap.exists else None


def recording_move(recording_id: str, action: str, changes: dict | None = None, *,
                   create: dict | None = None, expect=None) -> dict | None:
    """Apply `action` (see `states.TABLE`) with `changes`, atomically: the status read is
    the status written over (a precondition on its update time), and the new status comes
    from the table. Without a document, `create` is written whole when the table allows
    the action on a new recording. Returns the document after the move, or None when the
    move is not allowed from the status found. `changes` values may be callables of the
    document read (e.g. a counter). `expect` narrows the statuses the move starts from."""
    ref = _recordings().document(recording_id)
    for _ in range(_MOVE_ATTEMPTS):
        snap = ref.get()
        current = snap.to_dict() if snap.exists else None
        status = current["status"] if current else None
        to = next_status(status, action)
        if to is None or (current is None and create is None) or (
                expect is not None and status not in expect):
            return None
        base = current if current is not None else create
        updates = {key: value(base) if callable(value) else value
                   for key, value in (changes or {}).items()}
        updates["status"] = to.value
        try:
            if current is None:
                ref.create({**create, **updates})
                return {**create, **updates, "recordingId": recording_id}
            ref.update(updates, option=firestore_client().write_option(
                last_update_time=snap.update_time))
        except (gexc.AlreadyExists, gexc.FailedPrecondition, gexc.NotFound):
            continue  # changed since read: look again
        return {**current, **updates, "recordingId": recording_id}
    return None


def recording_update(recording_id: str, fields: dict) -> None:
    """Fields that do not change the status (paths, sizes)."""
    assert "status" not in fields, "status changes go through recording_move"
    _recordings().document(recording_id).update(fields)


def recording_delete(recording_id: str) -> None:
    _recordings().document(recording_id).delete()


def call_read(call_id: str) -> dict | None:
    """The call a recording belongs to (its parties come from it)."""
    snap = firestore_client().collection("calls").document(call_id).get()
    return snap.to_dict() if snap.exists else None


def call_recording_set(call_id: str, recording_id: str) -> None:
    """The call's `recordingId`: its latest recording (set when one starts or is stored)."""
    try:
        firestore_client().collection("calls").document(call_id).update(
            {"recordingId": recording_id})
    except gexc.NotFound:
        pass  # a recording of a call that is gone keeps its own callId


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


def _newest_page(filters: list[Filter], *, order: str, limit: int,
                 after: str | None) -> Page:
    query = (_filtered(filters).order_by(order, direction=firestore.Query.DESCENDING)
             .limit(limit))
    if after:
        last = _recordings().document(after).get()
        if not last.exists:
            raise BadPageToken(after)
        query = query.start_after(last)
    items = [_as_dict(snap) for snap in query.stream()]
    return Page(items, items[-1]["recordingId"] if len(items) == limit else None)


def recordings_page(filters: list[Filter], *, limit: int, page_token: str | None) -> Page:
    """One page, newest `recordedAt` first; `next_token` (a recording id) continues."""
    return _newest_page(filters, order="recordedAt", limit=limit, after=page_token)


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


def recordings_of(uid: str | None, *, limit: int, cursor: str | None,
                  include_gone: bool = False) -> Page:
    """Recordings of `uid`'s calls (None: every recording), newest `createdAt` first;
    `cursor` (a recording id) continues after it. Deleted ones only with `include_gone`."""
    filters: list[Filter] = [("participants", "array_contains", uid)] if uid else []
    if not include_gone:
        filters.append(("status", "in", list(LIVE_STATUSES)))
    return _newest_page(filters, order="createdAt", limit=limit, after=cursor)


def recordings_recorded_before(cutoff: str, *, statuses: tuple[str, ...],
                               limit: int) -> list[dict]:
    """Recordings in `statuses` recorded before `cutoff` (ISO 8601), oldest first (the
    retention sweep's work list; status + recordedAt index)."""
    query = (_filtered([("status", "in", list(statuses)), ("recordedAt", "<", cutoff)])
             .order_by("recordedAt").limit(limit))
    return [_as_dict(snap) for snap in query.stream()]
