"""Ringing every device of the receiver and telling them to stop, through fakes that speak
APNs' HTTP/2 and FCM v1's wire protocols; dead tokens per device; providers that fail or are
slow. Every test also fails if the server sent a push Apple or iOS would punish (a VoIP push
that is not an incoming call, a background push at priority 10, ...: see conftest)."""

from __future__ import annotations

import subprocess
import sys
import time
from datetime import timedelta

import pytest
from django.conf import settings

from core.clock import utc_now
from integrations.firebase import firestore_client
from push import devices as push_devices
from push import services as push_services
from tests.conftest import APNS_BUNDLE, api_log_lines, post_json
from tests.helpers import INVITE, age, http_json, invite, stored

VOIP_TOKEN = "ab" * 32
APNS_TOKEN = "ac" * 32
FCM_TOKEN = "fcm-registration-token-of-bob"
IPHONE_VOIP, IPHONE_APNS = "a1" * 32, "a2" * 32
IPAD_VOIP, IPAD_APNS = "b1" * 32, "b2" * 32
ANDROID_FCM = "fcm-registration-token-of-bobs-android"


def phone(uid: str, **fields) -> None:
    """What an app of before devices writes to users/{uid} (the legacy device)."""
    firestore_client().collection("users").document(uid).set(fields)


def user(uid: str) -> dict:
    return firestore_client().collection("users").document(uid).get().to_dict()


def _device_ref(uid: str, device_id: str):
    return (firestore_client().collection("users").document(uid)
            .collection("devices").document(device_id))


def device(uid: str, device_id: str, *, age_seconds: float = 0, **fields) -> None:
    """What the app writes to users/{uid}/devices/{deviceId}."""
    _device_ref(uid, device_id).set(
        {"updatedAt": utc_now() - timedelta(seconds=age_seconds), **fields})


def device_doc(uid: str, device_id: str) -> dict | None:
    snap = _device_ref(uid, device_id).get()
    return snap.to_dict() if snap.exists else None


def bobs_three_devices() -> None:
    """An iPhone (updated last), an iPad and an Android phone."""
    device("bob", "iphone", platform="ios", voipToken=IPHONE_VOIP, apnsToken=IPHONE_APNS,
           appVersion="2.0.0")
    device("bob", "ipad", age_seconds=60, platform="ios", voipToken=IPAD_VOIP,
           apnsToken=IPAD_APNS, apnsEnvironment="production")
    device("bob", "android", age_seconds=120, platform="android", fcmToken=ANDROID_FCM)


def to(apns, token: str) -> list:
    return [r for r in apns.requests if r.token == token]


def fcm_types(fcm, token: str) -> list[tuple[str, str]]:
    return [(m.message["data"]["type"], m.message["android"]["priority"])
            for m in fcm.sent_to(token)]


def drain(apns) -> None:
    """Wait until the fake has answered every push it holds back, so a late answer is not
    recorded in the next test."""
    deadline = time.monotonic() + 30
    while apns.waiting and time.monotonic() < deadline:
        time.sleep(0.05)


def assert_background(push, push_type: str, status: str) -> None:
    """A regular background push on the app's own topic, never VoIP."""
    assert push.status == 200
    assert push.headers["apns-push-type"] == "background"
    assert push.headers["apns-topic"] == APNS_BUNDLE
    assert push.headers["apns-priority"] == "5"
    assert push.payload["aps"] == {"content-available": 1}
    assert push.payload["type"] == push_type and push.payload["status"] == status


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
    assert doc["pushDevices"] == {"legacy": {"platform": "ios", "sent": True, "error": None}}


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


def test_invite_rings_every_device_of_the_receiver(as_user, apns, fcm):
    bobs_three_devices()
    call = invite(as_user)
    assert (call["pushSent"], call["pushPlatform"], call["pushError"]) == (True, "ios", None)
    for token in (IPHONE_VOIP, IPAD_VOIP):
        [ring] = to(apns, token)
        assert ring.status == 200 and ring.headers["apns-push-type"] == "voip"
        assert ring.headers["apns-topic"] == f"{APNS_BUNDLE}.voip"
        assert ring.payload == seed_payload(call, "incoming_call", "pending")
    assert fcm_types(fcm, ANDROID_FCM) == [("incoming_call", "HIGH")]
    assert not to(apns, IPHONE_APNS) and not to(apns, IPAD_APNS)
    assert stored(call["callId"])["pushDevices"] == {
        "iphone": {"platform": "ios", "sent": True, "error": None},
        "ipad": {"platform": "ios", "sent": True, "error": None},
        "android": {"platform": "android", "sent": True, "error": None}}
    assert apns.connections == 1 and len(apns.jwts) == 1


