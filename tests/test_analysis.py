"""Analysis jobs end to end against the emulators, real ffmpeg, real Storage, a fake
analysis server speaking the protocol (signed POST /jobs, audio fetch, signed callbacks)
and a real HTTP server of the app (in this process, so the fake can call back; the
progress streams also through a real gunicorn)."""

from __future__ import annotations

import json
import math
import struct
import threading
import time
import wave
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import requests
from django.core.servers.basehttp import ThreadedWSGIServer, WSGIRequestHandler
from django.core.wsgi import get_wsgi_application

from devstack.emulators import free_port
from integrations.firebase import firestore_client, storage_bucket
from ops.sweep import sweep_run
from tests.fakes.analysis_server import RESULT, FakeAnalysisServer, new_secret, sign
from tests.helpers import error_of, invite, stored

WEBHOOK = "/api/webhooks/analysis"


# --- fixtures ----------------------------------------------------------------------------------

def wait_for(predicate, what: str, timeout: float = 60):
    """Poll until `predicate()` is truthy (a bound on waiting, not a timing assertion)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"gave up waiting for {what}")


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, *args):
        pass


@pytest.fixture
def app_server():
    """This process's Django app on a loopback port (the fake analysis server calls back
    here; Django settings changed by a test apply to it)."""
    port = free_port()
    server = ThreadedWSGIServer(("127.0.0.1", port), _QuietHandler, allow_reuse_address=True)
    server.daemon_threads = True
    server.set_app(get_wsgi_application())
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{port}"
    server.shutdown()
    server.server_close()


@pytest.fixture
def secret() -> str:
    return new_secret()


@pytest.fixture
def fake(secret):
    """The analysis server, not yet running (tests start it, or leave it down)."""
    server = FakeAnalysisServer(secret)
    yield server
    server.stop()


@pytest.fixture
def analysis_on(settings, secret, fake, app_server):
    settings.ANALYSIS_SERVER_URL = fake.url
    settings.ANALYSIS_WEBHOOK_SECRET = secret
    settings.ANALYSIS_CALLBACK_BASE_URL = app_server
    settings.ANALYSIS_AUTO = False
    return settings


@pytest.fixture
def analysis_off(settings, secret):
    """No analysis server: jobs stay queued; callbacks still verify with the secret."""
    settings.ANALYSIS_SERVER_URL = ""
    settings.ANALYSIS_WEBHOOK_SECRET = secret
    settings.ANALYSIS_CALLBACK_BASE_URL = "http://127.0.0.1:9"
    settings.ANALYSIS_AUTO = False
    return settings


def _tone_wav(path: Path, seconds: float = 2.0, frequency: int = 440) -> Path:
    rate = 16000
    frames = b"".join(struct.pack("<h", int(12000 * math.sin(2 * math.pi * frequency * n / rate)))
                      for n in range(int(rate * seconds)))
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(rate)
        out.writeframes(frames)
    return path


def upload(client, bearer, call_id: str, path: Path, uid: str = "alice"):
    with path.open("rb") as file:
        response = client.post("/api/recordings/upload",
                               data={"recording": file, "call_id": call_id},
                               headers=bearer(uid))
    assert response.status_code in (200, 201), response.content
    return response.json()


@pytest.fixture
def call(as_user) -> dict:
    return invite(as_user)


@pytest.fixture
def recording(client, bearer, call, tmp_path) -> dict:
    """A completed recording of alice's call with bob (an upload, through ffmpeg)."""
    return upload(client, bearer, call["callId"], _tone_wav(tmp_path / "call.wav"))


def job_doc(job_id: str) -> dict:
    return firestore_client().collection("analysisJobs").document(job_id).get().to_dict()


def recording_doc(recording_id: str) -> dict:
    return firestore_client().collection("recordings").document(recording_id).get().to_dict()


def analyze(as_user, recording_id: str, uid: str = "alice", body=None, **user):
    return as_user(uid, **user).post(f"/api/recordings/{recording_id}/analyze",
                                     body if body is not None else {})


