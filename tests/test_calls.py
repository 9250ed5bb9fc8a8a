"""The call API over HTTP against the Firestore emulator: the seed's shapes, who may do
what, retries, busy lines, and the ring timeout applied by whoever looks first."""

from __future__ import annotations

import re
import uuid
from datetime import timedelta

import pytest
from django.conf import settings

from calls.services import _token_members
from core.clock import utc_now
from integrations.firebase import firestore_client
from tests.conftest import api_log_lines, post_json
from tests.helpers import INVITE, age, error_of, invite, stored

# --- invite and status -------------------------------------------------------------


def test_invite_creates_a_pending_call_with_the_seed_fields(as_user):
    body = invite(as_user)
    assert body["success"] is True and body["status"] == "pending"
    assert re.fullmatch(r"group1_alice_bob_\d{13}", body["channelName"])
    # bob has no device registered: nothing rang, and the call says why
    assert (body["pushSent"], body["pushPlatform"], body["pushError"]) == (
        False, None, "no_device_token")
    doc = stored(body["callId"])
    assert doc["status"] == "pending" and doc["callerId"] == "alice"
    assert doc["channelName"] == body["channelName"]


def test_status_returns_the_whole_document_as_in_the_seed(as_user):
    call_id = invite(as_user)["callId"]
    response = as_user("bob").get(f"/api/call/status/{call_id}")
    assert response.status_code == 200
    call = response.json()
    assert call["callId"] == call_id and call["status"] == "pending"
    assert call["caregiverUserId"] == "alice" and call["giverNameSnapshot"] == "Alice Kim"
    assert call["receiverId"] == "bob" and call["receiverNameSnapshot"] == "김영옥"
    assert call["groupNameSnapshot"] == "Boston Care Group"
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z", call["createdAt"])
    for key in ("answeredAt", "endedAt", "lastReviewAt"):
        assert call[key] is None
    assert call["humanKeywords"] == [] and call["reviewCount"] == 0
    assert call["durationSec"] == 0 and "idempotencyKey" not in call


def test_caller_name_defaults_to_the_caller_id(as_user):
    call_id = invite(as_user, caller_name=None)["callId"]
    assert stored(call_id)["callerName"] == "alice"


def test_only_participants_and_admins_read_a_call(as_user):
    call_id = invite(as_user)["callId"]
    error_of(as_user("mallory").get(f"/api/call/status/{call_id}"), 403, "not_in_call")
    assert as_user("ops-person", admin=True).get(f"/api/call/status/{call_id}").status_code == 200
    error_of(as_user("bob").get("/api/call/status/no-such-call"), 404, "call_not_found")


def test_you_can_only_invite_as_yourself(as_user):
    response = as_user("mallory").post("/api/call/invite", INVITE)
    error_of(response, 403, "not_the_caller")


def test_calling_yourself_is_400(as_user):
    response = as_user("alice").post("/api/call/invite", {**INVITE, "receiver_id": "alice"})
    error_of(response, 400, "self_call")


@pytest.mark.parametrize("field, value", [("group_id", "group_1"), ("caller_id", "al_ice"),
                                          ("receiver_id", "bob smith"), ("group_id", "x" * 129)])
def test_ids_that_would_break_the_channel_name_are_400(as_user, field, value):
    body = {**INVITE, field: value}
    # The caller signs in as the id it sends, so the id rule itself is what refuses it.
    response = as_user(body["caller_id"]).post("/api/call/invite", body)
    assert field in error_of(response, 400, "validation_error")["message"]


def test_an_empty_caller_id_is_not_yours(as_user):
    response = as_user("alice").post("/api/call/invite", {**INVITE, "caller_id": ""})
    error_of(response, 403, "not_the_caller")