def test_devices_ring_at_once_not_one_after_another(as_user, apns, fcm):
    """The iPhone (rung first) answers late; the iPad's answer comes back before it."""
    bobs_three_devices()
    apns.delay[IPHONE_VOIP] = 1  # answered well within PUSH_TIMEOUT_SECONDS
    call = invite(as_user)
    assert call["pushSent"] is True
    assert [r.token for r in apns.requests] == [IPAD_VOIP, IPHONE_VOIP]
    assert apns.connections == 1


def test_at_most_push_max_devices_ring_the_most_recently_updated_first(as_user, fcm,
                                                                       settings):
    settings.PUSH_MAX_DEVICES = 3
    for i in range(5):
        device("bob", f"tablet{i}", age_seconds=i * 10, platform="android",
               fcmToken=f"fcm-token-{i}")
    phone("bob", platform="android", fcmToken="legacy-token")
    call = invite(as_user)
    assert set(stored(call["callId"])["pushDevices"]) == {"tablet0", "tablet1", "tablet2"}
    assert {m.token for m in fcm.messages} == {"fcm-token-0", "fcm-token-1", "fcm-token-2"}


def test_legacy_fields_that_repeat_a_devices_token_ring_it_once(as_user, apns):
    phone("bob", platform="ios", voipToken=IPHONE_VOIP)
    device("bob", "iphone", platform="ios", voipToken=IPHONE_VOIP, apnsToken=IPHONE_APNS)
    call = invite(as_user)
    assert list(stored(call["callId"])["pushDevices"]) == ["iphone"]
    assert len(to(apns, IPHONE_VOIP)) == 1


def test_a_receiver_without_a_device_token_is_not_rung_but_the_call_stands(as_user, apns):
    phone("bob", platform="ios")
    call = invite(as_user)
    assert (call["pushSent"], call["pushError"]) == (False, "no_device_token")
    assert stored(call["callId"])["status"] == "pending" and not apns.requests


# --- stop ringing: regular APNs pushes, never VoIP ---------------------------------


def _pushes(apns, push_type: str) -> list:
    return [r for r in apns.requests if r.payload and r.payload["type"] == push_type]


@pytest.mark.parametrize("who, path, body, push_type, status", [
    ("alice", "/api/call/cancel", {}, "call_cancelled", "cancelled"),
    ("alice", "/api/call/end", {}, "call_cancelled", "cancelled"),
    ("bob", "/api/call/answer", {"action": "decline"}, "call_declined_elsewhere", "declined"),
    ("bob", "/api/call/end", {}, "call_declined_elsewhere", "declined"),
])
def test_the_receivers_iphone_stops_ringing_by_a_background_push(as_user, apns, who, path,
                                                                  body, push_type, status):
    phone("bob", platform="ios", voipToken=VOIP_TOKEN, apnsToken=APNS_TOKEN)
    call = invite(as_user)
    assert as_user(who).post(path, {"call_id": call["callId"], **body}).status_code == 200
    [stop] = _pushes(apns, push_type)
    assert stop.token == APNS_TOKEN and stop.payload["callId"] == call["callId"]
    assert_background(stop, push_type, status)
    assert stop.payload == {"aps": {"content-available": 1},
                            **seed_payload(call, push_type, status)}
    assert [r.token for r in to(apns, VOIP_TOKEN)] == [VOIP_TOKEN]  # the ring, nothing else


def test_accepting_on_the_iphone_tells_the_ipad_and_the_android_phone(as_user, apns, fcm):
    bobs_three_devices()
    call = invite(as_user)
    answer = as_user("bob").post("/api/call/answer", {"call_id": call["callId"],
                                                      "action": "accept",
                                                      "device_id": "iphone"})
    assert answer.status_code == 200 and answer.json()["status"] == "accepted"
    [elsewhere] = to(apns, IPAD_APNS)
    assert_background(elsewhere, "call_answered_elsewhere", "accepted")
    assert fcm_types(fcm, ANDROID_FCM) == [("incoming_call", "HIGH"),
                                           ("call_answered_elsewhere", "NORMAL")]
    assert not to(apns, IPHONE_APNS) and len(to(apns, IPHONE_VOIP)) == 1


@pytest.mark.parametrize("device_id, told", [("ipad", ["iphone", "android"]),
                                             (None, ["iphone", "ipad", "android"])])
