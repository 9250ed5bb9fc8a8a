"""/api/openapi.json documents every endpoint's answers, errors included, and the schemas
that check those answers never reshape them."""

from __future__ import annotations

import subprocess
from datetime import UTC, datetime

import pytest
from django.conf import settings
from django.http import HttpResponseBase
from ninja.operation import Operation
from ninja.responses import Status
from pydantic import BaseModel

from api.schemas import CallDocument, ErrorBody, RecordingStopOut
from devstack.emulators import wait_until
from recorder_bridge import client as recorder_client
from tests.conftest import post_json
from tests.helpers import NCS_SECRET as SECRET
from tests.helpers import event, invite, signed

METHODS = {"get", "post", "put", "patch", "delete"}
KNOWN = {
    "GET /api/health", "GET /api/health/live", "POST /api/token", "POST /api/call/invite",
    "POST /api/call/answer", "POST /api/call/cancel", "POST /api/call/missed",
    "POST /api/call/end", "GET /api/call/status/{call_id}", "POST /api/call/timeout/sweep",
    "POST /api/recording/start", "POST /api/recording/stop", "GET /api/recording/status",
    "GET /api/recording/list", "POST /api/recordings/upload",
    "GET /api/recordings/check-exists", "GET /api/recordings/upload-status",
    "GET /api/recordings/{recording_id}/stream", "GET /api/recordings/{recording_id}/download",
    "POST /api/recordings/{recording_id}/retry-upload", "GET /api/calls/{call_id}/has-recording",
    "GET /api/users/{uid}/has-recording", "GET /api/admin/recordings",
    "POST /api/webhooks/agora",
}


@pytest.fixture
def spec(client) -> dict:
    response = client.get("/api/openapi.json", headers={"X-Ops-Key": settings.OPS_API_KEY})
    assert response.status_code == 200
    return response.json()


def test_the_docs_are_for_ops_and_admins_unless_made_public(client, bearer, settings):
    for path in ("/api/openapi.json", "/api/docs"):
        assert client.get(path).json()["error"]["code"] == "unauthenticated"
        assert client.get(path, headers=bearer("alice")).json()["error"]["code"] == (
            "admin_required")
        assert client.get(path, headers=bearer("root", admin=True)).status_code == 200
    settings.API_DOCS_PUBLIC = True
    assert client.get("/api/openapi.json").status_code == 200


def _resolve(spec: dict, schema: dict) -> dict:
    while "$ref" in schema:
        schema = spec["components"]["schemas"][schema["$ref"].rsplit("/", 1)[-1]]
    return schema


def _operations(spec: dict):
    for path, item in spec["paths"].items():
        for method, operation in item.items():
            if method in METHODS:
                yield f"{method.upper()} {path}", operation


def _schemas(answer: dict) -> list[dict]:
    return [media["schema"] for media in answer.get("content", {}).values()]


def test_every_operation_documents_a_typed_success_answer(spec):
    operations = dict(_operations(spec))
    assert KNOWN <= set(operations)
    for name, operation in operations.items():
        successes = {status: answer for status, answer in operation["responses"].items()
                     if status.startswith("2")}
        assert successes, f"{name} documents no 2xx answer"
        for status, answer in successes.items():
            if status == "204":
                continue  # No Content: nothing to type
            schemas = _schemas(answer)
            assert schemas, f"{name} {status} has no schema"
            for schema in schemas:
                schema = _resolve(spec, schema)
                typed = schema.get("properties") or (schema.get("type") not in (None, "object"))
                assert typed, f"{name} {status} is an untyped object: {schema}"


def test_every_error_answer_is_the_error_body(spec):
    for name, operation in _operations(spec):
        errors = {status: answer for status, answer in operation["responses"].items()
                  if status[0] in "45"}
        if name == "GET /api/health":
            # The readiness report is the body of its 503 too.
            assert _schemas(errors["503"]) == [{"$ref": "#/components/schemas/HealthOut"}]
            continue
        if name == "GET /api/health/live":
            continue
        assert "500" in errors, name
        assert "503" in errors, f"{name} documents no 503 (dependency_timeout)"
        if operation.get("security"):
            assert "401" in errors, f"{name} is authenticated but documents no 401"
        for status, answer in errors.items():
            assert _schemas(answer) == [{"$ref": "#/components/schemas/ErrorBody"}], (
                name, status)
            assert answer["description"], (name, status)


