"""The call state machine as a table: state, action, actor -> next state, end reason.

Pure data and lookups, no I/O. `store.py` applies a decision inside a Firestore
transaction; `services.py` joins the two.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum


class Status(str, Enum):
    PENDING = "pending"
    ACCEPTED = "accepted"
    DECLINED = "declined"
    CANCELLED = "cancelled"
    MISSED = "missed"
    ENDED = "ended"


class Actor(str, Enum):
    CALLER = "caller"
    RECEIVER = "receiver"
    SYSTEM = "system"  # ring timeouts and presence rules, applied by whoever looks first


def actor_of(call: dict, uid: str) -> Actor | None:
    """Which party of `call` the user is; None for anyone else."""
    if uid == call.get("callerId"):
        return Actor.CALLER
    if uid == call.get("receiverId"):
        return Actor.RECEIVER
    return None


ACTIVE = frozenset({Status.PENDING, Status.ACCEPTED})
FINAL = frozenset(Status) - ACTIVE

P, A = Status.PENDING, Status.ACCEPTED
CALLER, RECEIVER, SYSTEM = Actor.CALLER, Actor.RECEIVER, Actor.SYSTEM

# state  action      actor     next                end reason
TABLE: dict[tuple[Status, str, Actor], tuple[Status, str | None]] = {
    (P, "accept",  RECEIVER): (Status.ACCEPTED,  None),
    (P, "decline", RECEIVER): (Status.DECLINED,  "declined"),
    (P, "cancel",  CALLER):   (Status.CANCELLED, "cancelled"),
    (P, "missed",  CALLER):   (Status.MISSED,    "no_answer"),
    (P, "missed",  RECEIVER): (Status.MISSED,    "no_answer"),
    (P, "end",     CALLER):   (Status.CANCELLED, "cancelled"),  # hanging up while it rings
    (P, "end",     RECEIVER): (Status.DECLINED,  "declined"),
    (P, "timeout", SYSTEM):   (Status.MISSED,    "timeout"),
    (P, "caller_left",  SYSTEM): (Status.CANCELLED, "caller_left"),  # calls/presence.py
    (A, "max_duration", SYSTEM): (Status.ENDED,     "max_duration"),
    (A, "never_joined", SYSTEM): (Status.ENDED,     "never_joined"),
    (A, "left_channel", SYSTEM): (Status.ENDED,     "left_channel"),
    (A, "peer_lost",    SYSTEM): (Status.ENDED,     "peer_lost"),
    (A, "end",     CALLER):   (Status.ENDED,     "hangup"),
    (A, "end",     RECEIVER): (Status.ENDED,     "hangup"),
}

# Who may ask for each action at all (checked before the state: a stranger gets 403).
ALLOWED_ACTORS: dict[str, frozenset[Actor]] = {
    "accept": frozenset({RECEIVER}),
    "decline": frozenset({RECEIVER}),
    "cancel": frozenset({CALLER}),
    "missed": frozenset({CALLER, RECEIVER}),
    "end": frozenset({CALLER, RECEIVER}),
    "timeout": frozenset({SYSTEM}),
    "caller_left": frozenset({SYSTEM}),
    "max_duration": frozenset({SYSTEM}),
    "never_joined": frozenset({SYSTEM}),
    "left_channel": frozenset({SYSTEM}),
    "peer_lost": frozenset({SYSTEM}),
}


@dataclass(frozen=True)
class Move:
    """Write this transition."""

    to: Status
    end_reason: str | None


@dataclass(frozen=True)
class Repeat:
    """The transition already happened (a client retry): answer with the current state."""


@dataclass(frozen=True)
class Invalid:
    """No such move from this state: 409 with the current status."""


Decision = Move | Repeat | Invalid


def decide(status: Status, action: str, actor: Actor) -> Decision:
    """What `actor` asking for `action` does to a call in `status`."""
    row = TABLE.get((status, action, actor))
    if row is not None:
        return Move(*row)
    if status in _results_of(action, actor):
        return Repeat()
    return Invalid()


def _results_of(action: str, actor: Actor) -> set[Status]:
    return {to for (_, act, who), (to, _) in TABLE.items() if act == action and who == actor}
