"""The recording endpoints against a real recorder (headless Chromium) and the emulators."""

from __future__ import annotations

import io
import subprocess
import wave
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests
from django.conf import settings

from devstack.emulators import free_port, wait_until
from integrations.firebase import firestore_client
from recorder_bridge import client as recorder_client
from tests.conftest import post_json
from tests.helpers import document, error_of, invite, storage_down, storage_hanging, stored


@pytest.fixture
def recorder(start_recorder, settings):
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
    assert body["duration"] > 0  # milliseconds of the stored WAV
    assert body["firebase"]["storagePath"] == f"recordings/{body['filename']}"
    assert body["firebase"]["firestoreId"] == started["sid"]
    assert stored(call["callId"])["recordingId"] == started["sid"]
    assert "path" not in body and str(recorder.recordings) not in response.content.decode()
    # `duration` (ms) is the stored WAV's, and `firebase.url` serves that WAV.
    with requests.get(body["firebase"]["url"], timeout=30) as served:
        assert served.status_code == 200
        with wave.open(io.BytesIO(served.content)) as wav:
            assert (wav.getframerate(), wav.getnchannels()) == (16000, 1)
            assert body["duration"] > 0
            assert wav.getnframes() / 16 == pytest.approx(body["duration"], abs=1)


def test_stop_with_nothing_to_stop_is_404(as_user, recorder):
    call = invite(as_user)
    response = as_user("alice").post("/api/recording/stop", {"channel": call["channelName"]})
    error_of(response, 404, "recording_not_found")
    response = as_user("alice").post("/api/recording/stop", {"sid": "no-such-session"})
    error_of(response, 404, "session_not_found")


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


def test_a_call_whose_ids_hold_hash_bang_and_colon_is_rung_tokened_and_recorded(
        as_user, recorder, settings):
    # One channel-name rule (integrations.agora) for the invite, the token and the recorder.
    settings.DEBUG = True  # a local tone instead of Agora, which cannot be reached here
    response = as_user("al!ce:1").post("/api/call/invite", {
        "group_id": "fam#1", "caller_id": "al!ce:1", "receiver_id": "b#b"})
    assert response.status_code == 200, response.content
    call = response.json()
    assert call["channelName"].startswith("fam#1_al!ce:1_b#b_")
    token = as_user("b#b").post("/api/token", {"channel": call["channelName"], "uid": 7})
    assert token.status_code == 200, token.content

    started = as_user("al!ce:1").post("/api/recording/start", {
        "channel": call["channelName"], "source": "tone:440"})
    assert started.status_code == 200, started.content
    body = started.json()
    assert (body["channel"], body["uid"], body["status"]) == (
        call["channelName"], settings.RECORDER_UID, "recording")
    assert stored(call["callId"])["recordingId"] == body["sid"]  # set by the service
    wait_until(lambda: recorder.sidecar(body["filename"])["chunks"] >= 2, timeout=30,
               what="two chunks")

    stopped = as_user("b#b").post("/api/recording/stop", {"sid": body["sid"]}).json()
    assert (stopped["status"], stopped["format"]) == ("stopped", "wav")
    assert (stopped["groupId"], stopped["user1"], stopped["user2"]) == (
        "fam#1", "al!ce:1", "b#b")
    document = firestore_client().collection("recordings").document(body["sid"]).get()
    assert (document.get("status"), document.get("channel")) == ("completed", call["channelName"])


def test_a_tone_source_is_refused_outside_development(as_user, recorder):
    call = invite(as_user)
    response = as_user("alice").post("/api/recording/start", {
        "channel": call["channelName"], "source": "tone:440"})
    assert "source" in error_of(response, 400, "validation_error")["message"]
    assert recorder.call("GET", "/sessions") == (200, {"sessions": []})


