"""Agora's channel events: who holds which uid, signed notifications through a real
gunicorn, presence on the call, and the calls that end themselves (no sleeps: the
documents are aged instead)."""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

import pytest
from django.conf import settings

from calls import presence
from calls.states import Status
from core.clock import utc_now
from integrations.firebase import firestore_client
from tests.conftest import post_json
from tests.helpers import error_of, http_json, invite, stored

SECRET = secrets.token_hex(16)
ALICE_UID, BOB_UID = 1001, 2002


@pytest.fixture
def ncs(settings):
    settings.AGORA_NCS_SECRET = SECRET


@pytest.fixture
def server(start_server):
    return start_server(AGORA_NCS_SECRET=SECRET)


def signed(body: bytes, *, secret: str = SECRET, v1: bool = False) -> dict:
    if v1:
        return {"Agora-Signature": hmac.new(secret.encode(), body, hashlib.sha1).hexdigest()}
    return {"Agora-Signature-V2": hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()}


def event(event_type: int, channel: str, uid: int | None = None, *, seq: int = 0,
          ts=None, notice: str | None = None) -> bytes:
    payload = {"channelName": channel, "ts": int((ts or utc_now()).timestamp()),
               "platform": 1, "clientSeq": seq}
    if uid is not None:
        payload["uid"] = uid
    if event_type in (104, 106, 108):
        payload["reason"] = 1
    return json.dumps({"noticeId": notice or secrets.token_hex(8), "productId": 1,
                       "eventType": event_type, "notifyMs": int(utc_now().timestamp() * 1000),
                       "payload": payload}).encode()


def post(base: str, body: bytes, headers: dict | None = None) -> tuple[int, dict]:
    return http_json("POST", f"{base}/api/webhooks/agora", body, headers)


def send(base: str, *args, **kwargs) -> dict:
    body = event(*args, **kwargs)
    status, answer = post(base, body, signed(body))
    assert status == 200, answer
    return answer


def accepted_call_with_uids(as_user) -> dict:
    call = invite(as_user)
    as_user("bob").post("/api/call/answer", {"call_id": call["callId"], "action": "accept"})
    for user, uid in (("alice", ALICE_UID), ("bob", BOB_UID)):
        response = as_user(user).post("/api/token", {"channel": call["channelName"], "uid": uid})
        assert response.status_code == 200, response.content
    return call


def age_presence(call_id: str, seconds: int, *users: str, field: str = "leftAt") -> None:
    """Move a party's presence timestamp `seconds` into the past (and answeredAt)."""
    doc, ref = stored(call_id), firestore_client().collection("calls").document(call_id)
    changes = {}
    for user in users:
        changes[f"presence.`{user}`.{field}"] = doc["presence"][user][field] - timedelta(
            seconds=seconds)
    if doc.get("answeredAt"):
        changes["answeredAt"] = doc["answeredAt"] - timedelta(seconds=seconds)
    if doc.get("callerLeftAt"):
        changes["callerLeftAt"] = doc["callerLeftAt"] - timedelta(seconds=seconds)
    ref.update(changes)


# --- who holds which uid ---------------------------------------------------------


def test_the_first_participant_to_ask_for_a_uid_holds_it(as_user):
    call = invite(as_user)
    ask = {"channel": call["channelName"], "uid": 7}
    assert as_user("alice").post("/api/token", ask).status_code == 200
    error_of(as_user("bob").post("/api/token", ask), 409, "uid_taken")
    assert as_user("alice").post("/api/token", ask).status_code == 200  # hers, again
    accounts = {"channel": call["channelName"], "user_account": "bob-phone"}
    assert as_user("bob").post("/api/token", accounts).status_code == 200
    error_of(as_user("alice").post("/api/token", accounts), 409, "uid_taken")
    assert stored(call["callId"])["agoraUids"] == {"7": "alice", "bob-phone": "bob"}


def test_nobody_gets_a_token_for_the_recorders_uid(as_user, any_channel):
    error_of(as_user("alice").post("/api/token", {"channel": "x", "uid": settings.RECORDER_UID}),
             403, "uid_reserved")


# --- the webhook itself ----------------------------------------------------------


def test_only_events_signed_with_the_secret_count(as_user, server):
    call = accepted_call_with_uids(as_user)
    body = event(103, call["channelName"], ALICE_UID, seq=1)
    assert post(server, body)[0] == 401  # no signature
    assert post(server, body, signed(body, secret="wrong"))[1]["error"]["code"] == "invalid_signature"
    assert post(server, body.replace(b'"eventType": 103', b'"eventType": 104'),
                signed(body))[0] == 401  # tampered body
    assert "alice" not in stored(call["callId"])["presence"]
    status, answer = post(server, body, signed(body, v1=True))  # the SHA1 header alone
    assert (status, answer["result"]) == (200, "applied")
    assert stored(call["callId"])["presence"]["alice"]["inChannel"] is True