def test_declining_tells_the_receivers_other_devices(as_user, apns, fcm, device_id, told):
    bobs_three_devices()
    call = invite(as_user)
    body = {"call_id": call["callId"], "action": "decline"}
    if device_id:
        body["device_id"] = device_id
    assert as_user("bob").post("/api/call/answer", body).status_code == 200
    reached = {name for name, token in (("iphone", IPHONE_APNS), ("ipad", IPAD_APNS))
               if to(apns, token)}
    if ("call_declined_elsewhere", "NORMAL") in fcm_types(fcm, ANDROID_FCM):
        reached.add("android")
    assert reached == set(told)
    for push in _pushes(apns, "call_declined_elsewhere"):
        assert_background(push, "call_declined_elsewhere", "declined")


def test_cancel_stops_all_three_devices_and_none_by_voip(as_user, apns, fcm):
    bobs_three_devices()
    call = invite(as_user)
    assert as_user("alice").post("/api/call/cancel", {"call_id": call["callId"]}).status_code \
        == 200
    for token in (IPHONE_APNS, IPAD_APNS):
        [stop] = to(apns, token)
        assert_background(stop, "call_cancelled", "cancelled")
    assert fcm_types(fcm, ANDROID_FCM) == [("incoming_call", "HIGH"),
                                           ("call_cancelled", "NORMAL")]
    voip = [r for r in apns.requests if r.headers["apns-push-type"] == "voip"]
    assert [r.payload["type"] for r in voip] == ["incoming_call", "incoming_call"]


def test_a_ring_timeout_shows_a_missed_call_alert_on_ios(as_user, apns, fcm, client):
    bobs_three_devices()
    call = invite(as_user)
    age(call["callId"], settings.CALL_RING_TIMEOUT_SECONDS + 1)
    ops = {"X-Ops-Key": settings.OPS_API_KEY}
    assert post_json(client, "/api/call/timeout/sweep", {}, ops).json()["updatedCount"] == 1
    for token in (IPHONE_APNS, IPAD_APNS):
        [alert] = to(apns, token)
        assert alert.status == 200
        assert alert.headers["apns-push-type"] == "alert"
        assert alert.headers["apns-topic"] == APNS_BUNDLE
        assert alert.headers["apns-priority"] == "10"
        assert alert.headers["apns-collapse-id"] == call["callId"]
        assert alert.payload == {
            "aps": {"alert": {"title": "Missed call", "body": "Alice Kim"},
                    "sound": "default", "thread-id": "alice"},
            **seed_payload(call, "call_missed", "missed")}
    assert fcm_types(fcm, ANDROID_FCM)[-1] == ("call_missed", "NORMAL")


def test_the_client_reporting_missed_shows_the_alert_too(as_user, apns):
    phone("bob", platform="ios", voipToken=VOIP_TOKEN, apnsToken=APNS_TOKEN)
    call = invite(as_user)
    as_user("alice").post("/api/call/missed", {"call_id": call["callId"]})
    [alert] = _pushes(apns, "call_missed")
    assert alert.token == APNS_TOKEN and alert.headers["apns-push-type"] == "alert"


def test_a_device_with_only_a_voip_token_gets_nothing_after_the_ring(as_user, apns):
    device("bob", "old-iphone", platform="ios", voipToken=IPHONE_VOIP)
    device("bob", "ipad", age_seconds=60, platform="ios", voipToken=IPAD_VOIP,
           apnsToken=IPAD_APNS)
    call = invite(as_user)
    as_user("alice").post("/api/call/cancel", {"call_id": call["callId"]})
    assert [r.payload["type"] for r in to(apns, IPHONE_VOIP)] == ["incoming_call"]
    assert [r.payload["type"] for r in to(apns, IPAD_APNS)] == ["call_cancelled"]
    skipped = [line for line in api_log_lines() if line.get("event") == "push"
               and line.get("call_id") == call["callId"] and line.get("error") == "no_apns_token"]
    assert [line["device_id"] for line in skipped] == ["old-iphone"]
    # what the cancel push reported for each device
    outcome = push_services.call_push(call=stored(call["callId"]), event="call_cancelled",
                                      ttl_seconds=60)
    assert outcome.devices["old-iphone"] == {"platform": "ios", "sent": False,
                                             "error": "no_apns_token"}
    assert outcome.devices["ipad"]["sent"] is True and outcome.sent is True


