"""The analysis job status machine as a table: status, event -> next status.

Pure data and lookups, no I/O (the shape of `calls/states.py`). `store.py` applies a move
inside a Firestore transaction that also bumps the job's `seq`; `services.py` joins them.

A job's life: queued (created; waiting for the analysis server to accept it) -> processing
(accepted, reporting progress) -> completed | failed. The analysis server may report
before our dispatch request has returned, so every event is allowed from queued too. A
final job ignores everything that arrives later.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum


class Status(str, Enum):
    QUEUED = "queued"
    PROCESSING = "processing"
    COMPLETED = "completed"
    FAILED = "failed"


FINAL = frozenset({Status.COMPLETED, Status.FAILED})

Q, P, C, F = Status.QUEUED, Status.PROCESSING, Status.COMPLETED, Status.FAILED

# status  event        next
TABLE: dict[tuple[Status, str], Status] = {
    (Q, "accepted"):  P,  # the analysis server answered 2xx to POST /jobs
    (Q, "retry"):     Q,  # 429 / 5xx / unreachable: try again at nextAttemptAt
    (Q, "progress"):  P,  # its webhook overtook its own 2xx answer
    (P, "progress"):  P,
    (Q, "completed"): C,
    (P, "completed"): C,
    (Q, "failed"):    F,  # refused (4xx), out of attempts, superseded, or reported failed
    (P, "failed"):    F,  # reported failed, stale (the sweep), or superseded
}

# The SSE event name for a job in each status.
EVENT_OF = {Q: "progress", P: "progress", C: "completed", F: "failed"}


@dataclass(frozen=True)
class Move:
    to: Status


@dataclass(frozen=True)
class Ignore:
    """Nothing to write: the job is final, or the event does not apply from its status."""


def decide(status: Status | str, event: str) -> Move | Ignore:
    to = TABLE.get((Status(status), event))
    return Move(to) if to is not None else Ignore()