def post_webhook(client, job_id: str, event: dict, secrets: list[str], *, msg_id=None,
                 at=None, body: str | None = None, path: str = WEBHOOK):
    body = body if body is not None else json.dumps(event, ensure_ascii=False)
    headers = sign(body, secrets, msg_id=msg_id, at=at)
    headers.pop("Content-Type")
    return client.post(f"{path}?job_id={job_id}", data=body.encode(),
                       content_type="application/json", headers=headers)


# --- start, dispatch, callbacks -----------------------------------------------------------------

def test_an_analysis_runs_from_start_to_the_calls_summary(as_user, client, analysis_on, fake,
                                                          recording, call):
    fake.start()
    started = analyze(as_user, recording["recordingId"])

    assert started.status_code == 202, started.content
    job_id = started.json()["jobId"]
    assert started.json()["status"] in ("processing", "completed")
    sent = fake.jobs[0]
    assert fake.unsigned_posts == 0  # our POST /jobs verified
    assert sent.payload["job_id"] == job_id
    assert sent.payload["callback_url"] == (
        f"{analysis_on.ANALYSIS_CALLBACK_BASE_URL}/api/webhooks/analysis?job_id={job_id}")
    assert sent.payload["language"] == "ko"
    assert sent.payload["spec"] == {"sampleRate": 16000, "channels": 1, "bitDepth": 16}
    assert abs(sent.payload["duration_ms"] - 2000) <= 100
    assert sent.done.wait(60)

    job = job_doc(job_id)
    assert (job["status"], job["progress"]) == ("completed", 100)
    assert [d.status for d in sent.deliveries] == [200, 200, 200]
    wav = storage_bucket().blob(recording_doc(recording["recordingId"])["storagePath"]) \
        .download_as_bytes()
    assert (sent.audio_status, sent.audio) == (200, wav)  # our job-scoped audio URL
    assert job["result"] == {"summary": RESULT["summary"], "metrics": RESULT["metrics"],
                             "language": "ko", "transcriber": RESULT["transcriber"],
                             "transcriptPath": f"analysis/{job_id}.json"}
    assert job["engine"] == "fake-analyzer/1" and job["attempts"] == 1
    transcript = json.loads(storage_bucket().blob(f"analysis/{job_id}.json").download_as_bytes())
    assert transcript["text"] == RESULT["transcript"]["text"]
    assert transcript["segments"] == RESULT["transcript"]["segments"]
    assert stored(call["callId"])["aiSummary"] == RESULT["summary"]
    assert stored(call["callId"])["analysisId"] == job_id
    assert recording_doc(recording["recordingId"])["analysisId"] == job_id

    read = as_user("bob").get(f"/api/analysis/{job_id}")
    assert read.status_code == 200
    view = read.json()
    assert (view["status"], view["progress"], view["message"]) == ("completed", 100, "분석 완료")
    assert view["result"]["summary"] == RESULT["summary"]
    assert view["completedAt"].endswith("Z") and view["createdAt"].endswith("Z")
    assert view["participants"] == ["alice", "bob"]

    again = analyze(as_user, recording["recordingId"], "bob")
    assert (again.status_code, again.json()["jobId"]) == (200, job_id)
    assert len(fake.jobs) == 1
    # The audio URL stops working once the job is final.
    assert requests.get(sent.payload["audio_url"], timeout=10).status_code == 410


def test_asking_twice_while_it_runs_is_one_job(as_user, analysis_off, recording):
    first = analyze(as_user, recording["recordingId"])
    second = analyze(as_user, recording["recordingId"], "bob")
    assert (first.status_code, second.status_code) == (202, 200)
    assert first.json()["jobId"] == second.json()["jobId"]
    assert first.json()["status"] == "queued"
    assert len(list(firestore_client().collection("analysisJobs").stream())) == 1