def test_a_timeout_found_by_the_sweep_stops_the_ringing_once(as_user, apns, client):
    phone("bob", platform="ios", voipToken=VOIP_TOKEN, apnsToken=APNS_TOKEN)
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
    assert fcm_types(fcm, FCM_TOKEN) == [("incoming_call", "HIGH"), ("call_missed", "NORMAL")]


@pytest.mark.parametrize("ender, told", [("alice", "bob"), ("bob", "alice")])
def test_hanging_up_tells_the_other_party_by_a_background_push(as_user, apns, ender, told):
    tokens = {"alice": "cd" * 32, "bob": APNS_TOKEN}
    for uid, token in tokens.items():
        phone(uid, platform="ios", voipToken="ef" * 32 if uid == "alice" else VOIP_TOKEN,
              apnsToken=token)
    call = invite(as_user)
    as_user("bob").post("/api/call/answer", {"call_id": call["callId"], "action": "accept"})
    as_user(ender).post("/api/call/end", {"call_id": call["callId"]})
    [ended] = _pushes(apns, "call_ended")
    assert ended.token == tokens[told]
    assert_background(ended, "call_ended", "ended")


def test_retried_transitions_and_invites_push_once(as_user, apns):
    phone("bob", platform="ios", voipToken=VOIP_TOKEN, apnsToken=APNS_TOKEN)
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
    push_devices.token_forget(uid="bob", field="voipToken", token="old-token")
    assert user("bob")["voipToken"] == "new-token"
    device("bob", "iphone", platform="ios", voipToken="new-token")
    push_devices.device_token_forget(uid="bob", device_id="iphone", field="voipToken",
                                     token="old-token")
    assert device_doc("bob", "iphone")["voipToken"] == "new-token"


def test_a_dead_token_on_one_device_leaves_the_other_devices(as_user, apns, fcm):
    bobs_three_devices()
    apns.unregistered.add(IPAD_VOIP)  # Apple's timestamp: now, after the iPad's update
    call = invite(as_user)
    assert (call["pushSent"], call["pushPlatform"]) == (True, "ios")
    devices = stored(call["callId"])["pushDevices"]
    assert devices["ipad"] == {"platform": "ios", "sent": False, "error": "unregistered"}
    assert devices["iphone"]["sent"] and devices["android"]["sent"]
    ipad = device_doc("bob", "ipad")
    assert "voipToken" not in ipad and ipad["apnsToken"] == IPAD_APNS
    assert device_doc("bob", "iphone")["voipToken"] == IPHONE_VOIP
    assert device_doc("bob", "android")["fcmToken"] == ANDROID_FCM


def test_apns_410_older_than_the_devices_update_keeps_the_token(as_user, apns):
    """The app registered again after Apple saw the token die: the token is new."""
    device("bob", "iphone", platform="ios", voipToken=IPHONE_VOIP, apnsToken=IPHONE_APNS)
    apns.unregistered.add(IPHONE_VOIP)
    apns.clock = lambda: time.time() - 600  # Apple's timestamp: ten minutes ago
    try:
        call = invite(as_user)
    finally:
        apns.clock = time.time
    assert [r.status for r in to(apns, IPHONE_VOIP)] == [410]
    assert (call["pushSent"], call["pushError"]) == (False, "unregistered")
    assert device_doc("bob", "iphone")["voipToken"] == IPHONE_VOIP


def test_a_device_left_without_a_token_is_deleted(as_user, apns, fcm):
    device("bob", "iphone", platform="ios", voipToken=IPHONE_VOIP)
    device("bob", "android", age_seconds=60, platform="android", fcmToken=ANDROID_FCM)
    apns.bad_tokens.add(IPHONE_VOIP)  # 400 BadDeviceToken carries no timestamp
    fcm.unregistered.add(ANDROID_FCM)
    call = invite(as_user)
    assert (call["pushSent"], call["pushPlatform"], call["pushError"]) == \
        (False, None, "bad_device_token")
    assert device_doc("bob", "iphone") is None and device_doc("bob", "android") is None


def test_a_dead_regular_apns_token_is_removed_from_its_device(as_user, apns):
    bobs_three_devices()
    apns.bad_tokens.add(IPAD_APNS)
    call = invite(as_user)
    as_user("alice").post("/api/call/cancel", {"call_id": call["callId"]})
    ipad = device_doc("bob", "ipad")
    assert "apnsToken" not in ipad and ipad["voipToken"] == IPAD_VOIP
    assert device_doc("bob", "iphone")["apnsToken"] == IPHONE_APNS


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


