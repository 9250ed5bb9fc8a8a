"""Ringing the receiver's phone and telling it to stop, through fakes that speak APNs'
HTTP/2 and FCM v1's wire protocols; dead tokens; providers that fail or are slow."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest
from django.conf import settings

from integrations.firebase import firestore_client
from push import services as push_services
from tests.conftest import APNS_BUNDLE, post_json
from tests.test_calls import INVITE, age, invite, stored

VOIP_TOKEN = "ab" * 32
FCM_TOKEN = "fcm-registration-token-of-bob"


def phone(uid: str, **fields) -> None:
    """What the app writes to users/{uid}."""
    firestore_client().collection("users").document(uid).set(fields)


def user(uid: str) -> dict:
    return firestore_client().collection("users").document(uid).get().to_dict()


def seed_payload(call: dict, push_type: str, status: str) -> dict:
    return {"type": push_type, "callId": call["callId"], "channelName": call["channelName"],
            "callerName": "Alice Kim", "callerID": "alice", "groupId": "group1",
            "receiverId": "bob", "status": status}


# --- ringing ---------------------------------------------------------------------


def test_invite_rings_an_iphone_with_a_voip_push(as_user, apns):
    phone("bob", platform="ios", voipToken=VOIP_TOKEN)
    before = int(time.time())
    call = invite(as_user)
    assert (call["pushSent"], call["pushPlatform"], call["pushError"]) == (True, "ios", None)
    [push] = apns.requests
    assert push.status == 200 and push.token == VOIP_TOKEN
    assert push.headers["apns-push-type"] == "voip"
    assert push.headers["apns-topic"] == f"{APNS_BUNDLE}.voip"
    assert push.headers["apns-priority"] == "10"
    expiration = int(push.headers["apns-expiration"])
    assert before + 50 <= expiration <= int(time.time()) + settings.CALL_RING_TIMEOUT_SECONDS
    assert push.payload == seed_payload(call, "incoming_call", "pending")
    doc = stored(call["callId"])
    assert (doc["pushSent"], doc["pushPlatform"], doc["pushError"]) == (True, "ios", None)


def test_invite_rings_an_android_phone_with_a_high_priority_data_message(as_user, fcm):
    phone("bob", platform="android", fcmToken=FCM_TOKEN)
    call = invite(as_user)
    assert (call["pushSent"], call["pushPlatform"]) == (True, "android")
    [sent] = fcm.sent_to(FCM_TOKEN)
    assert sent.status == 200
    assert sent.message["data"] == seed_payload(call, "incoming_call", "pending")
    assert sent.message["android"]["priority"] == "HIGH"
    ttl = int(sent.message["android"]["ttl"].rstrip("s"))
    assert 50 <= ttl <= settings.CALL_RING_TIMEOUT_SECONDS


def test_a_receiver_without_a_device_token_is_not_rung_but_the_call_stands(as_user, apns):
    phone("bob", platform="ios")
    call = invite(as_user)
    assert (call["pushSent"], call["pushError"]) == (False, "no_device_token")
    assert stored(call["callId"])["status"] == "pending" and not apns.requests


# --- stop ringing ----------------------------------------------------------------


def _pushes(apns, push_type: str) -> list:
    return [r for r in apns.requests if r.payload and r.payload["type"] == push_type]


@pytest.mark.parametrize("who, path, body, push_type, status", [
    ("alice", "/api/call/cancel", {}, "call_cancelled", "cancelled"),
    ("alice", "/api/call/end", {}, "call_cancelled", "cancelled"),
    ("alice", "/api/call/missed", {}, "call_missed", "missed"),
    ("bob", "/api/call/answer", {"action": "decline"}, "call_cancelled", "declined"),
])
def test_the_receivers_phone_is_told_to_stop_ringing(as_user, apns, who, path, body,
                                                      push_type, status):
    phone("bob", platform="ios", voipToken=VOIP_TOKEN)
    call = invite(as_user)
    assert as_user(who).post(path, {"call_id": call["callId"], **body}).status_code == 200
    [stop] = _pushes(apns, push_type)
    assert stop.token == VOIP_TOKEN and stop.payload["status"] == status
    assert stop.payload["callId"] == call["callId"]


def test_a_timeout_found_by_the_sweep_stops_the_ringing_once(as_user, apns, client):
    phone("bob", platform="ios", voipToken=VOIP_TOKEN)
    call = invite(as_user)
    age(call["callId"], settings.CALL_RING_TIMEOUT_SECONDS + 1)
    ops = {"X-Ops-Key": settings.OPS_API_KEY}
    assert post_json(client, "/api/call/timeout/sweep", {}, ops).json()["updatedCount"] == 1
    post_json(client, "/api/call/timeout/sweep", {}, ops)
    as_user("bob").get(f"/api/call/status/{call['callId']}")
    assert len(_pushes(apns, "call_missed")) == 1


def test_a_timeout_found_by_a_read_stops_the_ringing(as_user, fcm):
    phone("bob", platform="android", fcmToken=FCM_TOKEN)
    call = invite(as_user)
    age(call["callId"], settings.CALL_RING_TIMEOUT_SECONDS + 1)
    as_user("alice").get(f"/api/call/status/{call['callId']}")
    types = [m.message["data"]["type"] for m in fcm.sent_to(FCM_TOKEN)]
    assert types == ["incoming_call", "call_missed"]


@pytest.mark.parametrize("ender, told, token_field", [("alice", "bob", "voipToken"),
                                                      ("bob", "alice", "voipToken")])
def test_hanging_up_tells_the_other_party(as_user, apns, ender, told, token_field):
    tokens = {"alice": "cd" * 32, "bob": VOIP_TOKEN}
    for uid, token in tokens.items():
        phone(uid, platform="ios", voipToken=token)
    call = invite(as_user)
    as_user("bob").post("/api/call/answer", {"call_id": call["callId"], "action": "accept"})
    as_user(ender).post("/api/call/end", {"call_id": call["callId"]})
    [ended] = _pushes(apns, "call_ended")
    assert ended.token == tokens[told] and ended.payload["status"] == "ended"


def test_retried_transitions_and_invites_push_once(as_user, apns):
    phone("bob", platform="ios", voipToken=VOIP_TOKEN)
    key = {"Idempotency-Key": "retry-me"}
    first = as_user("alice").post("/api/call/invite", INVITE, key).json()
    as_user("alice").post("/api/call/invite", INVITE, key)
    for _ in range(3):
        as_user("alice").post("/api/call/cancel", {"call_id": first["callId"]})
    assert [r.payload["type"] for r in apns.requests] == ["incoming_call", "call_cancelled"]


# --- dead tokens -----------------------------------------------------------------


@pytest.mark.parametrize("breakage, error", [("unregistered", "unregistered"),
                                             ("bad_tokens", "bad_device_token")])
def test_apns_dead_tokens_are_removed(as_user, apns, breakage, error):
    phone("bob", platform="ios", voipToken=VOIP_TOKEN, fcmToken="keep-me")
    getattr(apns, breakage).add(VOIP_TOKEN)
    call = invite(as_user)
    assert (call["pushSent"], call["pushError"]) == (False, error)
    assert "voipToken" not in user("bob") and user("bob")["fcmToken"] == "keep-me"


def test_fcm_unregistered_tokens_are_removed(as_user, fcm):
    phone("bob", platform="android", fcmToken=FCM_TOKEN)
    fcm.unregistered.add(FCM_TOKEN)
    call = invite(as_user)
    assert (call["pushSent"], call["pushError"]) == (False, "unregistered")
    assert "fcmToken" not in user("bob")


def test_fcm_invalid_argument_keeps_the_token(as_user, fcm):
    phone("bob", platform="android", fcmToken=FCM_TOKEN)
    fcm.invalid.add(FCM_TOKEN)
    assert invite(as_user)["pushError"] == "invalid_argument"
    assert user("bob")["fcmToken"] == FCM_TOKEN


def test_a_token_the_app_replaced_meanwhile_is_kept():
    phone("bob", platform="ios", voipToken="new-token")
    push_services.token_forget(uid="bob", field="voipToken", token="old-token")
    assert user("bob")["voipToken"] == "new-token"


# --- providers that fail -----------------------------------------------------------


def test_apns_500_is_retried_once(as_user, apns):
    phone("bob", platform="ios", voipToken=VOIP_TOKEN)
    apns.fail_with[VOIP_TOKEN] = [500]
    assert invite(as_user)["pushSent"] is True
    assert [r.status for r in apns.requests] == [500, 200]


def test_apns_answering_500_twice_leaves_the_call_standing(as_user, apns):
    phone("bob", platform="ios", voipToken=VOIP_TOKEN)
    apns.fail_with[VOIP_TOKEN] = [500, 500]
    call = invite(as_user)
    assert (call["pushSent"], call["pushError"]) == (False, "internal_server_error")
    assert stored(call["callId"])["status"] == "pending"


def test_fcm_unavailable_is_retried_once_honouring_retry_after(as_user, fcm):
    phone("bob", platform="android", fcmToken=FCM_TOKEN)
    fcm.fail_with[FCM_TOKEN] = [(503, "UNAVAILABLE", 0)]
    assert invite(as_user)["pushSent"] is True
    assert [m.status for m in fcm.sent_to(FCM_TOKEN)] == [503, 200]


def test_a_slow_apns_times_out_and_the_call_is_still_created(as_user, apns, settings):
    settings.PUSH_TIMEOUT_SECONDS = 0.5
    push_services.apns_client.cache_clear()
    phone("bob", platform="ios", voipToken=VOIP_TOKEN)
    apns.delay[VOIP_TOKEN] = 3
    call = invite(as_user)
    assert (call["pushSent"], call["pushError"]) == (False, "timeout")
    assert stored(call["callId"])["status"] == "pending"


@pytest.mark.parametrize("platform, setting", [("ios", "APNS_BASE_URL"),
                                               ("android", "FCM_BASE_URL")])
def test_a_provider_that_is_down_does_not_fail_the_invite(as_user, settings, platform, setting):
    from devstack.emulators import free_port

    setattr(settings, setting, f"https://127.0.0.1:{free_port()}")
    phone("bob", platform=platform, voipToken=VOIP_TOKEN, fcmToken=FCM_TOKEN)
    call = invite(as_user)
    assert (call["pushSent"], call["pushError"]) == (False, "connection_error")


def test_an_unconfigured_provider_is_named_in_push_error(as_user, settings):
    settings.APNS_KEY_CONTENT = ""
    phone("bob", platform="ios", voipToken=VOIP_TOKEN)
    assert invite(as_user)["pushError"] == "apns_not_configured"


def test_unconfigured_providers_are_reported_once_at_start_up(tmp_path):
    import os

    env = {k: v for k, v in os.environ.items() if not k.startswith(("APNS_", "FCM_"))}
    env.update(DJANGO_SETTINGS_MODULE="config.settings", LOG_DIR=str(tmp_path))
    out = subprocess.run([sys.executable, "manage.py", "check"], env=env, capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.count('"event": "apns_not_configured"') == 1
    assert out.stdout.count('"event": "fcm_not_configured"') == 1


# --- one connection, one provider token -----------------------------------------------


def test_expired_provider_token_is_renewed_once(as_user, apns):
    phone("bob", platform="ios", voipToken=VOIP_TOKEN)
    apns.expire_next(1)
    assert invite(as_user)["pushSent"] is True
    assert [r.status for r in apns.requests] == [403, 200]
    assert apns.requests[0].reason == "ExpiredProviderToken"
    assert len({r.jwt for r in apns.requests}) == 2


def test_100_invites_use_one_apns_connection_and_one_provider_token(as_user, apns):
    for i in range(100):
        phone(f"elder{i}", platform="ios", voipToken=f"{i:064x}")
    for i in range(100):
        body = invite(as_user, caller_id=f"carer{i}", receiver_id=f"elder{i}")
        assert body["pushSent"] is True
    elders = {f"{i:064x}" for i in range(100)}
    assert len([r for r in apns.requests if r.token in elders]) == 100
    assert apns.connections == 1
    assert len(apns.jwts) == 1


def test_the_provider_token_is_renewed_after_40_minutes_and_not_sooner(apns):
    from push.apns import ApnsClient

    now = [time.time()]
    apns.clock = lambda: now[0]
    client = ApnsClient(team_id=settings.APNS_TEAM_ID, key_id=settings.APNS_KEY_ID,
                        bundle_id=settings.APNS_BUNDLE_ID,
                        private_key_pem=settings.APNS_KEY_CONTENT.replace("\\n", "\n"),
                        base_url=apns.base_url, ca_file=apns.ca_file, clock=lambda: now[0])
    try:
        def push():
            return client.send_voip(device_token=VOIP_TOKEN, payload={"type": "incoming_call"},
                                    expiration=int(now[0]) + 60)

        assert push().ok
        now[0] += 39 * 60
        assert push().ok and client.jwts_minted == 1
        now[0] += 2 * 60
        assert push().ok and client.jwts_minted == 2
        assert [r.status for r in apns.requests] == [200, 200, 200]
        assert len(apns.jwts) == 2 and apns.connections == 1
    finally:
        apns.clock = time.time


def test_a_slow_device_does_not_hold_up_pushes_to_other_phones(apns):
    """One HTTP/2 connection carries every push of the process: a stream Apple answers
    late must not delay the answers to the other streams."""
    import threading

    client = push_services.apns_client()
    slow, fast = "aa" * 32, "bb" * 32
    deadline = time.monotonic() + 10
    held_before = apns.waiting  # an earlier test's abandoned stream may still count
    apns.delay[slow] = 2  # answered before the client gives up (PUSH_TIMEOUT_SECONDS=3)
    slow_result = {}
    slow_thread = threading.Thread(target=lambda: slow_result.update(r=client.send_voip(
        device_token=slow, payload={"type": "incoming_call"}, expiration=0)))
    slow_thread.start()
    while apns.waiting == held_before and time.monotonic() < deadline:
        time.sleep(0.01)
    assert apns.waiting == held_before + 1  # the slow push is on the wire, not yet answered
    assert client.send_voip(device_token=fast, payload={"type": "incoming_call"},
                            expiration=0).ok
    # ...and still unanswered when the fast one came back:
    assert not [r for r in apns.requests if r.token == slow]
    slow_thread.join(timeout=30)
    assert apns.connections == 1