def test_an_admin_can_force_a_new_job_and_the_old_one_is_superseded(as_user, analysis_off,
                                                                    recording):
    first = analyze(as_user, recording["recordingId"]).json()["jobId"]
    refused = analyze(as_user, recording["recordingId"], body={"force": True})
    error_of(refused, 403, "admin_required")
    forced = analyze(as_user, recording["recordingId"], "root", {"force": True}, admin=True)
    assert forced.status_code == 202 and forced.json()["jobId"] != first
    assert job_doc(first)["status"] == "failed"
    assert job_doc(first)["error"]["code"] == "superseded"
    assert recording_doc(recording["recordingId"])["analysisId"] == forced.json()["jobId"]


def test_a_failed_job_is_replaced_when_asked_again(as_user, client, analysis_off, secret,
                                                   recording):
    job_id = analyze(as_user, recording["recordingId"]).json()["jobId"]
    post_webhook(client, job_id, {"type": "failed", "message": "decoder crashed"}, [secret])
    again = analyze(as_user, recording["recordingId"], "bob")
    assert again.status_code == 202 and again.json()["jobId"] != job_id


def test_a_recording_that_is_not_completed_cannot_be_analysed(as_user, analysis_off, recording):
    firestore_client().collection("recordings").document(recording["recordingId"]).update(
        {"status": "failed"})
    error = error_of(analyze(as_user, recording["recordingId"]), 409, "recording_not_ready")
    assert error["status"] == "failed"
    error_of(analyze(as_user, "no-such-recording"), 404, "recording_not_found")


def test_strangers_see_no_job(as_user, client, analysis_off, recording, bearer):
    error_of(analyze(as_user, recording["recordingId"], "mallory"), 403, "not_in_call")
    job_id = analyze(as_user, recording["recordingId"]).json()["jobId"]
    error_of(as_user("mallory").get(f"/api/analysis/{job_id}"), 403, "not_in_call")
    error_of(as_user("mallory").get(f"/api/analysis/{job_id}/events"), 403, "not_in_call")
    error_of(client.get(f"/api/analysis/{job_id}"), 401, "unauthenticated")
    error_of(as_user("alice").get("/api/analysis/nope"), 404, "analysis_not_found")
    assert as_user("root", admin=True).get(f"/api/analysis/{job_id}").status_code == 200
    # The job's audio needs its token.
    error_of(client.get(f"/api/analysis/{job_id}/audio?token=guess"), 403,
             "invalid_audio_token")


# --- callbacks ---------------------------------------------------------------------------------

@pytest.fixture
def queued_job(as_user, analysis_off, recording) -> str:
    return analyze(as_user, recording["recordingId"]).json()["jobId"]


def test_callbacks_without_a_valid_signature_are_refused(client, queued_job, secret):
    progress = {"type": "progress", "progress": 30}
    body = json.dumps(progress)
    other = new_secret()
    error_of(post_webhook(client, queued_job, progress, [other]), 401, "invalid_signature")
    stale = datetime.now(UTC) - timedelta(minutes=10)
    error_of(post_webhook(client, queued_job, progress, [secret], at=stale), 401,
             "invalid_signature")
    future = datetime.now(UTC) + timedelta(minutes=10)
    error_of(post_webhook(client, queued_job, progress, [secret], at=future), 401,
             "invalid_signature")
    # Signed for one body, sent with another.
    headers = sign(body, [secret])
    headers.pop("Content-Type")
    tampered = client.post(f"{WEBHOOK}?job_id={queued_job}",
                           data=body.replace("30", "90").encode(),
                           content_type="application/json", headers=headers)
    error_of(tampered, 401, "invalid_signature")
    unsigned = client.post(f"{WEBHOOK}?job_id={queued_job}", data=body.encode(),
                           content_type="application/json")
    error_of(unsigned, 401, "invalid_signature")
    garbage = client.post(f"{WEBHOOK}?job_id={queued_job}", data=body.encode(),
                          content_type="application/json",
                          headers={"webhook-id": "m1", "webhook-timestamp": "x",
                                   "webhook-signature": "nonsense"})
    error_of(garbage, 401, "invalid_signature")
    assert job_doc(queued_job)["progress"] == 0 and job_doc(queued_job)["seq"] == 1


