"""firestore.rules, enforced by the emulator for requests that carry a user's ID token
(the emulator accepts unsigned tokens; the server's own requests are privileged)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from django.conf import settings

from integrations.firebase import firestore_client
from tests.helpers import app_firestore, app_request, firestore_documents


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
    url = f"http://{settings.FIRESTORE_EMULATOR_HOST}/v1/{firestore_documents()}:commit"
    write = {"update": {"name": f"{firestore_documents()}/{path}",
                        "fields": {k: _value(v) for k, v in fields.items()}}}
    if stamped:
        write["updateTransforms"] = [{"fieldPath": "updatedAt",
                                      "setToServerValue": "REQUEST_TIME"}]
    return app_request(uid, "POST", url, {"writes": [write]})


@pytest.fixture
def a_call():
    firestore_client().collection("calls").document("c1").set(
        {"callId": "c1", "callerId": "alice", "receiverId": "bob", "status": "pending"})
    firestore_client().collection("recordings").document("r1").set({"callId": "c1"})


def test_participants_read_their_call_and_nobody_else_does(a_call):
    assert app_firestore("alice", "GET", "calls/c1") == 200
    assert app_firestore("bob", "GET", "calls/c1") == 200
    assert app_firestore("mallory", "GET", "calls/c1") == 403
    assert app_firestore(None, "GET", "calls/c1") == 403


def test_no_app_writes_calls_or_reads_recordings(a_call):
    assert app_firestore("alice", "PATCH", "calls/c1", {"status": "accepted"}) == 403
    assert app_firestore("alice", "PATCH", "calls/c2", {"status": "pending"}) == 403
    assert app_firestore("alice", "GET", "recordings/r1") == 403
    assert app_firestore("alice", "GET", "lines/alice") == 403


def test_apps_write_only_their_own_user_document():
    assert app_firestore("alice", "PATCH", "users/alice", {"voipToken": "t", "platform": "ios"}) == 200
    assert app_firestore("alice", "GET", "users/alice") == 200
    assert app_firestore("alice", "PATCH", "users/bob", {"voipToken": "stolen"}) == 403
    assert app_firestore("alice", "GET", "users/bob") == 403


IPHONE = {"platform": "ios", "voipToken": "ab" * 32, "apnsToken": "cd" * 32,
          "apnsEnvironment": "sandbox", "appVersion": "2.0.0"}


def test_apps_register_their_own_devices_only():
    assert _device_write("alice", "users/alice/devices/iphone", IPHONE) == 200
    assert _device_write("alice", "users/alice/devices/pixel",
                         {"platform": "android", "fcmToken": "f" * 152}) == 200
    assert app_firestore("alice", "GET", "users/alice/devices/iphone") == 200
    assert _device_write("mallory", "users/alice/devices/iphone", IPHONE) == 403
    assert app_firestore("mallory", "GET", "users/alice/devices/iphone") == 403
    assert app_firestore("mallory", "DELETE", "users/alice/devices/iphone") == 403
    assert _device_write(None, "users/alice/devices/iphone", IPHONE) == 403
    assert app_firestore("alice", "DELETE", "users/alice/devices/pixel") == 200
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
    assert app_firestore("alice", "GET", "analysisJobs/j1") == 200
    assert app_firestore("bob", "GET", "analysisJobs/j1") == 200
    assert app_firestore("mallory", "GET", "analysisJobs/j1") == 403
    assert app_firestore(None, "GET", "analysisJobs/j1") == 403
    assert app_firestore("alice", "PATCH", "analysisJobs/j1", {"status": "completed"}) == 403
    assert app_firestore("alice", "PATCH", "analysisJobs/j2", {"status": "queued"}) == 403
    assert app_firestore("alice", "GET", "analysisJobs/j1/deliveries/m1") == 403


def test_no_app_reads_or_writes_the_servers_own_collections():
    """Console sessions, sign-in failures, the access log, channels, recorder nodes."""
    server_only = ("consoleSessions/s1", "consoleSignInFailures/f1", "auditLog/a1",
                   "channels/ch1", "recorderNodes/n1", "recordingSessions/c1")
    for path in server_only:
        collection, doc_id = path.split("/")
        firestore_client().collection(collection).document(doc_id).set({"uid": "alice"})
    for path in server_only:
        assert app_firestore("alice", "GET", path) == 403, path
        assert app_firestore("alice", "PATCH", path, {"uid": "alice"}) == 403, path
