"""The recording status machine as a table: status, action -> next status.

Pure data and lookups, no I/O (the shape of `calls/states.py`). `store.py` applies a move
atomically; the recorder process and the API's library both write through it.

An upload's life: pending (received, converting) -> uploading (to Storage) -> completed,
or failed (Storage refused, or the sweep found it interrupted); a failed one is reopened
to pending by a retry. A recorder recording: processing (stopped; remuxing, converting,
uploading) -> completed | failed; a failed one is processed again by the recorder.
Deletion: completed or failed -> deleting (its Storage objects are being removed; never
served) -> deleted (a tombstone without paths or url); a Storage failure leaves it
deleting, and the sweep finishes it.
"""

from __future__ import annotations

from enum import Enum


class Status(str, Enum):
    PENDING = "pending"
    UPLOADING = "uploading"
    PROCESSING = "processing"
    COMPLETED = "completed"
    FAILED = "failed"
    DELETING = "deleting"
    DELETED = "deleted"


STATUSES = tuple(s.value for s in Status)
IN_PROGRESS = frozenset({Status.PENDING, Status.UPLOADING, Status.PROCESSING})
GONE = frozenset({Status.DELETING, Status.DELETED})  # served to nobody, listed nowhere
LIVE_STATUSES = tuple(s.value for s in Status if s not in GONE)

NEW = None  # no document yet
P, U, R, C, F = (Status.PENDING, Status.UPLOADING, Status.PROCESSING, Status.COMPLETED,
                 Status.FAILED)
D, X = Status.DELETING, Status.DELETED

# status   action      next
TABLE: dict[tuple[Status | None, str], Status] = {
    (NEW, "receive"): P,  # an app's upload, claimed by its id
    (P,   "convert"): U,  # converted to WAV; going to Storage
    (U,   "store"):   C,
    (P,   "fail"):    F,  # a file that stopped converting, or interrupted (the sweep)
    (U,   "fail"):    F,  # Storage refused it, or interrupted (the sweep)
    (F,   "reopen"):  P,  # retry-upload, or the sweep's automatic retry
    (NEW, "process"): R,  # the recorder stopped a session and is finishing it
    (R,   "process"): R,  # a restarted recorder finishing what it found
    (F,   "process"): R,  # the recorder retrying a failed upload
    (R,   "store"):   C,
    (R,   "fail"):    F,
    (C,   "delete"):  D,  # a participant, an admin, or the retention sweep
    (F,   "delete"):  D,
    (D,   "delete"):  D,  # asked again while Storage was failing
    (D,   "purge"):   X,  # every Storage object is gone: the tombstone
}


def next_status(status: Status | str | None, action: str) -> Status | None:
    """Where `action` takes a recording in `status` (None: the move is not allowed)."""
    return TABLE.get((Status(status) if status else None, action))


def sources_of(action: str) -> frozenset[Status | None]:
    """The statuses (None: no document) from which `action` is allowed."""
    return frozenset(status for status, act in TABLE if act == action)