@pytest.mark.parametrize("answers, seen, sent, error", [
    ([429], [429, 200], True, None),
    ([429, 429, 429], [429, 429], False, "too_many_requests")])
def test_apns_429_is_retried_once(as_user, apns, answers, seen, sent, error):
    phone("bob", platform="ios", voipToken=VOIP_TOKEN)
    apns.fail_with[VOIP_TOKEN] = list(answers)
    call = invite(as_user)
    assert (call["pushSent"], call["pushError"]) == (sent, error)
    assert [r.status for r in to(apns, VOIP_TOKEN)] == seen  # one retry, not more
    assert stored(call["callId"])["status"] == "pending"


def test_fcm_unavailable_is_retried_once(as_user, fcm):
    phone("bob", platform="android", fcmToken=FCM_TOKEN)
    fcm.fail_with[FCM_TOKEN] = [(503, "UNAVAILABLE", 0)]
    assert invite(as_user)["pushSent"] is True
    assert [m.status for m in fcm.sent_to(FCM_TOKEN)] == [503, 200]


@pytest.mark.parametrize("retry_after, waited", [(0, 0.0), (1, 1.0), (30, 1.0), (None, 0.3)])
def test_fcm_waits_what_retry_after_says_capped_at_a_second(fcm, retry_after, waited):
    from push.fcm import FcmClient

    waits: list[float] = []
    client = FcmClient(project_id=fcm.project_id, service_account_info=fcm.service_account_info(),
                       base_url=fcm.base_url, sleep=waits.append)
    fcm.fail_with[FCM_TOKEN] = [(503, "UNAVAILABLE", retry_after)]
    assert client.send_data(token=FCM_TOKEN, data={"type": "incoming_call"}, ttl_seconds=60).ok
    assert waits == [waited]
    assert [m.status for m in fcm.sent_to(FCM_TOKEN)] == [503, 200]
    [answer, _] = fcm.sent_to(FCM_TOKEN)
    assert answer.note.startswith("fail_with")


def test_a_slow_apns_times_out_and_the_call_is_still_created(as_user, apns, settings):
    settings.PUSH_TIMEOUT_SECONDS = 0.5
    push_services.apns_client.cache_clear()
    phone("bob", platform="ios", voipToken=VOIP_TOKEN)
    apns.delay[VOIP_TOKEN] = 3
    call = invite(as_user)
    assert (call["pushSent"], call["pushError"]) == (False, "timeout")
    assert stored(call["callId"])["status"] == "pending"
    drain(apns)


def test_a_device_that_times_out_or_cannot_ring_leaves_the_others_rung(as_user, apns, fcm,
                                                                       settings):
    settings.PUSH_TIMEOUT_SECONDS = 0.5
    push_services.apns_client.cache_clear()
    device("bob", "iphone", platform="ios", voipToken=IPHONE_VOIP, apnsToken=IPHONE_APNS)
    device("bob", "ipad", age_seconds=60, platform="ios", apnsToken=IPAD_APNS)  # no PushKit
    device("bob", "android", age_seconds=120, platform="android", fcmToken=ANDROID_FCM)
    apns.delay[IPHONE_VOIP] = 3
    call = invite(as_user)
    assert (call["pushSent"], call["pushPlatform"], call["pushError"]) == (True, "android", None)
    assert stored(call["callId"])["pushDevices"] == {
        "iphone": {"platform": "ios", "sent": False, "error": "timeout"},
        "ipad": {"platform": "ios", "sent": False, "error": "no_voip_token"},
        "android": {"platform": "android", "sent": True, "error": None}}
    assert not to(apns, IPAD_APNS)  # an incoming call is never a regular push
    drain(apns)


@pytest.mark.parametrize("platform, setting", [("ios", "APNS_BASE_URL"),
                                               ("android", "FCM_BASE_URL")])
def test_a_provider_that_is_down_does_not_fail_the_invite(as_user, settings, platform, setting):
    from devstack.emulators import free_port

    setattr(settings, setting, f"https://127.0.0.1:{free_port()}")
    phone("bob", platform=platform, voipToken=VOIP_TOKEN, fcmToken=FCM_TOKEN)
    call = invite(as_user)
    assert (call["pushSent"], call["pushError"]) == (False, "connection_error")


