"""firestore.rules, enforced by the emulator for requests that carry a user's ID token
(the emulator accepts unsigned tokens; the server's own requests are privileged)."""

from __future__ import annotations

import base64
import json
import time
import urllib.error
import urllib.request

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


def _as(uid: str | None, method: str, path: str, fields: dict | None = None) -> int:
    url = (f"http://{settings.FIRESTORE_EMULATOR_HOST}/v1/projects/"
           f"{settings.FIREBASE_PROJECT_ID}/databases/(default)/documents/{path}")
    headers = {"Content-Type": "application/json"}
    if uid:
        headers["Authorization"] = f"Bearer {_unsigned_id_token(uid)}"
    body = None
    if fields is not None:
        body = json.dumps({"fields": {k: {"stringValue": v} for k, v in fields.items()}}).encode()
    request = urllib.request.Request(url, data=body, method=method, headers=headers)
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