def test_a_replayed_callback_changes_nothing(client, queued_job, secret):
    first = post_webhook(client, queued_job, {"type": "progress", "progress": 20}, [secret],
                         msg_id="msg_once")
    assert first.status_code == 200 and first.json()["applied"] is True
    seq = job_doc(queued_job)["seq"]
    replay = post_webhook(client, queued_job, {"type": "progress", "progress": 40}, [secret],
                          msg_id="msg_once")
    assert replay.status_code == 200
    assert (replay.json()["duplicate"], replay.json()["applied"]) == (True, False)
    assert (job_doc(queued_job)["progress"], job_doc(queued_job)["seq"]) == (20, seq)


def test_during_a_secret_rotation_one_valid_signature_of_two_is_enough(client, queued_job,
                                                                       secret, settings):
    old = new_secret()
    both = post_webhook(client, queued_job, {"type": "progress", "progress": 25},
                        [old, secret])
    assert both.status_code == 200 and job_doc(queued_job)["progress"] == 25
    # Our side rotating: the new secret first, the old one still accepted.
    settings.ANALYSIS_WEBHOOK_SECRET = f"{new_secret()} {secret}"
    assert post_webhook(client, queued_job, {"type": "progress", "progress": 30},
                        [secret]).status_code == 200


def test_callbacks_for_an_unknown_job_are_404(client, analysis_off, secret):
    response = post_webhook(client, "no-such-job", {"type": "progress", "progress": 5}, [secret])
    error_of(response, 404, "analysis_not_found")


def test_progress_never_goes_down_and_a_final_job_ignores_later_callbacks(client, queued_job,
                                                                         secret, call):
    for value in (10, 60, 40):
        assert post_webhook(client, queued_job, {"type": "progress", "progress": value},
                            [secret]).status_code == 200
    job = job_doc(queued_job)
    assert (job["status"], job["progress"]) == ("processing", 60)
    done = post_webhook(client, queued_job, {"type": "completed", "result": {"summary": ""}},
                        [secret], path="/api/webhooks/analysis-complete")
    assert done.status_code == 200 and done.json()["status"] == "completed"
    seq = job_doc(queued_job)["seq"]
    late = post_webhook(client, queued_job, {"type": "failed", "message": "late"}, [secret])
    assert late.status_code == 200 and late.json()["applied"] is False
    job = job_doc(queued_job)
    assert (job["status"], job["progress"], job["seq"]) == ("completed", 100, seq)
    assert job["result"]["transcriptPath"] is None
    assert "aiSummary" not in stored(call["callId"]) or not stored(call["callId"])["aiSummary"]
    assert stored(call["callId"])["analysisId"] == queued_job


def test_a_callback_that_is_not_an_event_is_400(client, queued_job, secret):
    error_of(post_webhook(client, queued_job, {"type": "exploded"}, [secret]), 400,
             "validation_error")
    error_of(post_webhook(client, queued_job, {"type": "progress", "progress": 300}, [secret]),
             400, "validation_error")
    error_of(post_webhook(client, queued_job, {}, [secret], body="not json"), 400,
             "validation_error")


# --- dispatch failures and the sweep -------------------------------------------------------------

