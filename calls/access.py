"""The one gate for a call: who may see or act on `calls/{id}`."""

from __future__ import annotations

from calls import store
from calls.states import actor_of
from core.errors import CallNotFound, NotInCall
from core.principal import Principal


def access_call(principal: Principal, call_id: str) -> dict:
    """The call, if `principal` is its caller, its receiver or an admin."""
    call = store.call_read(call_id)
    if call is None:
        raise CallNotFound(f"No call {call_id}.")
    if actor_of(call, principal.uid) is None and not principal.admin:
        raise NotInCall("You are not a participant of this call.")
    return call