def test_the_error_body_is_success_false_with_code_and_message(spec):
    body = spec["components"]["schemas"]["ErrorBody"]
    assert set(body["required"]) == {"success", "error"}
    assert body["properties"]["success"]["const"] is False
    error = _resolve(spec, body["properties"]["error"])
    assert set(error["required"]) == {"code", "message"}
    assert error["additionalProperties"] is True
    assert {"details", "status", "callId", "requestId"} <= set(error["properties"])


def test_the_call_document_and_media_answers_are_documented(spec):
    call = spec["components"]["schemas"]["CallDocument"]
    assert {"caregiverUserId", "giverNameSnapshot", "createdAt", "humanKeywords"} <= set(
        call["properties"])
    assert call["additionalProperties"] is True
    stop = spec["components"]["schemas"]["RecordingStopOut"]
    firebase = stop["properties"]["firebase"]["anyOf"][0]
    assert set(_resolve(spec, firebase)["properties"]) == {"url", "firestoreId", "storagePath"}
    stream = spec["paths"]["/api/recordings/{recording_id}/stream"]["get"]["responses"]
    assert {"200", "206", "302", "416"} <= set(stream)
    assert stream["200"]["content"]["audio/wav"]["schema"]["format"] == "binary"


def test_schemas_answer_exactly_the_keys_they_are_given():
    # Declared but absent stays absent (not null); undeclared passes through unchanged.
    call = {"callId": "c1", "channelName": "g_a_b_1", "groupId": "g", "callerId": "a",
            "receiverId": "b", "callerName": "A", "caregiverUserId": "a",
            "giverNameSnapshot": "A", "status": "pending",
            "createdAt": "2026-02-04T05:49:23.670148Z", "notDeclaredHere": {"d1": "x"},
            "durationSec": 0, "endedAt": None}
    assert CallDocument.model_validate(call).model_dump() == call
    stop = {"sid": "s1", "status": "processing", "firebase": None}
    assert RecordingStopOut.model_validate(stop).model_dump() == stop
    error = {"success": False, "error": {"code": "busy", "message": "m", "callId": "c"}}
    assert ErrorBody.model_validate(error).model_dump() == error


def test_a_datetime_is_answered_as_the_json_renderer_writes_it():
    moment = datetime(2026, 2, 4, 5, 49, 23, 670148, tzinfo=UTC)
    call = CallDocument.model_validate({
        "callId": "c1", "channelName": "g_a_b_1", "groupId": "g", "callerId": "a",
        "receiverId": "b", "callerName": "A", "caregiverUserId": "a",
        "giverNameSnapshot": "A", "status": "ended", "createdAt": moment})
    assert call.model_dump()["createdAt"] == "2026-02-04T05:49:23.670Z"


def test_the_docs_page_renders_in_debug_mode(client, settings):
    settings.DEBUG = True
    response = client.get("/api/docs")
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/html")
    assert b"openapi.json" in response.content


# --- the schemas change no answer ------------------------------------------------------------

@pytest.fixture
def unchanged(monkeypatch):
    """Every answer a view returns as data is checked byte for byte against what the JSON
    renderer makes of that data without a schema: {"answered": [...], "differing": [...]}."""
    original = Operation._result_to_response
    seen: dict[str, list] = {"answered": [], "differing": []}

    def checking(self, request, result, temporal_response):
        response = original(self, request, result, temporal_response)
        body = result.value if isinstance(result, Status) else result
        if not isinstance(result, HttpResponseBase | BaseModel):
            name = f"{request.method} {request.path}"
            raw = self.api.renderer.render(request, body, response_status=response.status_code)
            seen["answered"].append(name)
            if response.content != raw.encode():
                seen["differing"].append((name, raw, response.content.decode()))
        return response

    monkeypatch.setattr(Operation, "_result_to_response", checking)
    return seen