def test_a_server_that_is_down_is_retried_by_the_sweep_until_it_is_up(as_user, analysis_on,
                                                                       fake, recording, call):
    started = analyze(as_user, recording["recordingId"])
    assert started.status_code == 202
    job_id = started.json()["jobId"]
    job = job_doc(job_id)
    assert (job["status"], job["attempts"]) == ("queued", 1)
    assert job["error"]["code"] == "analysis_unavailable"
    retry_at = job["nextAttemptAt"]

    early = sweep_run(timeout_seconds=60, now=retry_at - timedelta(seconds=1))
    assert early.parts["analysis"]["dispatched"] == {}
    assert job_doc(job_id)["attempts"] == 1  # not due yet

    fake.start()
    report = sweep_run(timeout_seconds=60, now=retry_at + timedelta(seconds=1))
    assert report.parts["analysis"]["dispatched"] in ({"processing": 1}, {"completed": 1})
    assert fake.jobs[0].done.wait(60)
    job = job_doc(job_id)
    assert (job["status"], job["attempts"], job["error"]) == ("completed", 2, None)
    assert stored(call["callId"])["aiSummary"] == RESULT["summary"]


def test_a_server_that_stays_down_fails_the_job_after_the_last_attempt(as_user, analysis_on,
                                                                       recording):
    analysis_on.ANALYSIS_MAX_ATTEMPTS = 3
    job_id = analyze(as_user, recording["recordingId"]).json()["jobId"]
    for attempt in (2, 3):
        due = job_doc(job_id)["nextAttemptAt"]
        sweep_run(timeout_seconds=60, now=due + timedelta(seconds=1))
        assert job_doc(job_id)["attempts"] == attempt
    job = job_doc(job_id)
    assert job["status"] == "failed" and job["error"]["code"] == "analysis_unavailable"
    assert "3 attempts" in job["message"]


def test_a_busy_server_is_retried_and_a_refusal_fails_at_once(as_user, analysis_on, fake,
                                                              recording):
    fake.start()
    fake.answer = "busy"
    job_id = analyze(as_user, recording["recordingId"]).json()["jobId"]
    job = job_doc(job_id)
    assert (job["status"], job["error"]["httpStatus"]) == ("queued", 429)

    fake.answer = "refuse"
    sweep_run(timeout_seconds=60, now=job["nextAttemptAt"] + timedelta(seconds=1))
    job = job_doc(job_id)
    assert (job["status"], job["error"]["code"]) == ("failed", "analysis_refused")
    assert job["message"] == fake.refusal and job["error"]["httpStatus"] == 400
    assert fake.jobs == []


@pytest.mark.parametrize("answer,http_status", [("busy", 429), ("broken", 503), ("hang", None)])
def test_busy_broken_or_silent_servers_leave_the_job_queued_for_a_retry(
        as_user, analysis_on, fake, recording, answer, http_status):
    analysis_on.ANALYSIS_DISPATCH_QUICK_TIMEOUT_SECONDS = 0.5
    fake.start()
    fake.answer = answer
    started = analyze(as_user, recording["recordingId"])
    assert (started.status_code, started.json()["status"]) == (202, "queued")
    job = job_doc(started.json()["jobId"])
    assert (job["attempts"], job["error"]["code"]) == (1, "analysis_unavailable")
    assert job["error"]["httpStatus"] == http_status
    assert job["nextAttemptAt"] > job["updatedAt"]


def test_the_sweep_fails_a_job_the_server_forgot(as_user, client, analysis_off, secret,
                                                 queued_job):
    post_webhook(client, queued_job, {"type": "progress", "progress": 10}, [secret])
    updated = job_doc(queued_job)["updatedAt"]
    sweep_run(timeout_seconds=60, now=updated + timedelta(
        seconds=analysis_off.ANALYSIS_STALE_SECONDS - 1))
    assert job_doc(queued_job)["status"] == "processing"
    sweep_run(timeout_seconds=60, now=updated + timedelta(
        seconds=analysis_off.ANALYSIS_STALE_SECONDS + 1))
    job = job_doc(queued_job)
    assert (job["status"], job["error"]["code"]) == ("failed", "stale")


# --- ANALYSIS_AUTO -------------------------------------------------------------------------------