def test_bad_bodies_are_4xx_json(server):
    big = b'{"noticeId": "x", "payload": {"pad": "' + b"a" * (1024 * 1024) + b'"}}'
    status, answer = post(server, big, signed(big))
    assert (status, answer["error"]["code"]) == (413, "payload_too_large")
    broken = b'{"noticeId": '
    assert post(server, broken, signed(broken))[1]["error"]["code"] == "malformed_json"
    shapeless = b'{"noticeId": 5, "eventType": 103, "payload": {}}'
    status, answer = post(server, shapeless, signed(shapeless))
    assert (status, answer["error"]["code"]) == (400, "validation_error")


def test_events_that_are_not_about_a_party_have_no_effect(as_user, server):
    call = accepted_call_with_uids(as_user)
    before = stored(call["callId"])
    assert send(server, 103, call["channelName"], settings.RECORDER_UID)["reason"] == "recorder"
    assert send(server, 103, call["channelName"], 4242)["reason"] == "unknown_uid"
    assert send(server, 103, "nobody_has_this_channel_1", ALICE_UID)["reason"] == "unknown_channel"
    assert send(server, 999, call["channelName"], ALICE_UID)["reason"] == "event_type"
    assert stored(call["callId"])["presence"] == before["presence"] == {}


def test_duplicates_and_late_events_are_ignored(as_user, server):
    call = accepted_call_with_uids(as_user)
    channel = call["channelName"]
    assert send(server, 103, channel, ALICE_UID, seq=5, notice="n-1")["result"] == "applied"
    assert send(server, 103, channel, ALICE_UID, seq=5, notice="n-1")["reason"] == "duplicate"
    assert send(server, 104, channel, ALICE_UID, seq=9)["result"] == "applied"
    # The join Agora took before the leave arrives last: alice stays out.
    assert send(server, 103, channel, ALICE_UID, seq=7)["reason"] == "stale"
    assert send(server, 103, channel, ALICE_UID, seq=9)["reason"] == "stale"  # not newer
    doc = stored(call["callId"])
    assert doc["presence"]["alice"]["inChannel"] is False
    assert doc["agoraSeq"] == {str(ALICE_UID): 9}
    notice = firestore_client().collection("agoraNotices").document("n-1").get()
    assert notice.exists and notice.get("expireAt") > utc_now() + timedelta(days=6)


# --- calls that end themselves ----------------------------------------------------


def test_both_parties_gone_for_the_grace_period_ends_the_call(as_user, server):
    call = accepted_call_with_uids(as_user)
    channel = call["channelName"]
    start = utc_now() - timedelta(seconds=30)
    send(server, 103, channel, ALICE_UID, seq=1, ts=start)
    send(server, 103, channel, BOB_UID, seq=1, ts=start)
    send(server, 104, channel, ALICE_UID, seq=2, ts=start + timedelta(seconds=20))
    send(server, 104, channel, BOB_UID, seq=2, ts=start + timedelta(seconds=20))
    assert as_user("alice").get(f"/api/call/status/{call['callId']}").json()["status"] == "accepted"
    age_presence(call["callId"], settings.CALL_LEAVE_GRACE_SECONDS, "alice", "bob")
    doc = as_user("alice").get(f"/api/call/status/{call['callId']}").json()
    assert (doc["status"], doc["endReason"], doc["endedBy"]) == ("ended", "left_channel", "system")
    assert doc["talkSeconds"] == 20


def test_a_party_lost_while_the_other_stays_ends_the_call_and_tells_who_is_left(
        as_user, server, fcm):
    firestore_client().collection("users").document("alice").set(
        {"platform": "android", "fcmToken": "alice-token"})
    call = accepted_call_with_uids(as_user)
    channel = call["channelName"]
    send(server, 103, channel, ALICE_UID, seq=1)
    send(server, 103, channel, BOB_UID, seq=1)
    send(server, 104, channel, BOB_UID, seq=2)  # bob's phone died
    age_presence(call["callId"], settings.CALL_LEAVE_GRACE_SECONDS, "bob")
    fcm.reset()
    doc = as_user("alice").get(f"/api/call/status/{call['callId']}").json()
    assert (doc["status"], doc["endReason"]) == ("ended", "peer_lost")
    [told] = fcm.sent_to("alice-token")
    assert told.message["data"]["type"] == "call_ended"


def test_a_caller_gone_while_it_rings_cancels_the_call(as_user, server):
    call = invite(as_user)
    as_user("alice").post("/api/token", {"channel": call["channelName"], "uid": ALICE_UID})
    send(server, 103, call["channelName"], ALICE_UID, seq=1)
    send(server, 104, call["channelName"], ALICE_UID, seq=2)
    assert as_user("bob").get(f"/api/call/status/{call['callId']}").json()["status"] == "pending"
    age_presence(call["callId"], settings.CALL_CALLER_GONE_SECONDS, "alice")
    doc = as_user("bob").get(f"/api/call/status/{call['callId']}").json()
    assert (doc["status"], doc["endReason"], doc["endedBy"]) == (
        "cancelled", "caller_left", "system")


