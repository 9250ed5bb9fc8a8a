"""/api/openapi.json documents every endpoint's answers, errors included, and the schemas
that check those answers never reshape them."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from api.schemas import CallDocument, ErrorBody, RecordingStopOut

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
}


@pytest.fixture
def spec(client) -> dict:
    response = client.get("/api/openapi.json")
    assert response.status_code == 200
    return response.json()


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
            "createdAt": "2026-02-04T05:49:23.670148Z", "pushDevices": {"d1": "sent"},
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