def test_with_analysis_auto_an_upload_gets_its_job(client, bearer, analysis_on, fake, call,
                                                   tmp_path):
    analysis_on.ANALYSIS_AUTO = True
    fake.start()
    answer = upload(client, bearer, call["callId"], _tone_wav(tmp_path / "auto.wav"))
    job_id = recording_doc(answer["recordingId"])["analysisId"]
    assert job_doc(job_id)["requestedBy"] == "auto"
    assert fake.jobs[0].done.wait(60)
    assert job_doc(job_id)["status"] == "completed"
    assert stored(call["callId"])["analysisId"] == job_id


def test_with_analysis_auto_the_sweep_finds_the_recorders_recordings(analysis_off, call,
                                                                     recording):
    # The recorder process writes recordings/{id} itself: only the sweep can notice it.
    assert "analysisId" not in recording_doc(recording["recordingId"])
    assert sweep_run(timeout_seconds=60).parts["analysis"]["created"] == 0  # auto is off
    analysis_off.ANALYSIS_AUTO = True
    assert sweep_run(timeout_seconds=60).parts["analysis"]["created"] == 1
    job_id = recording_doc(recording["recordingId"])["analysisId"]
    assert job_doc(job_id)["status"] == "queued"  # no server configured: it waits
    assert sweep_run(timeout_seconds=60).parts["analysis"]["created"] == 0


# --- progress streams ----------------------------------------------------------------------------

def sse(response):
    """The events of a text/event-stream response, one dict per blank-line-ended block."""
    block: dict = {}
    for line in response.iter_lines(chunk_size=1, decode_unicode=True):
        if line == "":
            if block:
                yield block
            block = {}
        elif line.startswith(":"):
            block.setdefault("comments", []).append(line[1:].strip())
        else:
            name, _, value = line.partition(":")
            block[name] = value.removeprefix(" ")


# Both ways a stream is served: the event-stream server nginx routes /events to (uvicorn,
# ASGI, the choice in production and `make run`) and gunicorn, which still answers the path.
SERVERS = pytest.mark.parametrize("server", ["start_events_server", "start_server"])


@SERVERS
def test_progress_streams_in_order_and_ends(as_user, client, analysis_on, fake, recording,
                                            secret, server, request, securetoken):
    # The server first: forking while this process's threads talk gRPC (the fake fetching
    # audio from the in-process app) can abort the child before it execs.
    base = request.getfixturevalue(server)(ANALYSIS_STREAM_POLL_SECONDS="0.05")
    fake.stepwise = True
    fake.start()
    job_id = analyze(as_user, recording["recordingId"]).json()["jobId"]
    headers = {"Authorization": f"Bearer {securetoken.mint('bob')}"}
    response = requests.get(f"{base}/api/analysis/{job_id}/events", headers=headers,
                            stream=True, timeout=60)
    assert response.status_code == 200
    assert response.headers["Content-Type"].startswith("text/event-stream")
    assert response.headers["Cache-Control"] == "no-cache"
    assert response.headers["X-Accel-Buffering"] == "no"
    stream = sse(response)
    opening = next(stream)
    assert opening["retry"] == "3000" and opening["comments"]

    events = [next(stream)]  # the state as it is
    assert events[0]["event"] == "progress"
    for expected in (10, 50):
        fake.step()
        events.append(next(stream))
        assert json.loads(events[-1]["data"])["progress"] == expected
        # A late, lower progress report changes nothing and is never streamed.
        assert post_webhook(client, job_id, {"type": "progress", "progress": 5},
                            [secret]).json()["applied"] is False
    fake.step()
    events.append(next(stream))
    assert list(stream) == []  # the stream ends after the final event

    ids = [int(event["id"]) for event in events]
    progress = [json.loads(event["data"])["progress"] for event in events]
    assert ids == sorted(set(ids))
    assert progress == sorted(progress) and progress[-1] == 100
    assert [event["event"] for event in events].count("completed") == 1
    assert events[-1]["event"] == "completed"
    assert json.loads(events[-1]["data"])["result"]["summary"] == RESULT["summary"]

    # Resuming after the first progress event: only what is newer (the final state).
    resumed = requests.get(f"{base}/api/analysis/{job_id}/events", stream=True, timeout=60,
                           headers={**headers, "Last-Event-ID": str(ids[1])})
    later = [event for event in sse(resumed) if "event" in event]
    assert [(e["id"], e["event"]) for e in later] == [(str(ids[-1]), "completed")]
    # Resuming after the final event: 204, which tells EventSource to stop.
    done = requests.get(f"{base}/api/analysis/{job_id}/events", timeout=60,
                        headers={**headers, "Last-Event-ID": str(ids[-1])})
    assert done.status_code == 204


