"""Helpers the test modules share: the call every story starts with, reading what the
server stored, the error shape, and plain HTTP against a server a test started."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import secrets
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path

from django.conf import settings

from core.clock import utc_now
from devstack.emulators import free_port
from integrations.firebase import firestore_client, storage_bucket

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


@contextmanager
def storage_hanging() -> Iterator[dict]:
    """Environment for a server whose Storage host takes connections and never answers:
    a loopback listener that never accepts (the kernel completes the handshakes, nobody
    reads). Closed when the block ends, which resets what is still connected."""
    with socket.create_server(("127.0.0.1", 0), backlog=64) as listener:
        url = f"http://127.0.0.1:{listener.getsockname()[1]}"
        yield {"FIREBASE_STORAGE_EMULATOR_HOST": url, "STORAGE_EMULATOR_HOST": url,
               "DISABLE_GCS_PYTHON_CLIENT_OTEL_BUCKET_METADATA": "true"}


def upload(client, headers: dict, call_id: str, path: Path, **fields):
    """An app's upload of `path` for `call_id` through the Django test client."""
    with path.open("rb") as file:
        return client.post("/api/recordings/upload",
                           data={"recording": file, "call_id": call_id, **fields},
                           headers=headers)


def objects() -> dict[str, int]:
    """Every object in the bucket with its size."""
    return {blob.name: blob.size for blob in storage_bucket().list_blobs()}


def leftovers() -> list[str]:
    """Files left in the uploads directory (kept originals, half-received bodies)."""
    root = settings.RECORDING_UPLOADS_DIR
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()) \
        if root.exists() else []


def document(recording_id: str) -> dict:
    """The recording document as Firestore holds it."""
    return firestore_client().collection("recordings").document(recording_id).get().to_dict()


def unsigned_id_token(uid: str) -> str:
    """An ID token for `uid` that the Firestore emulator accepts (it checks no signature)."""
    def b64(obj) -> str:
        return base64.urlsafe_b64encode(json.dumps(obj).encode()).rstrip(b"=").decode()

    now = int(time.time())
    project = settings.FIREBASE_PROJECT_ID
    claims = {"iss": f"https://securetoken.google.com/{project}", "aud": project, "iat": now,
              "exp": now + 3600, "auth_time": now, "sub": uid, "user_id": uid,
              "firebase": {"sign_in_provider": "custom", "identities": {}}}
    return f"{b64({'alg': 'none', 'typ': 'JWT'})}.{b64(claims)}."


def firestore_documents() -> str:
    """The REST path of the emulator's default database."""
    return f"projects/{settings.FIREBASE_PROJECT_ID}/databases/(default)/documents"


def app_firestore(uid: str | None, method: str, path: str, fields: dict | None = None) -> int:
    """The status the Firestore emulator answers an app signed in as `uid` (None: signed
    out) that reads or writes `path` directly, under firestore.rules."""
    url = f"http://{settings.FIRESTORE_EMULATOR_HOST}/v1/{firestore_documents()}/{path}"
    body = None
    if fields is not None:
        body = {"fields": {k: {"stringValue": v} for k, v in fields.items()}}
    return app_request(uid, method, url, body)


def app_request(uid: str | None, method: str, url: str, body: dict | None) -> int:
    headers = {"Content-Type": "application/json"}
    if uid:
        headers["Authorization"] = f"Bearer {unsigned_id_token(uid)}"
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, method=method, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status
    except urllib.error.HTTPError as exc:
        return exc.code


PRODUCTION = {
    "MEMHARBOR_DEBUG": "0",
    "MEMHARBOR_SECRET_KEY": "k" * 40,
    "AGORA_APP_ID": "a" * 32,
    "AGORA_APP_CERT": "b" * 32,
    "FIREBASE_SERVICE_ACCOUNT": "/nonexistent/service-account.json",
    "FIREBASE_USE_EMULATOR": "false",
    "AUTH_MODE": "firebase",
}
_CLEARED = ("FIRESTORE_EMULATOR_HOST", "STORAGE_EMULATOR_HOST", "FIREBASE_STORAGE_EMULATOR_HOST",
            "GOOGLE_APPLICATION_CREDENTIALS", "DJANGO_SETTINGS_MODULE")


def boot_settings(tmp_path, **env) -> subprocess.CompletedProcess:
    """Load the real settings in a fresh interpreter, as gunicorn would."""
    clean = {k: v for k, v in os.environ.items() if k not in _CLEARED and k not in PRODUCTION}
    clean.update(LOG_DIR=str(tmp_path), DJANGO_SETTINGS_MODULE="config.settings", **env)
    return subprocess.run([sys.executable, "-c", "import django; django.setup()"],
                          env=clean, capture_output=True, text=True, timeout=60, cwd=os.getcwd())


NCS_SECRET = secrets.token_hex(16)  # the Agora Notifications secret of the test servers


def signed(body: bytes, *, secret: str = NCS_SECRET, v1: bool = False) -> dict:
    """The signature headers Agora sends with a channel event (V2: SHA256; v1: SHA1)."""
    if v1:
        return {"Agora-Signature": hmac.new(secret.encode(), body, hashlib.sha1).hexdigest()}
    return {"Agora-Signature-V2": hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()}


def event(event_type: int, channel: str, uid: int | None = None, *, seq: int = 0,
          ts=None, notice: str | None = None) -> bytes:
    """The body of an Agora channel event (NCS) as Agora sends it."""
    payload = {"channelName": channel, "ts": int((ts or utc_now()).timestamp()),
               "platform": 1, "clientSeq": seq}
    if uid is not None:
        payload["uid"] = uid
    if event_type in (104, 106, 108):
        payload["reason"] = 1
    return json.dumps({"noticeId": notice or secrets.token_hex(8), "productId": 1,
                       "eventType": event_type, "notifyMs": int(utc_now().timestamp() * 1000),
                       "payload": payload}).encode()