def test_the_sweep_stops_recordings_of_calls_that_ended_without_telling_the_recorder(
        as_user, recorder, client):
    call = invite(as_user)
    as_user("bob").post("/api/call/answer", {"call_id": call["callId"], "action": "accept"})
    started = _tone_session(recorder, call)
    # The call ended in a worker that died before it reached the recorder.
    firestore_client().collection("calls").document(call["callId"]).update(
        {"status": "ended", "endReason": "hangup"})
    response = post_json(client, "/api/call/timeout/sweep", {},
                         {"X-Ops-Key": settings.OPS_API_KEY})
    assert response.json()["report"]["recordingsOfEndedCalls"] == {"stopped": 1}
    wait_until(lambda: recorder.sidecar(started["filename"])["state"] == "completed",
               timeout=60, what="the recording stopped and stored")
    again = post_json(client, "/api/call/timeout/sweep", {}, {"X-Ops-Key": settings.OPS_API_KEY})
    assert again.json()["report"]["recordingsOfEndedCalls"] == {"stopped": 0}


def test_an_unreachable_recorder_is_503(as_user, settings):
    settings.RECORDER_SERVICE_URL = f"http://127.0.0.1:{free_port()}"
    recorder_client._http.cache_clear()
    call = invite(as_user)
    response = as_user("alice").post("/api/recording/start", {"channel": call["channelName"]})
    assert (response.status_code, response.json()["error"]["code"]) == (
        503, "recorder_unavailable")
    recorder_client._http.cache_clear()


def test_health_reports_the_recorder(client, recorder, settings, tmp_path):
    (recorder.recordings / "left-behind.webm").write_bytes(b"x" * 1000)
    settings.RECORDING_UPLOADS_DIR = tmp_path / "uploads"
    (settings.RECORDING_UPLOADS_DIR / ".incoming").mkdir(parents=True)
    (settings.RECORDING_UPLOADS_DIR / "a.m4a").write_bytes(b"x" * 300)
    (settings.RECORDING_UPLOADS_DIR / ".incoming" / "b.part").write_bytes(b"x" * 200)
    body = client.get("/api/health").json()
    assert (body["recorder"]["status"], body["recorder"]["browser"]) == ("ok", "up")
    # Disk used by what is not in Storage yet: the recorder's directory and the uploads.
    assert body["recorder"]["disk"]["recordingsBytes"] == 1000
    assert body["disk"]["recordingsBytes"] == 500
    assert body["disk"]["freeBytes"] > 0 and body["recorder"]["disk"]["freeBytes"] > 0
    # RECORDER_SERVICE_URL alone: that recorder as the one node, with its free capacity.
    node, = body["recorder"]["nodes"]
    assert (node["url"], node["status"], node["capacity"], node["sessions"], node["free"]) == (
        recorder.base, "ok", 20, 0, 20)
    assert body["recorder"]["freeCapacity"] == 20
    settings.RECORDER_SERVICE_URL = f"http://127.0.0.1:{free_port()}"
    body = client.get("/api/health").json()
    assert body["recorder"]["status"] == "down" and body["status"] == "ok"


def test_stop_needs_exactly_one_of_sid_or_channel(as_user):
    body = as_user("alice").post("/api/recording/stop", {}).json()
    assert body["error"]["code"] == "validation_error"


@pytest.fixture
def failed_recording(as_user, start_recorder, settings):
    """A recorder whose Storage is down, used by the API, and a recording of a call it
    could not store: (recorder, session)."""
    failing = start_recorder(**{**storage_down(), "STORAGE_UPLOAD_TIMEOUT_SECONDS": "1"})
    settings.RECORDER_SERVICE_URL, settings.RECORDER_SECRET = failing.base, failing.secret
    recorder_client._http.cache_clear()
    started = _tone_session(failing, invite(as_user))
    assert failing.call("POST", f"/sessions/{started['sid']}/stop")[1]["status"] == "failed"
    assert failing.sidecar(started["filename"])["retryCount"] == 1
    yield failing, started
    recorder_client._http.cache_clear()