def test_the_sweep_cancels_a_ringing_call_whose_caller_is_gone(as_user, server, client):
    call = invite(as_user)
    as_user("alice").post("/api/token", {"channel": call["channelName"], "uid": ALICE_UID})
    send(server, 103, call["channelName"], ALICE_UID, seq=1)
    send(server, 104, call["channelName"], ALICE_UID, seq=2)
    sweep = lambda: post_json(client, "/api/call/timeout/sweep", {},  # noqa: E731
                              {"X-Ops-Key": settings.OPS_API_KEY}).json()["report"]["callsEnded"]
    assert sweep() == {"ended": 0}  # the caller left just now
    age_presence(call["callId"], settings.CALL_CALLER_GONE_SECONDS, "alice")
    assert sweep() == {"ended": 1}
    assert (stored(call["callId"])["status"], stored(call["callId"])["endReason"]) == (
        "cancelled", "caller_left")


def test_an_accepted_call_nobody_joined_ends_when_events_are_enabled(as_user, ncs):
    call = accepted_call_with_uids(as_user)
    ref = firestore_client().collection("calls").document(call["callId"])
    ref.update({"answeredAt": utc_now() - timedelta(seconds=settings.CALL_JOIN_GRACE_SECONDS)})
    doc = as_user("bob").get(f"/api/call/status/{call['callId']}").json()
    assert (doc["status"], doc["endReason"]) == ("ended", "never_joined")


def test_without_channel_events_a_call_nobody_joined_stays_but_not_past_the_maximum(as_user):
    call = accepted_call_with_uids(as_user)
    ref = firestore_client().collection("calls").document(call["callId"])
    ref.update({"answeredAt": utc_now() - timedelta(seconds=settings.CALL_JOIN_GRACE_SECONDS)})
    assert as_user("bob").get(f"/api/call/status/{call['callId']}").json()["status"] == "accepted"
    ref.update({"answeredAt": utc_now() - timedelta(seconds=settings.CALL_MAX_SECONDS)})
    doc = as_user("bob").get(f"/api/call/status/{call['callId']}").json()
    assert (doc["status"], doc["endReason"]) == ("ended", "max_duration")


def test_the_sweep_ends_a_stale_accepted_call_nobody_looks_at(as_user, client, ncs):
    call = accepted_call_with_uids(as_user)
    firestore_client().collection("calls").document(call["callId"]).update(
        {"answeredAt": utc_now() - timedelta(seconds=settings.CALL_MAX_SECONDS + 5)})
    response = post_json(client, "/api/call/timeout/sweep", {},
                         {"X-Ops-Key": settings.OPS_API_KEY})
    assert response.json()["report"]["callsEnded"] == {"ended": 1}
    assert (stored(call["callId"])["status"], stored(call["callId"])["endReason"]) == (
        "ended", "max_duration")


def _hang_up(base: str, headers: dict, call_id: str) -> tuple[int, dict]:
    return http_json("POST", f"{base}/api/call/end", {"call_id": call_id}, headers)


def test_a_leave_racing_a_hang_up_has_one_winner_with_a_consistent_reason(as_user, server):
    for _ in range(5):
        call = accepted_call_with_uids(as_user)
        channel = call["channelName"]
        send(server, 103, channel, ALICE_UID, seq=1)
        send(server, 103, channel, BOB_UID, seq=1)
        send(server, 104, channel, BOB_UID, seq=2)
        age_presence(call["callId"], settings.CALL_LEAVE_GRACE_SECONDS, "bob")
        body = event(104, channel, ALICE_UID, seq=2)  # alice leaves too, bob long gone
        with ThreadPoolExecutor(max_workers=2) as pool:
            leave = pool.submit(post, server, body, signed(body))
            end = pool.submit(_hang_up, server, as_user("alice").headers, call["callId"])
            (leave_status, _), (end_status, ended) = leave.result(), end.result()
        doc = stored(call["callId"])
        assert doc["status"] == Status.ENDED.value
        assert (doc["endReason"], doc["endedBy"]) in (
            ("hangup", "alice"), ("peer_lost", "system"), ("left_channel", "system"))
        # Whoever lost sees the same ended call (a repeated end is answered 200).
        assert (leave_status, end_status, ended["status"]) == (200, 200, "ended")


# --- the rule table itself ----------------------------------------------------------


@pytest.mark.parametrize("row", presence.RULES, ids=[r[2] for r in presence.RULES])
def test_every_rule_has_a_system_row_in_the_state_table(row):
    from calls.states import SYSTEM, TABLE, Move, decide

    status, _rule, action = row
    assert isinstance(decide(status, action, SYSTEM), Move)
    assert (status, action, SYSTEM) in TABLE