def test_a_receiver_whose_devices_cannot_be_read_is_not_rung_but_the_call_stands(
        start_server, emulators, securetoken, apns):
    import grpc

    from tests.fakes.firestore_proxy import FirestoreProxy

    phone("bob", platform="ios", voipToken=VOIP_TOKEN)
    proxy = FirestoreProxy(emulators.firestore_host).start()
    # Firestore refuses the read of Bob's devices; everything else works.
    proxy.refuse = lambda method, request: (
        (grpc.StatusCode.PERMISSION_DENIED, "Missing or insufficient permissions.")
        if method == "RunQuery" and request.parent.endswith("/users/bob") else None)
    try:
        base = start_server(FIRESTORE_EMULATOR_HOST=proxy.host)
        status, call = http_json("POST", f"{base}/api/call/invite", INVITE, headers={
            "Authorization": f"Bearer {securetoken.mint('alice')}"})
        assert status == 200, call
        assert (call["pushSent"], call["pushError"]) == (False, "user_lookup_failed")
        assert [method for method, _ in proxy.refused] == ["RunQuery"]
        assert stored(call["callId"])["status"] == "pending"
        assert apns.requests == []
    finally:
        proxy.stop()


def test_an_unconfigured_provider_is_named_in_push_error(as_user, settings):
    settings.APNS_KEY_CONTENT = ""
    phone("bob", platform="ios", voipToken=VOIP_TOKEN)
    assert invite(as_user)["pushError"] == "apns_not_configured"


def _key_file(path, pem: str):
    path.write_text(pem)
    push_services.apns_client.cache_clear()  # the client reads its key when it is built
    return str(path)


def test_the_apns_key_is_read_from_apns_key_path(as_user, apns, settings, tmp_path):
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    trusted = settings.APNS_KEY_CONTENT.replace("\\n", "\n")  # the key the fake trusts
    settings.APNS_KEY_CONTENT = ""
    settings.APNS_KEY_PATH = _key_file(tmp_path / "AuthKey.p8", trusted)
    phone("bob", platform="ios", voipToken=VOIP_TOKEN)
    first = invite(as_user)
    assert (first["pushSent"], first["pushPlatform"]) == (True, "ios")
    # Another throwaway key in the file: Apple refuses what it signs, so the file signs.
    other = ec.generate_private_key(ec.SECP256R1()).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption()).decode()
    settings.APNS_KEY_PATH = _key_file(tmp_path / "Other.p8", other)
    as_user("alice").post("/api/call/cancel", {"call_id": first["callId"]})
    second = invite(as_user)
    assert (second["pushSent"], second["pushError"]) == (False, "invalid_provider_token")


def test_the_fcm_service_account_is_read_from_fcm_service_account_path(as_user, fcm, settings,
                                                                       tmp_path):
    import json

    account = tmp_path / "service-account.json"
    account.write_text(json.dumps(fcm.service_account_info()))
    settings.FCM_SERVICE_ACCOUNT_JSON = ""
    settings.FCM_SERVICE_ACCOUNT_PATH = str(account)
    push_services.fcm_client.cache_clear()
    phone("bob", platform="android", fcmToken=FCM_TOKEN)
    call = invite(as_user)
    assert (call["pushSent"], call["pushPlatform"]) == (True, "android")
    [message] = fcm.sent_to(FCM_TOKEN)
    assert message.status == 200 and message.message["data"]["callId"] == call["callId"]
    push_services.fcm_client.cache_clear()


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


def test_each_device_goes_to_the_apns_host_of_its_environment(settings):
    from push.apns import PRODUCTION_URL, SANDBOX_URL

    settings.APNS_BASE_URL = ""
    settings.APNS_USE_SANDBOX = False
    assert push_services.apns_base_url("sandbox") == SANDBOX_URL
    assert push_services.apns_base_url("production") == PRODUCTION_URL
    assert push_services.apns_base_url(None) == PRODUCTION_URL
    settings.APNS_USE_SANDBOX = True
    assert push_services.apns_base_url(None) == SANDBOX_URL
    assert push_services.apns_base_url("production") == PRODUCTION_URL


def test_the_apns_connection_survives_a_quiet_spell(apns):
    """httpx closes idle connections after 5 s unless told otherwise; a ring after a quiet
    minute must not wait for a new TLS handshake."""
    client = push_services.apns_client()
    assert client.send_voip(device_token=VOIP_TOKEN, payload={"type": "incoming_call"},
                            expiration=0).ok
    time.sleep(6)  # longer than httpx's default keep-alive expiry (not a timing assertion)
    assert client.send_voip(device_token=VOIP_TOKEN, payload={"type": "incoming_call"},
                            expiration=0).ok
    assert apns.connections == 1
