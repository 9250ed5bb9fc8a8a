"""A recording analysed for real: an app uploads Korean speech through gunicorn, ANALYSIS_AUTO
makes a job, the built-in analyzer (`python -m analyzer`, Vosk's Korean model) measures and
transcribes it and reports back through signed webhooks, and an SSE client follows it."""

from __future__ import annotations

import base64
import json
import os
import re
import secrets
import subprocess
import sys
import wave

import httpx
import pytest
from google.cloud.firestore import FieldFilter

from devstack.emulators import _http_ok, free_port, spawn, stop, wait_until
from integrations.firebase import firestore_client
from media.audio import convert_to_wav
from tests.helpers import invite

SPEECH_KO = ("안녕하세요 어머니. 오늘 날씨가 참 좋네요. 점심은 드셨어요? "
             "이번 주 일요일에 찾아갈게요.")
LEAD_S = TRAIL_S = 2.0


def _korean_speech(directory) -> tuple:
    """(WAV path, seconds of speech in it): espeak-ng's Korean with silence around it."""
    spoken = directory / "espeak.wav"
    subprocess.run(["espeak-ng", "-v", "ko", "-s", "140", "-w", str(spoken), SPEECH_KO],
                   check=True)
    sixteen = convert_to_wav(src=spoken, dst=directory / "espeak16.wav").path
    with wave.open(str(sixteen)) as wav:
        pcm = wav.readframes(wav.getnframes())
    silence = lambda s: b"\x00\x00" * int(16000 * s)  # noqa: E731
    path = directory / "speech.wav"
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(16000)
        out.writeframes(silence(LEAD_S) + pcm + silence(TRAIL_S))
    return path, len(pcm) / 32000


@pytest.fixture
def analyzer(tmp_path):
    """The built-in analyzer on a free loopback port, with a throwaway secret."""
    secret = "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()
    port, log = free_port(), tmp_path / "analyzer.log"
    proc = spawn([sys.executable, "-m", "analyzer"], log_path=log, env={
        **os.environ, "ANALYZER_HOST": "127.0.0.1", "ANALYZER_PORT": str(port),
        "ANALYSIS_WEBHOOK_SECRET": secret, "ANALYZER_WORK_DIR": str(tmp_path / "work")})
    base = f"http://127.0.0.1:{port}"
    try:
        wait_until(lambda: _http_ok(f"{base}/health"), timeout=120, what="the analyzer",
                   proc=proc, log_path=log)
        yield base, secret
    finally:
        stop(proc, grace=30)


def _events(response: httpx.Response) -> list[dict]:
    """The events of a text/event-stream, until the server closes it."""
    events, current = [], {}
    for line in response.iter_lines():
        if line == "":
            if "event" in current:
                events.append({**current, "data": json.loads(current["data"])})
            current = {}
        elif not line.startswith(":"):
            name, _, value = line.partition(":")
            current[name] = value.strip()
    return events


def test_an_uploaded_korean_recording_is_analysed_and_followed_live(
        as_user, bearer, start_server, start_events_server, analyzer, tmp_path):
    analyzer_url, secret = analyzer
    bind = f"127.0.0.1:{free_port()}"
    events_base = start_events_server()  # what nginx routes the /events path to
    base = start_server(GUNICORN_BIND=bind, ANALYSIS_SERVER_URL=analyzer_url,
                        ANALYSIS_WEBHOOK_SECRET=secret, ANALYSIS_AUTO="1",
                        ANALYSIS_CALLBACK_BASE_URL=f"http://{bind}")
    call = invite(as_user)
    speech, speech_seconds = _korean_speech(tmp_path)
    alice = bearer("alice")
    with httpx.Client(base_url=base, timeout=60) as http:
        with speech.open("rb") as file:
            uploaded = http.post("/api/recordings/upload", headers=alice,
                                 data={"call_id": call["callId"]},
                                 files={"recording": ("call.wav", file, "audio/wav")})
        assert uploaded.status_code == 201, uploaded.text
        recording_id = uploaded.json()["recordingId"]
        [job] = [snap.to_dict() for snap in firestore_client().collection("analysisJobs")
                 .where(filter=FieldFilter("recordingId", "==", recording_id)).stream()]  # made by ANALYSIS_AUTO
        with http.stream("GET", f"{events_base}/api/analysis/{job['jobId']}/events",
                         headers=alice,
                         timeout=httpx.Timeout(30, read=120)) as stream:
            assert stream.headers["content-type"].startswith("text/event-stream")
            events = _events(stream)  # returns when the server closes the stream

        progress = [event["data"]["progress"] for event in events]
        assert progress == sorted(progress), progress
        kinds = [e["event"] for e in events]
        assert kinds.count("completed") == 1 and "progress" in kinds, kinds
        assert events[-1]["event"] == "completed"
        seqs = [int(event["id"]) for event in events]
        assert seqs == sorted(set(seqs))

        done = http.get(f"/api/analysis/{job['jobId']}", headers=alice).json()
    assert (done["status"], done["progress"]) == ("completed", 100)
    metrics = done["result"]["metrics"]
    assert metrics["speechSec"] == pytest.approx(speech_seconds, rel=0.10)
    transcript = json.loads(_stored_transcript(done["result"]["transcriptPath"]))
    assert re.search(r"[\uac00-\ud7a3]", transcript["text"]), transcript["text"]
    total = speech_seconds + LEAD_S + TRAIL_S
    for segment in transcript["segments"]:
        assert 0 <= segment["start"] <= segment["end"] <= total + 0.1
    assert firestore_client().collection("calls").document(call["callId"]).get().get(
        "analysisId") == job["jobId"]


def _stored_transcript(path: str) -> str:
    from integrations.firebase import storage_bucket

    return storage_bucket().blob(path).download_as_text()