@pytest.fixture
def recorder(start_recorder, settings):
    running = start_recorder(RECORDER_JOIN_TIMEOUT_SECONDS="2")
    settings.RECORDER_SERVICE_URL, settings.RECORDER_SECRET = running.base, running.secret
    recorder_client._http.cache_clear()
    yield running
    recorder_client._http.cache_clear()


def test_no_answer_differs_from_the_views_data(unchanged, client, as_user, bearer, recorder,
                                               settings, tmp_path):
    ops = {"X-Ops-Key": settings.OPS_API_KEY}
    call = invite(as_user)
    call_id = call["callId"]
    assert as_user("bob").post("/api/call/answer",
                               {"call_id": call_id, "action": "accept"}).status_code == 200
    # A channel event: the call document gains presence, with timestamps nested in it.
    settings.AGORA_NCS_SECRET = SECRET
    assert as_user("alice").post("/api/token", {"channel": call["channelName"],
                                                "uid": 1001}).status_code == 200
    joined = event(103, call["channelName"], 1001, seq=1)
    answer = client.post("/api/webhooks/agora", data=joined, content_type="application/json",
                         headers=signed(joined))
    assert answer.json()["result"] == "applied", answer.content
    status = as_user("alice").get(f"/api/call/status/{call_id}")
    assert status.json()["presence"]["alice"]["inChannel"] is True

    settings.DEBUG = True  # a local tone instead of Agora, which cannot be reached here
    start = as_user("alice").post("/api/recording/start", {"channel": call["channelName"],
                                                           "source": "tone:440"})
    assert start.status_code == 200, start.content
    started = start.json()
    wait_until(lambda: recorder.sidecar(started["filename"])["chunks"] >= 2, timeout=30,
               what="two chunks")
    assert as_user("alice").get("/api/recording/status").json()["sessions"]
    stop = as_user("bob").post("/api/recording/stop", {"sid": started["sid"]})
    assert stop.json()["firebase"]["firestoreId"] == started["sid"]
    assert as_user("bob").get("/api/recording/list").json()["recordings"]

    phone = tmp_path / "phone.m4a"
    subprocess.run(["ffmpeg", "-hide_banner", "-loglevel", "error", "-f", "lavfi", "-i",
                    "sine=frequency=300:duration=2", "-c:a", "aac", str(phone)], check=True)
    for status in (201, 200):  # stored, then the same bytes again
        with phone.open("rb") as file:
            uploaded = client.post("/api/recordings/upload", headers=bearer("alice"),
                                   data={"recording": file, "call_id": call_id})
        assert uploaded.status_code == status, uploaded.content
    for path in (f"/api/recordings/check-exists?call_id={call_id}",
                 f"/api/calls/{call_id}/has-recording", "/api/users/bob/has-recording"):
        assert as_user("alice").get(path).status_code == 200, path
    for path in ("/api/recordings/upload-status", "/api/admin/recordings"):
        assert client.get(path, headers=ops).status_code == 200, path

    assert as_user("alice").post("/api/call/end", {"call_id": call_id}).status_code == 200
    again = invite(as_user)
    assert as_user("bob").post("/api/call/missed",
                               {"call_id": again["callId"]}).status_code == 200
    third = invite(as_user)
    assert as_user("alice").post("/api/call/cancel",
                                 {"call_id": third["callId"]}).status_code == 200
    assert post_json(client, "/api/call/timeout/sweep", {}, ops).status_code == 200
    assert client.get("/api/health/live").status_code == 200

    assert {
        "POST /api/call/invite", "POST /api/call/answer", f"GET /api/call/status/{call_id}",
        "POST /api/webhooks/agora", "POST /api/recording/start", "GET /api/recording/status",
        "POST /api/recording/stop", "GET /api/recording/list",
        "POST /api/recordings/upload", "GET /api/recordings/check-exists",
        f"GET /api/calls/{call_id}/has-recording", "GET /api/users/bob/has-recording",
        "GET /api/recordings/upload-status", "GET /api/admin/recordings",
        "POST /api/call/end", "POST /api/call/missed", "POST /api/call/cancel",
        "POST /api/call/timeout/sweep", "GET /api/health/live",
    } <= set(unchanged["answered"])
    assert unchanged["differing"] == []