def test_the_sweep_asks_the_recorder_to_retry_failed_uploads(client, failed_recording,
                                                             settings):
    failing, started = failed_recording
    # Storage is still down: the retry the sweep asks for fails too, and is counted.
    sweep = post_json(client, "/api/call/timeout/sweep", {}, {"X-Ops-Key": settings.OPS_API_KEY})
    assert sweep.status_code == 200
    wait_until(lambda: failing.sidecar(started["filename"])["retryCount"] == 2, timeout=60,
               what="the retry the sweep asked for")
    assert failing.sidecar(started["filename"])["state"] == "failed"


def test_a_recording_that_cannot_be_converted_is_stored_as_webm(tmp_path):
    import json

    from recorder import pipeline

    webm = tmp_path / "g_a_b_1_2026-01-01T00-00-00.webm"
    webm.write_bytes(b"\x1aE\xdf\xa3" + bytes(range(256)) * 40)  # an EBML magic, then noise
    webm.with_suffix(".json").write_text(json.dumps({"sid": "s-webm", "state": "stopped"}))
    answer = pipeline.recording_finish(webm=webm, sid="s-webm", channel="g_a_b_1", call_id=None)
    assert answer["format"] == "webm" and answer["filename"].endswith(".webm")
    assert answer["firebase"]["storagePath"] == f"recordings/{webm.name}"
    document = firestore_client().collection("recordings").document("s-webm").get()
    assert (document.get("status"), document.get("format")) == ("completed", "webm")


def test_recorder_recordings_and_uploads_live_in_one_library(as_user, client, recorder,
                                                             settings, tmp_path):
    call = invite(as_user)
    started = _tone_session(recorder, call)
    assert as_user("bob").post("/api/recording/stop",
                               {"sid": started["sid"]}).status_code == 200
    phone_copy = tmp_path / "phone.m4a"
    subprocess.run(["ffmpeg", "-hide_banner", "-loglevel", "error", "-f", "lavfi", "-i",
                    "sine=frequency=300:duration=2", "-c:a", "aac", str(phone_copy)],
                   check=True)
    with phone_copy.open("rb") as file:
        uploaded = client.post("/api/recordings/upload",
                               data={"recording": file, "call_id": call["callId"]},
                               headers=as_user("alice").headers).json()

    listed = client.get("/api/admin/recordings", headers={"X-Ops-Key": settings.OPS_API_KEY})
    by_source = {item["source"]: item for item in listed.json()["recordings"]}
    assert set(by_source) == {"recorder", "upload"} and listed.json()["total"] == 2
    assert by_source["recorder"]["recordingId"] == started["sid"]
    assert by_source["upload"]["recordingId"] == uploaded["recordingId"]
    assert {item["callId"] for item in by_source.values()} == {call["callId"]}
    played = as_user("bob").get(f"/api/recordings/{started['sid']}/stream")
    assert played.status_code == 200 and b"".join(played.streaming_content)[:4] == b"RIFF"
    status = client.get("/api/recordings/upload-status",
                        headers={"X-Ops-Key": settings.OPS_API_KEY}).json()
    assert (status["completed"], status["total"]) == (2, 2)
    has = as_user("alice").get("/api/users/bob/has-recording").json()
    assert has["hasRecording"] is True and has["callId"] == call["callId"]


def test_retry_upload_of_a_failed_recorder_recording_asks_the_recorder(as_user,
                                                                      failed_recording):
    failing, started = failed_recording
    error_of(as_user("mallory").post(f"/api/recordings/{started['sid']}/retry-upload", {}),
             403, "not_in_call")

    response = as_user("bob").post(f"/api/recordings/{started['sid']}/retry-upload", {})

    assert response.status_code == 202, response.content
    assert response.json()["status"] == "processing"
    # Storage is still down for that recorder: its retry runs and fails again, counted.
    wait_until(lambda: failing.sidecar(started["filename"])["retryCount"] == 2, timeout=60,
               what="the recorder's retry")
    recording = firestore_client().collection("recordings").document(started["sid"])
    wait_until(lambda: recording.get().get("status") == "failed", timeout=30,
               what="the recording failed again")
    assert recording.get().get("retryCount") == 2