def test_firebase_length_ids_still_give_a_valid_agora_channel(as_user):
    caller, receiver = "A" * 28, "B" * 28
    body = invite(as_user, group_id="G" * 20, caller_id=caller, receiver_id=receiver)
    channel = body["channelName"]
    assert len(channel.encode()) <= 64
    assert re.fullmatch(r"G{16}_A{16}_B{16}_\d{13}", channel)
    doc = stored(body["callId"])
    assert (doc["callerId"], doc["receiverId"]) == (caller, receiver)


def test_invite_needs_authentication(client):
    error_of(post_json(client, "/api/call/invite", INVITE), 401, "unauthenticated")


# --- answer, cancel, missed, end ----------------------------------------------------


def test_the_receiver_accepts_and_both_see_accepted(as_user):
    call = invite(as_user)
    response = as_user("bob").post("/api/call/answer", {"call_id": call["callId"],
                                                        "action": "accept"})
    assert response.status_code == 200
    assert response.json() == {"success": True, "callId": call["callId"],
                               "channelName": call["channelName"], "status": "accepted"}
    seen = as_user("alice").get(f"/api/call/status/{call['callId']}").json()
    assert seen["status"] == "accepted" and seen["answeredAt"]


@pytest.mark.parametrize("who, path, body, code", [
    ("alice", "/api/call/answer", {"action": "accept"}, "wrong_party"),
    ("alice", "/api/call/answer", {"action": "decline"}, "wrong_party"),
    ("bob", "/api/call/cancel", {}, "wrong_party"),
    ("mallory", "/api/call/answer", {"action": "accept"}, "not_in_call"),
    ("mallory", "/api/call/cancel", {}, "not_in_call"),
    ("mallory", "/api/call/missed", {}, "not_in_call"),
    ("mallory", "/api/call/end", {}, "not_in_call"),
])
def test_each_party_may_do_only_its_own_moves(as_user, who, path, body, code):
    call_id = invite(as_user)["callId"]
    error_of(as_user(who).post(path, {"call_id": call_id, **body}), 403, code)
    assert stored(call_id)["status"] == "pending"


@pytest.mark.parametrize("path", ["/api/call/answer", "/api/call/cancel", "/api/call/missed",
                                  "/api/call/end"])
def test_an_unknown_call_is_404(as_user, path):
    response = as_user("bob").post(path, {"call_id": "no-such-call", "action": "accept"})
    error_of(response, 404, "call_not_found")


def test_decline_cancel_and_missed(as_user):
    declined = invite(as_user)["callId"]
    response = as_user("bob").post("/api/call/answer", {"call_id": declined, "action": "decline"})
    assert response.json()["status"] == "declined"
    assert stored(declined)["endReason"] == "declined"

    cancelled = invite(as_user)["callId"]
    response = as_user("alice").post("/api/call/cancel", {"call_id": cancelled})
    assert response.json() == {"success": True, "callId": cancelled, "status": "cancelled"}

    missed = invite(as_user)["callId"]
    assert as_user("bob").post("/api/call/missed", {"call_id": missed}).json()["status"] == "missed"
    assert stored(missed)["endReason"] == "no_answer"


def test_end_reports_the_talk_time(as_user):
    call_id = invite(as_user)["callId"]
    as_user("bob").post("/api/call/answer", {"call_id": call_id, "action": "accept"})
    age(call_id, 125, "answeredAt")
    response = as_user("bob").post("/api/call/end", {"call_id": call_id})
    body = response.json()
    assert body["status"] == "ended" and 125 <= body["durationSeconds"] <= 130
    doc = stored(call_id)
    assert doc["endedBy"] == "bob" and doc["endReason"] == "hangup"
    assert doc["durationSec"] == body["durationSeconds"]


@pytest.mark.parametrize("who, status", [("alice", "cancelled"), ("bob", "declined")])
def test_ending_a_ringing_call_cancels_or_declines_it(as_user, who, status):
    call_id = invite(as_user)["callId"]
    body = as_user(who).post("/api/call/end", {"call_id": call_id}).json()
    assert body["status"] == status and body["durationSeconds"] == 0


# --- retries and settled calls -----------------------------------------------------