@SERVERS
def test_a_quiet_stream_sends_heartbeats_and_ends_at_its_maximum_life(analysis_off, queued_job,
                                                                      server, request,
                                                                      securetoken):
    base = request.getfixturevalue(server)(
        ANALYSIS_STREAM_POLL_SECONDS="0.05", ANALYSIS_STREAM_HEARTBEAT_SECONDS="0",
        ANALYSIS_STREAM_MAX_SECONDS="1")
    response = requests.get(f"{base}/api/analysis/{queued_job}/events", stream=True,
                            timeout=60,
                            headers={"Authorization": f"Bearer {securetoken.mint('alice')}"})
    blocks = list(sse(response))  # ends by itself although the job is still queued
    events = [block for block in blocks if "event" in block]
    assert [(e["id"], e["event"]) for e in events] == [("1", "progress")]
    assert json.loads(events[0]["data"])["status"] == "queued"
    assert any("heartbeat" in block.get("comments", []) for block in blocks)
    assert job_doc(queued_job)["status"] == "queued"


def test_the_event_server_lets_in_whom_the_api_lets_in(analysis_off, queued_job,
                                                       start_events_server, securetoken):
    base = start_events_server()
    url = f"{base}/api/analysis/{queued_job}/events"

    def status(headers: dict) -> tuple[int, str | None]:
        with requests.get(url, headers=headers, stream=True, timeout=60) as response:
            code = response.json()["error"]["code"] if response.status_code >= 400 else None
            return response.status_code, code

    assert status({}) == (401, "unauthenticated")
    assert status({"Authorization": "Bearer not-a-token"})[0] == 401
    assert status({"Authorization": f"Bearer {securetoken.mint('mallory')}"}) == (
        403, "not_in_call")
    assert status({"Authorization": f"Bearer {securetoken.mint('alice')}"}) == (200, None)
    assert status({"Authorization": f"Bearer {securetoken.mint('root', admin=True)}"}) == (
        200, None)


def _threads_of(pid: int) -> int:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(next(line.split()[1] for line in status.splitlines()
                    if line.startswith("Threads:")))


def test_open_streams_on_the_event_server_hold_no_thread_each(analysis_off,
                                                              start_events_server, securetoken):
    streams = 60  # far more than EVENTS_SYNC_THREADS (4) and the server's own threads
    jobs = firestore_client().collection("analysisJobs")
    for i in range(streams):
        jobs.document(f"job-{i}").set({"jobId": f"job-{i}", "participants": ["alice"],
                                       "status": "queued", "progress": 0, "seq": 1})
    base = start_events_server()
    server = start_events_server.procs[-1].pid
    headers = {"Authorization": f"Bearer {securetoken.mint('alice')}"}
    before = _threads_of(server)
    responses = [requests.get(f"{base}/api/analysis/job-{i}/events", headers=headers,
                              stream=True, timeout=60) for i in range(streams)]
    try:
        for response in responses:  # each stream is open and has sent its first event
            assert next(e for e in sse(response) if "event" in e)["id"] == "1"
        # The 4 shared sync threads and gRPC's and asyncio's own; Django's own ASGI handler
        # parks a thread per open stream (measured: 15 to 36 more for 40 streams).
        assert _threads_of(server) - before < 20
    finally:
        for response in responses:
            response.close()