def test_racing_starts_on_one_call_share_one_session_until_it_stops(start_server,
                                                                     start_recorder,
                                                                     securetoken, as_user):
    recorder = start_recorder()
    # Two workers: the starts race across processes, not only threads of one.
    base = start_server(MEMHARBOR_DEBUG="1", GUNICORN_WORKERS="2",
                        RECORDER_SERVICE_URL=recorder.base, RECORDER_SECRET=recorder.secret)
    call = invite(as_user)
    headers = {who: {"Authorization": f"Bearer {securetoken.mint(who)}"}
               for who in ("alice", "bob")}

    def post(path: str, body: dict, who: str = "alice"):
        return requests.post(f"{base}{path}", json=body, headers=headers[who], timeout=120)

    def start(who: str = "alice") -> dict:
        response = post("/api/recording/start",
                        {"channel": call["channelName"], "source": "tone:440"}, who)
        assert response.status_code == 200, response.content
        return response.json()

    def active() -> list[str]:
        return [s["sid"] for s in recorder.call("GET", "/sessions")[1]["sessions"]]

    with ThreadPoolExecutor(max_workers=6) as pool:
        answers = list(pool.map(start, ["alice", "bob"] * 3))
    sids = {answer["sid"] for answer in answers}
    assert len(sids) == 1 and active() == list(sids)
    first = sids.pop()
    assert start("bob")["sid"] == first  # while it records, a start answers it

    # A stop releases the call: the next start is a new session.
    assert post("/api/recording/stop", {"sid": first}).status_code == 200
    second = start()["sid"]
    assert second != first and active() == [second]
    # A session that ended by itself (stopped at the recorder) does not hold the call.
    assert recorder.call("POST", f"/sessions/{second}/stop")[0] == 200
    third = start()["sid"]
    assert third not in (first, second) and active() == [third]

    # The call ends: every session on its channel stops, and the claim is gone.
    assert post("/api/call/answer", {"call_id": call["callId"], "action": "accept"},
                "bob").status_code == 200
    assert post("/api/call/end", {"call_id": call["callId"]}).status_code == 200
    wait_until(lambda: active() == [], timeout=60, what="the call's sessions stopped")
    claim = firestore_client().collection("recordingSessions").document(call["callId"])
    assert not claim.get().exists


def test_a_stop_while_storage_hangs_answers_202_processing_and_status_lists_it(
        as_user, start_recorder, settings):
    with storage_hanging() as hanging:
        # The upload gives up after 8 s; the stop waits 1 s for it.
        recorder = start_recorder(RECORDER_JOIN_TIMEOUT_SECONDS="2",
                                  STORAGE_UPLOAD_TIMEOUT_SECONDS="8", **hanging)
        settings.RECORDER_SERVICE_URL, settings.RECORDER_SECRET = recorder.base, recorder.secret
        settings.RECORDER_STOP_WAIT_SECONDS = 1
        recorder_client._http.cache_clear()
        call = invite(as_user)
        sid = _tone_session(recorder, call)["sid"]

        response = as_user("bob").post("/api/recording/stop", {"sid": sid})
        assert response.status_code == 202, response.content
        body = response.json()
        assert (body["sid"], body["status"], body["callId"]) == (sid, "processing",
                                                                 call["callId"])
        assert "firebase" not in body

        def listed() -> list[tuple[str, str]]:
            sessions = as_user("alice").get("/api/recording/status").json()["sessions"]
            return [(s["sid"], s["status"]) for s in sessions]
        wait_until(lambda: listed() == [(sid, "processing")], timeout=10,
                   what="the stopped session listed as processing")

        # Storage never answers: the upload gives up, the recording is failed, and a stop
        # now answers that at once, with the reason.
        wait_until(lambda: (document(sid) or {}).get("status") == "failed", timeout=60,
                   what="the upload given up")
        wait_until(lambda: listed() == [], timeout=10, what="processing over")
        again = as_user("bob").post("/api/recording/stop", {"sid": sid})
        assert again.status_code == 200, again.content
        assert (again.json()["status"], again.json()["error"]) == ("failed",
                                                                   "storage_unavailable")