@pytest.mark.parametrize("who, path, body", [
    ("bob", "/api/call/answer", {"action": "accept"}),
    ("bob", "/api/call/answer", {"action": "decline"}),
    ("alice", "/api/call/cancel", {}),
    ("alice", "/api/call/missed", {}),
    ("alice", "/api/call/end", {}),
])
def test_repeating_a_transition_answers_200_with_the_same_state(as_user, who, path, body):
    call_id = invite(as_user)["callId"]
    first = as_user(who).post(path, {"call_id": call_id, **body})
    updated_at = stored(call_id)["updatedAt"]
    again = as_user(who).post(path, {"call_id": call_id, **body})
    assert first.status_code == again.status_code == 200
    assert first.json() == again.json()
    assert stored(call_id)["updatedAt"] == updated_at  # nothing written the second time


def test_moving_out_of_a_settled_state_is_409_with_the_status(as_user):
    call_id = invite(as_user)["callId"]
    as_user("alice").post("/api/call/cancel", {"call_id": call_id})
    error = error_of(as_user("bob").post("/api/call/answer", {"call_id": call_id,
                                                              "action": "accept"}),
                     409, "invalid_transition")
    assert error["status"] == "cancelled" and error["callId"] == call_id


def test_an_idempotency_key_makes_a_retried_invite_the_same_call(as_user):
    # A key of this run only: the log file is shared by the whole session.
    key = {"Idempotency-Key": f"invite-{uuid.uuid4().hex}"}
    first = as_user("alice").post("/api/call/invite", INVITE, key)
    again = as_user("alice").post("/api/call/invite", INVITE, key)
    assert first.status_code == again.status_code == 200
    assert first.json()["callId"] == again.json()["callId"]
    assert first.json()["channelName"] == again.json()["channelName"]
    rings = [line for line in api_log_lines() if line.get("call_event") == "incoming_call"
             and line["call_id"] == first.json()["callId"]]
    assert len(rings) == 1
    assert len(list(firestore_client().collection("calls").stream())) == 1


def test_an_idempotency_key_reused_for_another_call_is_409(as_user):
    key = {"Idempotency-Key": "invite-7f3a"}
    as_user("alice").post("/api/call/invite", INVITE, key)
    error_of(as_user("alice").post("/api/call/invite", {**INVITE, "receiver_id": "carol"}, key),
             409, "idempotency_key_reused")


# --- busy lines ------------------------------------------------------------------


def test_a_ringing_or_talking_user_is_busy(as_user):
    first = invite(as_user)["callId"]
    error = error_of(as_user("carol").post("/api/call/invite",
                                           {**INVITE, "caller_id": "carol"}), 409, "busy")
    assert error["callId"] == first
    error_of(as_user("bob").post("/api/call/invite", {**INVITE, "caller_id": "bob",
                                                      "receiver_id": "dave"}), 409, "busy")
    as_user("bob").post("/api/call/answer", {"call_id": first, "action": "accept"})
    error_of(as_user("carol").post("/api/call/invite", {**INVITE, "caller_id": "carol",
                                                        "receiver_id": "alice"}), 409, "busy")
    as_user("alice").post("/api/call/end", {"call_id": first})
    assert invite(as_user, caller_id="carol")["status"] == "pending"


def test_an_expired_ringing_call_does_not_keep_the_line_busy(as_user):
    stale = invite(as_user)["callId"]
    age(stale, settings.CALL_RING_TIMEOUT_SECONDS + 1)
    assert invite(as_user, caller_id="carol")["status"] == "pending"
    assert stored(stale)["status"] == "missed" and stored(stale)["endReason"] == "timeout"


# --- ring timeout ----------------------------------------------------------------


def test_accepting_after_the_ring_timeout_is_409_missed_and_persisted(as_user):
    call_id = invite(as_user)["callId"]
    age(call_id, settings.CALL_RING_TIMEOUT_SECONDS + 1)
    error = error_of(as_user("bob").post("/api/call/answer", {"call_id": call_id,
                                                              "action": "accept"}),
                     409, "invalid_transition")
    assert error["status"] == "missed"
    doc = stored(call_id)
    assert doc["status"] == "missed" and doc["endReason"] == "timeout"


