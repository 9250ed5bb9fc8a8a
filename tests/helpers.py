"""Helpers the test modules share: the call every story starts with, reading what the
server stored, the error shape, and plain HTTP against a server a test started."""

from __future__ import annotations

import hashlib
import json
import urllib.error
import urllib.request
from datetime import timedelta
from pathlib import Path

from devstack.emulators import free_port
from integrations.firebase import firestore_client

INVITE = {"group_id": "group1", "caller_id": "alice", "receiver_id": "bob",
          "caller_name": "Alice Kim", "group_name_snapshot": "Boston Care Group",
          "receiver_name_snapshot": "김영옥"}


def invite(as_user, **overrides) -> dict:
    """Alice calls Bob (or whoever `overrides` say) through the API; the invite's answer."""
    body = {**INVITE, **overrides}
    response = as_user(body["caller_id"]).post("/api/call/invite", body)
    assert response.status_code == 200, response.content
    return response.json()


def stored(call_id: str) -> dict:
    """The call document as Firestore holds it."""
    return firestore_client().collection("calls").document(call_id).get().to_dict()


def age(call_id: str, seconds: int, *fields: str) -> None:
    """Move the call's timestamps `seconds` into the past, as if time had passed."""
    doc = stored(call_id)
    db = firestore_client()
    db.collection("calls").document(call_id).update(
        {f: doc[f] - timedelta(seconds=seconds) for f in ("createdAt", *fields)})
    db.collection("channels").document(doc["channelName"]).update(
        {"createdAt": doc["createdAt"] - timedelta(seconds=seconds)})


def error_of(response, status: int, code: str) -> dict:
    """The error object of a Django test-client answer, after checking status and code."""
    assert response.status_code == status, response.content
    error = response.json()["error"]
    assert error["code"] == code
    return error


def http_json(method: str, url: str, body: dict | bytes | None = None,
              headers: dict | None = None, timeout: float = 30) -> tuple[int, dict]:
    """(status, JSON body) of one request to a real server; a dict body is sent as JSON."""
    data = json.dumps(body).encode() if isinstance(body, dict) else body
    request = urllib.request.Request(url, data=data, method=method, headers={
        "Content-Type": "application/json", **(headers or {})})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, json.loads(response.read() or b"null")
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"null")


def sha256_of(data: bytes | Path) -> str:
    """Hex sha256 of bytes or of a file's content."""
    return hashlib.sha256(data.read_bytes() if isinstance(data, Path) else data).hexdigest()


def storage_down() -> dict:
    """Environment for a server whose Storage host answers nobody (a free, closed port)."""
    dead = f"http://127.0.0.1:{free_port()}"
    return {"FIREBASE_STORAGE_EMULATOR_HOST": dead, "STORAGE_EMULATOR_HOST": dead,
            "STORAGE_UPLOAD_TIMEOUT_SECONDS": "2",
            "DISABLE_GCS_PYTHON_CLIENT_OTEL_BUCKET_METADATA": "true"}
