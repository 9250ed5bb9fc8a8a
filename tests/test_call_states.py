"""The transition table, row by row, and what happens off the table."""

from __future__ import annotations

import pytest

from calls.states import (
    ALLOWED_ACTORS,
    FINAL,
    TABLE,
    Actor,
    Invalid,
    Move,
    Repeat,
    Status,
    decide,
)

pytestmark = pytest.mark.pure  # no emulators needed

P, A = Status.PENDING, Status.ACCEPTED
C, R, S = Actor.CALLER, Actor.RECEIVER, Actor.SYSTEM

EXPECTED_ROWS = [
    (P, "accept", R, Status.ACCEPTED, None),
    (P, "decline", R, Status.DECLINED, "declined"),
    (P, "cancel", C, Status.CANCELLED, "cancelled"),
    (P, "missed", C, Status.MISSED, "no_answer"),
    (P, "missed", R, Status.MISSED, "no_answer"),
    (P, "end", C, Status.CANCELLED, "cancelled"),
    (P, "end", R, Status.DECLINED, "declined"),
    (P, "timeout", S, Status.MISSED, "timeout"),
    (A, "end", C, Status.ENDED, "hangup"),
    (A, "end", R, Status.ENDED, "hangup"),
    # calls that end themselves (calls/presence.py)
    (P, "caller_left", S, Status.CANCELLED, "caller_left"),
    (A, "max_duration", S, Status.ENDED, "max_duration"),
    (A, "never_joined", S, Status.ENDED, "never_joined"),
    (A, "left_channel", S, Status.ENDED, "left_channel"),
    (A, "peer_lost", S, Status.ENDED, "peer_lost"),
]


@pytest.mark.parametrize("state, action, actor, to, reason", EXPECTED_ROWS)
def test_every_row_of_the_table(state, action, actor, to, reason):
    assert decide(state, action, actor) == Move(to, reason)


def test_the_table_has_exactly_these_rows():
    assert len(TABLE) == len(EXPECTED_ROWS)


def test_every_row_is_allowed_for_its_actor():
    for (_, action, actor) in TABLE:
        assert actor in ALLOWED_ACTORS[action]


@pytest.mark.parametrize("state, action, actor", [
    (Status.ACCEPTED, "accept", R),
    (Status.DECLINED, "decline", R),
    (Status.CANCELLED, "cancel", C),
    (Status.MISSED, "missed", C),
    (Status.MISSED, "missed", R),
    (Status.MISSED, "timeout", S),
    (Status.ENDED, "end", C),
    (Status.ENDED, "end", R),
    (Status.CANCELLED, "end", C),  # the caller hung up while it rang, and retries
    (Status.DECLINED, "end", R),
])
def test_repeating_what_already_happened_is_a_repeat(state, action, actor):
    assert decide(state, action, actor) == Repeat()


@pytest.mark.parametrize("state, action, actor", [
    (Status.CANCELLED, "accept", R),
    (Status.MISSED, "accept", R),
    (Status.ENDED, "accept", R),
    (Status.ACCEPTED, "cancel", C),
    (Status.ACCEPTED, "decline", R),
    (Status.ACCEPTED, "missed", R),
    (Status.DECLINED, "cancel", C),
    (Status.MISSED, "cancel", C),
    (Status.CANCELLED, "end", R),
    (Status.ENDED, "missed", C),
])
def test_other_moves_out_of_a_settled_state_are_invalid(state, action, actor):
    assert decide(state, action, actor) == Invalid()


def test_final_states():
    assert FINAL == {Status.DECLINED, Status.CANCELLED, Status.MISSED, Status.ENDED}