def test_a_callback_naming_another_job_in_its_body_is_refused(client, queued_job, secret):
    response = post_webhook(client, queued_job,
                            {"type": "progress", "progress": 10, "job_id": "another"}, [secret])
    error_of(response, 400, "validation_error")
    assert job_doc(queued_job)["progress"] == 0


def test_the_seeds_analysis_complete_body_completes_the_job(client, queued_job, secret, call):
    response = post_webhook(client, queued_job, {"analysis_results": {
        "summary": "요약", "metrics": {"speechRatio": 0.5}}}, [secret],
        path="/api/webhooks/analysis-complete")
    assert response.status_code == 200 and response.json()["status"] == "completed"
    assert job_doc(queued_job)["result"]["metrics"] == {"speechRatio": 0.5}
    assert stored(call["callId"])["aiSummary"] == "요약"


def test_a_result_with_a_long_transcript_is_taken_whole(client, queued_job, secret):
    # Callbacks may be far larger than API_MAX_BODY_BYTES (64 KiB): a long call's transcript.
    segments = [{"start": n, "end": n + 1, "text": f"문장 {n} " * 5} for n in range(3000)]
    text = " ".join(segment["text"] for segment in segments)
    event = {"type": "completed", "result": {"summary": "긴 통화",
                                             "transcript": {"text": text, "segments": segments}}}
    response = post_webhook(client, queued_job, event, [secret])
    assert response.status_code == 200, response.content
    assert len(json.dumps(event, ensure_ascii=False).encode()) > 5 * 64 * 1024
    stored_transcript = json.loads(storage_bucket().blob(f"analysis/{queued_job}.json")
                                   .download_as_bytes())
    assert (stored_transcript["text"], len(stored_transcript["segments"])) == (text, 3000)


@pytest.mark.parametrize("env,message", [
    ({"ANALYSIS_WEBHOOK_SECRET": "not base64!"}, "ANALYSIS_WEBHOOK_SECRET must be"),
    ({"ANALYSIS_SERVER_URL": "http://analyzer:3200"}, "ANALYSIS_SERVER_URL needs"),
])
def test_a_half_configured_analysis_stops_start_up(tmp_path, env, message):
    from tests.helpers import PRODUCTION
    from tests.helpers import boot_settings as _boot

    result = _boot(tmp_path, **PRODUCTION, **env)
    assert result.returncode != 0 and message in result.stderr
    complete = {"ANALYSIS_SERVER_URL": "http://analyzer:3200",
                "ANALYSIS_WEBHOOK_SECRET": new_secret(),
                "ANALYSIS_CALLBACK_BASE_URL": "http://api:8000"}
    assert _boot(tmp_path, **PRODUCTION, **complete).returncode == 0


def test_a_start_without_a_body_is_a_plain_start(client, bearer, analysis_off, recording):
    response = client.generic("POST", f"/api/recordings/{recording['recordingId']}/analyze",
                              b"", headers=bearer("alice"))
    assert response.status_code == 202, response.content
    assert set(response.json()) >= {"jobId", "status", "progress"}


def test_a_start_with_a_body_that_is_not_an_object_is_400(as_user, analysis_off, recording):
    error_of(analyze(as_user, recording["recordingId"], body={"force": "very"}), 400,
             "validation_error")
    error_of(analyze(as_user, recording["recordingId"], body="[1"), 400, "validation_error")


def test_racing_starts_create_one_job(analysis_off, app_server, recording, securetoken):
    from concurrent.futures import ThreadPoolExecutor

    url = f"{app_server}/api/recordings/{recording['recordingId']}/analyze"

    def start(uid):
        return requests.post(url, json={}, timeout=60,
                             headers={"Authorization": f"Bearer {securetoken.mint(uid)}"})

    with ThreadPoolExecutor(6) as pool:
        answers = list(pool.map(start, ["alice", "bob"] * 3))
    assert sorted(a.status_code for a in answers) == [200] * 5 + [202]
    assert len({a.json()["jobId"] for a in answers}) == 1
    assert len(list(firestore_client().collection("analysisJobs").stream())) == 1