def test_reading_an_expired_call_persists_missed(as_user):
    call_id = invite(as_user)["callId"]
    age(call_id, settings.CALL_RING_TIMEOUT_SECONDS + 1)
    assert as_user("alice").get(f"/api/call/status/{call_id}").json()["status"] == "missed"
    assert stored(call_id)["status"] == "missed"


def test_a_client_timer_after_the_server_timeout_is_a_harmless_repeat(as_user):
    call_id = invite(as_user)["callId"]
    age(call_id, settings.CALL_RING_TIMEOUT_SECONDS + 1)
    response = as_user("alice").post("/api/call/missed", {"call_id": call_id})
    assert response.status_code == 200 and response.json()["status"] == "missed"


def test_a_call_inside_the_timeout_still_rings(as_user):
    call_id = invite(as_user)["callId"]
    age(call_id, settings.CALL_RING_TIMEOUT_SECONDS - 5)
    response = as_user("bob").post("/api/call/answer", {"call_id": call_id, "action": "accept"})
    assert response.json()["status"] == "accepted"


# --- tokens belong to the call's participants -------------------------------------


def test_only_participants_of_an_active_call_get_a_token(as_user):
    # With the default token cache: a call that ends drops its grants at once.
    assert settings.CALL_TOKEN_CACHE_SECONDS > 0
    call = invite(as_user)
    ask = {"channel": call["channelName"], "uid": 1}
    assert as_user("alice").post("/api/token", ask).status_code == 200
    assert as_user("bob").post("/api/token", {**ask, "uid": 2}).status_code == 200
    error_of(as_user("mallory").post("/api/token", ask), 403, "not_in_call")
    error_of(as_user("alice").post("/api/token", {"channel": "group1_alice_bob_1", "uid": 1}),
             403, "not_in_call")
    as_user("alice").post("/api/call/end", {"call_id": call["callId"]})
    error_of(as_user("alice").post("/api/token", ask), 403, "not_in_call")


def test_repeated_token_requests_for_one_call_read_firestore_once(as_user, firestore_reads):
    call = invite(as_user)
    ask = {"channel": call["channelName"], "uid": 1}
    firestore_reads.clear()
    for _ in range(5):
        assert as_user("alice").post("/api/token", ask).status_code == 200
    # The first token reads the channel's entry, then binds uid 1 to alice in one
    # transaction (which reads the entry again); no query, no read of the call; the
    # process remembers the grant for the other four.
    assert firestore_reads == {("channels", call["channelName"]): 2}
    assert stored(call["callId"])["agoraUids"] == {"1": "alice"}
    _token_members.clear()  # another worker: the uid is bound already, one point read
    firestore_reads.clear()
    assert as_user("alice").post("/api/token", ask).status_code == 200
    assert firestore_reads == {("channels", call["channelName"]): 1}
    error_of(as_user("mallory").post("/api/token", ask), 403, "not_in_call")


def test_no_token_for_a_call_that_rang_out(as_user):
    call = invite(as_user)
    age(call["callId"], settings.CALL_RING_TIMEOUT_SECONDS + 1)
    error_of(as_user("bob").post("/api/token", {"channel": call["channelName"], "uid": 1}),
             403, "not_in_call")
    assert stored(call["callId"])["status"] == "missed"


def test_the_authenticated_policy_gives_tokens_to_any_user(as_user, settings):
    settings.TOKEN_CHANNEL_POLICY = "authenticated"
    assert as_user("mallory").post("/api/token", {"channel": "x", "uid": 1}).status_code == 200


# --- sweep ---------------------------------------------------------------------


