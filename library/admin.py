"""The admin's view of the library: every recording filtered and paged, and counts per
status with the bytes stored."""

from __future__ import annotations

from core.errors import ValidationFailed
from library.times import day_or_time_bound
from recordings import store
from recordings.states import STATUSES

_LISTED = ("recordingId", "callId", "sid", "channel", "groupId", "user1", "user2",
           "participants", "source", "status", "error", "retryCount", "duration", "fileSize",
           "format", "originalFilename", "originalFormat", "originalSize", "recordedAt",
           "createdAt", "uploadedAt")


def recordings_admin_list(*, date_from: str | None, date_to: str | None,
                          group_id: str | None, user_id: str | None, status: str | None,
                          source: str | None, fmt: str | None, limit: int,
                          page_token: str | None) -> dict:
    """Recordings of every source, newest first, filtered; `total` counts every match."""
    filters: list[store.Filter] = []
    if date_from:
        filters.append(("recordedAt", ">=",
                        day_or_time_bound(date_from, field="date_from", end=False)))
    if date_to:
        filters.append(("recordedAt", "<",
                        day_or_time_bound(date_to, field="date_to", end=True)))
    if len(filters) == 2 and filters[0][2] >= filters[1][2]:
        raise ValidationFailed("date_from must be before date_to.")
    for field, value in (("groupId", group_id), ("status", status), ("source", source),
                         ("format", fmt)):
        if value:
            filters.append((field, "==", value))
    if user_id:
        filters.append(("participants", "array_contains", user_id))
    try:
        page = store.recordings_page(filters, limit=limit, page_token=page_token)
    except store.BadPageToken:
        raise ValidationFailed("next_page_token does not name a recording (it was deleted?).",
                               code="bad_page_token") from None
    return {"recordings": [{key: item.get(key) for key in _LISTED} for item in page.items],
            "total": store.recordings_count(filters), "limit": limit,
            "nextPageToken": page.next_token}


def recordings_upload_status(*, source: str | None = None) -> dict:
    """Counts per status, the last completed upload and the bytes in Storage, from
    aggregation queries (no document is read but the one last upload)."""
    base: list[store.Filter] = [("source", "==", source)] if source else []
    counts = {status: store.recordings_count([*base, ("status", "==", status)])
              for status in STATUSES}
    last = None
    if source in (None, "upload"):
        found = store.recordings_find([("source", "==", "upload"), ("status", "==", "completed")],
                                      newest="uploadedAt")
        last = found[0] if found else None
    return {**counts, "total": sum(counts.values()),
            "lastUpload": last.get("uploadedAt") if last else None,
            "lastUploadId": last["recordingId"] if last else None,
            "storageUsed": store.recordings_sum(base, "storedBytes")}
