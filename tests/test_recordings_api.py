"""The recording endpoints against a real recorder (headless Chromium) and the emulators."""

from __future__ import annotations

import pytest

from devstack.emulators import free_port, wait_until
from integrations.firebase import firestore_client
from recorder_bridge import client as recorder_client
from tests.test_calls import invite, stored
from tests.test_recorder_service import start_recorder  # noqa: F401 (fixture)


@pytest.fixture
def recorder(start_recorder, settings):  # noqa: F811
    """A running recorder the API is configured to use."""
    running = start_recorder(RECORDER_JOIN_TIMEOUT_SECONDS="2")
    settings.RECORDER_SERVICE_URL = running.base
    settings.RECORDER_SECRET = running.secret
    recorder_client._http.cache_clear()
    yield running
    recorder_client._http.cache_clear()


def _tone_session(recorder, call: dict) -> dict:
    """A recording of `call`'s channel (a tone: Agora cannot be reached from here)."""
    status, started = recorder.call("POST", "/sessions", {
        "channel": call["channelName"], "callId": call["callId"], "uid": 999999,
        "source": "tone:440"})
    assert status == 201, started
    firestore_client().collection("calls").document(call["callId"]).update(
        {"recordingId": started["sid"]})
    wait_until(lambda: recorder.sidecar(started["filename"])["chunks"] >= 2, timeout=30,
               what="two chunks")
    return started


def test_start_sends_the_bot_into_the_call_and_reports_agoras_refusal(as_user, recorder):
    call = invite(as_user)
    response = as_user("alice").post("/api/recording/start", {"channel": call["channelName"]})
    # Agora is unreachable from this machine: the recorder's join times out, nothing is left.
    assert response.status_code == 502
    assert response.json()["error"]["code"] == "agora_join_timeout"
    assert recorder.call("GET", "/sessions") == (200, {"sessions": []})


def test_only_participants_or_admins_start_a_recording(as_user, recorder):
    call = invite(as_user)
    response = as_user("mallory").post("/api/recording/start", {"channel": call["channelName"]})
    assert (response.status_code, response.json()["error"]["code"]) == (403, "not_in_call")
    response = as_user("alice").post("/api/recording/start", {"channel": "g_no_call_1"})
    assert (response.status_code, response.json()["error"]["code"]) == (404, "no_active_call")


def test_stop_answers_the_seed_shape_once_the_wav_is_stored(as_user, recorder):
    call = invite(as_user)
    started = _tone_session(recorder, call)
    denied = as_user("mallory").post("/api/recording/stop", {"sid": started["sid"]})
    assert denied.status_code == 403
    response = as_user("bob").post("/api/recording/stop", {"channel": call["channelName"]})
    assert response.status_code == 200, response.content
    body = response.json()
    assert body["sid"] == started["sid"] and body["status"] == "stopped"
    assert (body["groupId"], body["user1"], body["user2"]) == ("group1", "alice", "bob")
    assert body["format"] == "wav" and body["filename"].endswith(".wav")
    assert body["firebase"]["storagePath"] == f"recordings/{body['filename']}"
    assert body["firebase"]["firestoreId"] == started["sid"]
    assert stored(call["callId"])["recordingId"] == started["sid"]


def test_status_and_list_show_each_user_their_own(as_user, recorder):
    call = invite(as_user)
    started = _tone_session(recorder, call)
    mine = as_user("alice").get("/api/recording/status").json()["sessions"]
    assert [s["sid"] for s in mine] == [started["sid"]]
    assert as_user("mallory").get("/api/recording/status").json()["sessions"] == []
    assert len(as_user("root", admin=True).get("/api/recording/status").json()["sessions"]) == 1
    as_user("alice").post("/api/recording/stop", {"sid": started["sid"]})

    listed = as_user("bob").get("/api/recording/list?limit=1").json()
    assert [r["recordingId"] for r in listed["recordings"]] == [started["sid"]]
    assert listed["recordings"][0]["status"] == "completed"
    assert as_user("mallory").get("/api/recording/list").json()["recordings"] == []


def test_ending_the_call_stops_its_recording(as_user, recorder):
    call = invite(as_user)
    as_user("bob").post("/api/call/answer", {"call_id": call["callId"], "action": "accept"})
    started = _tone_session(recorder, call)
    as_user("alice").post("/api/call/end", {"call_id": call["callId"]})
    wait_until(lambda: recorder.sidecar(started["filename"])["state"] == "completed",
               timeout=60, what="the recording stopped and stored")


def test_an_unreachable_recorder_is_503(as_user, settings):
    settings.RECORDER_SERVICE_URL = f"http://127.0.0.1:{free_port()}"
    recorder_client._http.cache_clear()
    call = invite(as_user)
    response = as_user("alice").post("/api/recording/start", {"channel": call["channelName"]})
    assert (response.status_code, response.json()["error"]["code"]) == (
        503, "recorder_unavailable")
    recorder_client._http.cache_clear()


def test_health_reports_the_recorder(client, recorder, settings):
    body = client.get("/api/health").json()
    assert body["recorder"]["status"] == "ok" and body["recorder"]["browser"] in ("up", "down")
    settings.RECORDER_SERVICE_URL = f"http://127.0.0.1:{free_port()}"
    body = client.get("/api/health").json()
    assert body["recorder"]["status"] == "down" and body["status"] == "ok"


def test_stop_needs_exactly_one_of_sid_or_channel(as_user):
    body = as_user("alice").post("/api/recording/stop", {}).json()
    assert body["error"]["code"] == "validation_error"
