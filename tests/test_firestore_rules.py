"""firestore.rules, enforced by the emulator for requests that carry a user's ID token
(the emulator accepts unsigned tokens; the server's own requests are privileged)."""

from __future__ import annotations

import base64
import json
import time
import urllib.error
import urllib.request
from datetime import UTC, datetime

import pytest
from django.conf import settings

from integrations.firebase import firestore_client


def _unsigned_id_token(uid: str) -> str:
    def b64(obj) -> str:
        return base64.urlsafe_b64encode(json.dumps(obj).encode()).rstrip(b"=").decode()

    now = int(time.time())
    project = settings.FIREBASE_PROJECT_ID
    claims = {"iss": f"https://securetoken.google.com/{project}", "aud": project, "iat": now,
              "exp": now + 3600, "auth_time": now, "sub": uid, "user_id": uid,
              "firebase": {"sign_in_provider": "custom", "identities": {}}}
    return f"{b64({'alg': 'none', 'typ': 'JWT'})}.{b64(claims)}."


def _documents() -> str:
    return f"projects/{settings.FIREBASE_PROJECT_ID}/databases/(default)/documents"


def _as(uid: str | None, method: str, path: str, fields: dict | None = None) -> int:
    url = f"http://{settings.FIRESTORE_EMULATOR_HOST}/v1/{_documents()}/{path}"
    body = None
    if fields is not None:
        body = {"fields": {k: {"stringValue": v} for k, v in fields.items()}}
    return _request(uid, method, url, body)


def _value(value) -> dict:
    if isinstance(value, bool):
        return {"booleanValue": value}
    if isinstance(value, int):
        return {"integerValue": str(value)}
    if isinstance(value, datetime):
        return {"timestampValue": value.isoformat().replace("+00:00", "Z")}
    return {"stringValue": value}


def _device_write(uid: str | None, path: str, fields: dict, *, stamped: bool = True) -> int:
    """Write a device as the app does: its fields, `updatedAt` set to the request time."""
    url = f"http://{settings.FIRESTORE_EMULATOR_HOST}/v1/{_documents()}:commit"
    write = {"update": {"name": f"{_documents()}/{path}",
                        "fields": {k: _value(v) for k, v in fields.items()}}}
    if stamped:
        write["updateTransforms"] = [{"fieldPath": "updatedAt",
                                      "setToServerValue": "REQUEST_TIME"}]
    return _request(uid, "POST", url, {"writes": [write]})


def _request(uid: str | None, method: str, url: str, body: dict | None) -> int:
    headers = {"Content-Type": "application/json"}
    if uid:
        headers["Authorization"] = f"Bearer {_unsigned_id_token(uid)}"
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, method=method, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status
    except urllib.error.HTTPError as exc:
        return exc.code


@pytest.fixture
def a_call():
    firestore_client().collection("calls").document("c1").set(
        {"callId": "c1", "callerId": "alice", "receiverId": "bob", "status": "pending"})
    firestore_client().collection("recordings").document("r1").set({"callId": "c1"})


def test_participants_read_their_call_and_nobody_else_does(a_call):
    assert _as("alice", "GET", "calls/c1") == 200
    assert _as("bob", "GET", "calls/c1") == 200
    assert _as("mallory", "GET", "calls/c1") == 403
    assert _as(None, "GET", "calls/c1") == 403


def test_no_app_writes_calls_or_reads_recordings(a_call):
    assert _as("alice", "PATCH", "calls/c1", {"status": "accepted"}) == 403
    assert _as("alice", "PATCH", "calls/c2", {"status": "pending"}) == 403
    assert _as("alice", "GET", "recordings/r1") == 403
    assert _as("alice", "GET", "lines/alice") == 403


def test_apps_write_only_their_own_user_document():
    assert _as("alice", "PATCH", "users/alice", {"voipToken": "t", "platform": "ios"}) == 200
    assert _as("alice", "GET", "users/alice") == 200
    assert _as("alice", "PATCH", "users/bob", {"voipToken": "stolen"}) == 403
    assert _as("alice", "GET", "users/bob") == 403


IPHONE = {"platform": "ios", "voipToken": "ab" * 32, "apnsToken": "cd" * 32,
          "apnsEnvironment": "sandbox", "appVersion": "2.0.0"}


def test_apps_register_their_own_devices_only():
    assert _device_write("alice", "users/alice/devices/iphone", IPHONE) == 200
    assert _device_write("alice", "users/alice/devices/pixel",
                         {"platform": "android", "fcmToken": "f" * 152}) == 200
    assert _as("alice", "GET", "users/alice/devices/iphone") == 200
    assert _device_write("mallory", "users/alice/devices/iphone", IPHONE) == 403
    assert _as("mallory", "GET", "users/alice/devices/iphone") == 403
    assert _as("mallory", "DELETE", "users/alice/devices/iphone") == 403
    assert _device_write(None, "users/alice/devices/iphone", IPHONE) == 403
    assert _as("alice", "DELETE", "users/alice/devices/pixel") == 200
    stored = firestore_client().document("users/alice/devices/iphone").get().to_dict()
    assert stored["voipToken"] == IPHONE["voipToken"] and "updatedAt" in stored


@pytest.mark.parametrize("change", [
    {"platform": "windows"},
    {"voipToken": 42},
    {"apnsToken": "a" * 4097},
    {"fcmToken": "a" * 4097},
    {"apnsEnvironment": "staging"},
    {"appVersion": "x" * 65},
    {"isAdmin": True},
], ids=lambda change: next(iter(change)))
def test_device_fields_are_validated(change):
    assert _device_write("alice", "users/alice/devices/ipad", {**IPHONE, **change}) == 403


def test_a_token_of_4_kb_is_accepted_and_updated_at_must_be_the_request_time():
    assert _device_write("alice", "users/alice/devices/ipad",
                         {**IPHONE, "apnsToken": "a" * 4096}) == 200
    stale = datetime(2020, 1, 1, tzinfo=UTC)
    assert _device_write("alice", "users/alice/devices/ipad",
                         {**IPHONE, "updatedAt": stale}, stamped=False) == 403
    assert _device_write("alice", "users/alice/devices/ipad", IPHONE, stamped=False) == 403
    without_platform = {k: v for k, v in IPHONE.items() if k != "platform"}
    assert _device_write("alice", "users/alice/devices/ipad", without_platform) == 403


def test_no_app_writes_the_legacy_device_id():
    assert _device_write("alice", "users/alice/devices/legacy", IPHONE) == 403
def test_a_jobs_participants_read_it_and_nobody_writes_it():
    firestore_client().collection("analysisJobs").document("j1").set(
        {"jobId": "j1", "participants": ["alice", "bob"], "status": "queued"})
    assert _as("alice", "GET", "analysisJobs/j1") == 200
    assert _as("bob", "GET", "analysisJobs/j1") == 200
    assert _as("mallory", "GET", "analysisJobs/j1") == 403
    assert _as(None, "GET", "analysisJobs/j1") == 403
    assert _as("alice", "PATCH", "analysisJobs/j1", {"status": "completed"}) == 403
    assert _as("alice", "PATCH", "analysisJobs/j2", {"status": "queued"}) == 403
    assert _as("alice", "GET", "analysisJobs/j1/deliveries/m1") == 403
