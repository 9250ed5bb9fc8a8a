"""Helpers the test modules share: the call every story starts with, reading what the
server stored, the error shape, and plain HTTP against a server a test started."""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import json
import os
import secrets
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path

from django.conf import settings
from google.cloud import firestore

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


@contextlib.contextmanager
def held(path: str):
    """Another writer inside a transaction on the document at `path` (it has read it and
    means to write it) for as long as the block runs: the server's transactions on that
    document wait for it and are aborted. It commits (changing nothing) on the way out."""
    ref = firestore_client().document(path)
    holding, release = threading.Event(), threading.Event()

    @firestore.transactional
    def hold(transaction):
        transaction.update(ref, {"updatedAt": ref.get(transaction=transaction).get("updatedAt")})
        holding.set()
        release.wait()

    holder = threading.Thread(target=hold, args=(firestore_client().transaction(),))
    holder.start()
    assert holding.wait(timeout=30), "the other writer never got into its transaction"
    try:
        yield ref
    finally:
        release.set()
        holder.join(timeout=60)


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


# --- every query the server sends has its index in firestore.indexes.json ---------------
# The emulator runs any query; production Firestore refuses one that needs a composite
# index nobody deployed (FAILED_PRECONDITION "The query requires an index"). These helpers
# judge a query as production would, by the index file.

_EQUALITY = {"EQUAL": "eq", "IN": "eq", "ARRAY_CONTAINS": "contains",
             "ARRAY_CONTAINS_ANY": "contains"}
_UNARY_EQUALITY = {"IS_NULL", "IS_NAN"}
_DIRECTIONS = {1: "ASCENDING", 2: "DESCENDING"}


def _disjuncts(where) -> list[list[tuple[str, str]]]:
    """The filter as OR of ANDs of (field, operator name): Firestore runs each AND apart."""
    from google.cloud.firestore_v1.types import StructuredQuery

    kind = where.WhichOneof("filter_type")
    if kind is None:
        return [[]]
    if kind == "field_filter":
        op = StructuredQuery.FieldFilter.Operator(where.field_filter.op).name
        return [[(where.field_filter.field.field_path, op)]]
    if kind == "unary_filter":
        op = StructuredQuery.UnaryFilter.Operator(where.unary_filter.op).name
        return [[(where.unary_filter.field.field_path, op)]]
    parts = [_disjuncts(child) for child in where.composite_filter.filters]
    if StructuredQuery.CompositeFilter.Operator(where.composite_filter.op).name == "OR":
        return [conjunct for part in parts for conjunct in part]
    combined: list[list[tuple[str, str]]] = [[]]
    for part in parts:
        combined = [left + right for left in combined for right in part]
    return combined


def _index_serves(index: dict, equal: dict[str, str], orders: list[tuple[str, str]],
                  field: str | None) -> bool:
    fields = [f for f in index["fields"] if f["fieldPath"] != "__name__"]
    head, tail = fields[:len(fields) - len(orders)], fields[len(fields) - len(orders):]
    if [(f["fieldPath"], f.get("order")) for f in tail] != orders:
        return False
    for f in head:
        kind = "contains" if f.get("arrayConfig") == "CONTAINS" else "eq"
        if equal.get(f["fieldPath"]) != kind:
            return False
    return field is None or field in {f["fieldPath"] for f in head}


def index_gaps(structured_query, indexes: list[dict] | None = None) -> list[str]:
    """What a StructuredQuery (protobuf) needs that `indexes` (firestore.indexes.json's)
    lacks, one line per missing index; [] when Firestore can serve it. Equality filters
    are served by merging indexes that end in the query's sort order."""
    if indexes is None:
        indexes = json.loads((Path(settings.BASE_DIR) / "firestore.indexes.json")
                             .read_text())["indexes"]
    [source] = structured_query.from_
    scope = "COLLECTION_GROUP" if source.all_descendants else "COLLECTION"
    candidates = [i for i in indexes if i["collectionGroup"] == source.collection_id
                  and i.get("queryScope", "COLLECTION") == scope]
    explicit = [(o.field.field_path, _DIRECTIONS[o.direction])
                for o in structured_query.order_by if o.field.field_path != "__name__"]
    gaps = []
    for conjunct in _disjuncts(structured_query.where):
        equal = {f: _EQUALITY[op] for f, op in conjunct if op in _EQUALITY}
        equal.update({f: "eq" for f, op in conjunct if op in _UNARY_EQUALITY})
        ranged = sorted({f for f, op in conjunct if f not in equal})
        orders = [(f, "ASCENDING") for f in ranged if f not in dict(explicit)] + [
            (f, d) for f, d in explicit if f not in equal]
        if not ((equal and orders) or len(orders) >= 2):
            continue  # single-field indexes (automatic) serve it
        for field in (sorted(equal) or [None]):
            if not any(_index_serves(i, equal, orders, field) for i in candidates):
                gaps.append(f"{source.collection_id}: {sorted(equal.items())} then {orders}")
                break
    return gaps


@contextlib.contextmanager
def queries_checked_against_the_index_file():
    """While the block runs, every query this process sends to Firestore is judged by
    `index_gaps`; yields the list the gaps are added to."""
    from google.cloud.firestore_v1.services.firestore.client import FirestoreClient

    gaps: list[str] = []
    originals = {name: getattr(FirestoreClient, name)
                 for name in ("run_query", "run_aggregation_query")}

    def checking(name):
        def send(self, request=None, **kwargs):
            if not isinstance(request, dict):
                request = {"structured_query": getattr(request, "structured_query", None),
                           "structured_aggregation_query": getattr(
                               request, "structured_aggregation_query", None)}
            query = (request["structured_query"] if name == "run_query" else
                     request["structured_aggregation_query"].structured_query)
            gaps.extend(index_gaps(type(query).pb(query)))
            return originals[name](self, request=request, **kwargs)
        return send

    for name in originals:
        setattr(FirestoreClient, name, checking(name))
    try:
        yield gaps
    finally:
        for name, original in originals.items():
            setattr(FirestoreClient, name, original)