def test_sweep_needs_the_ops_key_or_an_admin(as_user, client):
    path = "/api/call/timeout/sweep"
    error_of(post_json(client, path, {}), 401, "unauthenticated")
    error_of(as_user("alice").post(path, {}), 403, "admin_required")
    error_of(post_json(client, path, {}, {"X-Ops-Key": "wrong"}), 403, "invalid_ops_key")
    ok = post_json(client, path, {"timeout_seconds": 60}, {"X-Ops-Key": settings.OPS_API_KEY})
    assert ok.json() == {"success": True, "timeoutSeconds": 60, "updatedCount": 0, "report": {
        "calls": {"updated": 0}, "callsEnded": {"ended": 0},
        "recordingsOfEndedCalls": {"stopped": 0},
        "recorderRetries": {"retrying": 0},
        "uploads": {"interrupted": 0, "retried": 0, "completed": 0,
                    "abandonedFilesRemoved": 0},
        "analysis": {"created": 0, "dispatched": {}, "stale": 0}}}
    assert as_user("root", admin=True).post(path, {}).status_code == 200


def test_sweep_validates_its_timeout(client):
    response = post_json(client, "/api/call/timeout/sweep", {"timeout_seconds": 0},
                         {"X-Ops-Key": settings.OPS_API_KEY})
    assert "timeout_seconds" in error_of(response, 400, "validation_error")["message"]


def _seed_pending_calls(count: int, *, expired: int) -> set[str]:
    """Write `count` pending calls straight to Firestore; the first `expired` are old."""
    from calls.services import _call_document

    now, db = utc_now(), firestore_client()
    expired_ids = set()
    batch = db.batch()
    for i in range(count):
        created = now - timedelta(seconds=600 if i < expired else 10)
        call_id = f"seeded-{i:05d}"
        doc = _call_document(call_id=call_id, channel=f"g_c{i}_r{i}_1", group_id="g",
                             caller_id=f"c{i}", receiver_id=f"r{i}", caller_name="c",
                             group_name_snapshot="", receiver_name_snapshot="",
                             idempotency_key=None, now=created)
        batch.set(db.collection("calls").document(call_id), doc)
        if i < expired:
            expired_ids.add(call_id)
        if i % 400 == 399:
            batch.commit()
            batch = db.batch()
    batch.commit()
    return expired_ids


def test_sweep_of_2000_ringing_calls_moves_exactly_the_500_expired_and_reads_only_them(
        client, firestore_reads):
    expired = _seed_pending_calls(2000, expired=500)
    firestore_reads.clear()
    response = post_json(client, "/api/call/timeout/sweep", {"timeout_seconds": 60},
                         {"X-Ops-Key": settings.OPS_API_KEY})
    assert response.json()["updatedCount"] == 500
    assert {doc for (collection, doc) in firestore_reads if collection == "calls"} == expired
    statuses = {snap.id: snap.get("status")
                for snap in firestore_client().collection("calls").stream()}
    assert {i for i, s in statuses.items() if s == "missed"} == expired
    assert sum(1 for s in statuses.values() if s == "pending") == 1500
    again = post_json(client, "/api/call/timeout/sweep", {},
                      {"X-Ops-Key": settings.OPS_API_KEY})
    assert again.json()["updatedCount"] == 0


def test_sweep_skips_a_call_answered_since_the_query(as_user, monkeypatch):
    from google.cloud.firestore_v1.query import Query

    from calls.services import calls_settle_expired

    call_id = invite(as_user)["callId"]
    found = []
    stream = Query.stream

    def stream_then_answer(self, *args, **kwargs):
        # The sweep's query has found the ringing call; bob accepts before it is settled.
        found.extend(stream(self, *args, **kwargs))
        as_user("bob").post("/api/call/answer", {"call_id": call_id, "action": "accept"})
        yield from found

    monkeypatch.setattr(Query, "stream", stream_then_answer)
    # The sweep's clock is injectable: an hour later the call would have rung out.
    assert calls_settle_expired(timeout_seconds=60, now=utc_now() + timedelta(hours=1)) == 0
    assert [snap.id for snap in found] == [call_id]
    assert stored(call_id)["status"] == "accepted"
