"""The recorder bot service (`python -m recorder`) with real headless Chromium, recording a
local tone (Agora cannot be reached from here, so only its join timeout is exercised)."""

from __future__ import annotations

import array
import asyncio
import json
import os
import re
import signal
import subprocess
import time
import urllib.error
import urllib.request
import wave
from pathlib import Path

import pytest

from devstack.emulators import wait_until
from integrations.firebase import firestore_client
from tests.helpers import storage_down

RECORDING_SECONDS = 5.0


def decoded_seconds(path: Path) -> float:
    """Decode the whole file with ffmpeg; the last `time=` is the audio's duration."""
    result = subprocess.run(["ffmpeg", "-nostdin", "-i", str(path), "-f", "null", "-"],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr[-2000:]
    times = re.findall(r"time=(\d+):(\d+):(\d+(?:\.\d+)?)", result.stderr)
    assert times, result.stderr[-2000:]
    h, m, s = times[-1]
    return int(h) * 3600 + int(m) * 60 + float(s)


def audio_codec(path: Path) -> str:
    out = subprocess.run(["ffprobe", "-v", "error", "-select_streams", "a:0", "-show_entries",
                          "stream=codec_name", "-of", "csv=p=0", str(path)],
                         capture_output=True, text=True, timeout=30, check=True).stdout
    return out.strip()


def dominant_hz(path: Path) -> float:
    """The frequency of a pure tone, from the zero crossings of its decoded samples."""
    raw = subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-i", str(path), "-f", "s16le",
                          "-ac", "1", "-ar", "16000", "-"], capture_output=True, timeout=60,
                         check=True).stdout
    samples = array.array("h", raw)
    crossings = sum(1 for a, b in zip(samples, samples[1:], strict=False) if (a < 0) != (b < 0))
    return crossings / 2 / (len(samples) / 16000)


def downloaded(url: str, folder: Path) -> Path:
    """The stored file behind `url`, saved in `folder`."""
    path = folder / f"downloaded-{len(list(folder.iterdir()))}"
    with urllib.request.urlopen(url, timeout=30) as response:
        path.write_bytes(response.read())
    return path


def media_left(recorder) -> list[str]:
    """Files in the recordings directory but the JSON sidecars."""
    return sorted(p.name for p in recorder.recordings.iterdir() if p.suffix != ".json")


def test_tone_session_records_a_webm_of_the_recorded_length(start_recorder, tmp_path):
    # The call the API created: the recording's parties come from it, never the channel.
    firestore_client().collection("calls").document("call-1").set(
        {"callId": "call-1", "groupId": "group1", "callerId": "alice", "receiverId": "bob",
         "channelName": "group1_alice_bob_1700000000000", "status": "accepted"})
    recorder = start_recorder()
    status, started = recorder.call("POST", "/sessions", {
        "channel": "group1_alice_bob_1700000000000", "uid": 999999, "callId": "call-1",
        "source": "tone:440"})
    assert status == 201, started
    assert started["status"] == "recording"
    assert re.fullmatch(r"group1_alice_bob_1700000000000_\d{4}-\d\d-\d\dT\d\d-\d\d-\d\d\.webm",
                        started["filename"])
    status, listed = recorder.call("GET", "/sessions")
    assert [s["sid"] for s in listed["sessions"]] == [started["sid"]]

    time.sleep(RECORDING_SECONDS)  # the recording itself
    webm = recorder.recordings / started["filename"]
    assert audio_codec(webm) == "opus"
    status, stopped = recorder.call("POST", f"/sessions/{started['sid']}/stop")

    assert status == 200, stopped
    assert stopped["status"] == "stopped"
    # No answer names a file on the server: the file is found by its name.
    for answer in (started, listed, stopped, recorder.call("GET", f"/sessions/{started['sid']}")[1]):
        assert "path" not in answer and str(recorder.recordings) not in json.dumps(answer)
    assert stopped["bytes"] > 0
    # Lengths are checked against each other, not against the test's sleep: on a busy
    # machine the page starts late, but what was recorded must be consistent.
    recorded_s = stopped["durationMs"] / 1000
    assert 1 <= recorded_s <= RECORDING_SECONDS + 2
    sidecar = recorder.sidecar(started["filename"])
    assert sidecar["state"] == "completed"
    assert (sidecar["sid"], sidecar["callId"], sidecar["uid"]) == (started["sid"], "call-1", 999999)
    # One chunk per ~1 s slice (MediaRecorder's timeslice; the last one may be short).
    assert sidecar["chunks"] == stopped["chunks"]
    assert abs(stopped["chunks"] - recorded_s) <= 1.5
    assert "token" not in sidecar

    # The seed's stop answer, and the speech-ready WAV in Storage with its Firestore document.
    wav_name = started["filename"].replace(".webm", ".wav")
    assert (stopped["filename"], stopped["format"]) == (wav_name, "wav")
    assert (stopped["groupId"], stopped["user1"], stopped["user2"]) == ("group1", "alice", "bob")
    assert stopped["duration"] / 1000 == pytest.approx(recorded_s, abs=0.1)
    firebase = stopped["firebase"]
    assert firebase["storagePath"] == f"recordings/{wav_name}"
    assert firebase["firestoreId"] == started["sid"]
    stored_wav = downloaded(firebase["url"], tmp_path)
    with wave.open(str(stored_wav)) as wav:
        assert (wav.getframerate(), wav.getnchannels(), wav.getsampwidth()) == (16000, 1, 2)
        assert wav.getnframes() / 16 == pytest.approx(stopped["duration"], abs=1)  # ms
    assert stored_wav.read_bytes()[36:40] == b"data"  # a 44-byte header
    assert dominant_hz(stored_wav) == pytest.approx(440, rel=0.02)
    document = firestore_client().collection("recordings").document(started["sid"]).get()
    assert document.get("status") == "completed" and document.get("format") == "wav"
    assert document.get("spec") == {"sampleRate": 16000, "channels": 1, "bitDepth": 16}
    assert document.get("fileSize") == stored_wav.stat().st_size
    assert document.get("url") == firebase["url"] and document.get("source") == "recorder"
    # Stored and completed: the local WebM, remux and WAV are gone, the sidecar stays.
    assert media_left(recorder) == []

    again_status, again = recorder.call("POST", f"/sessions/{started['sid']}/stop")
    assert (again_status, again) == (200, stopped)
    assert recorder.call("GET", "/sessions") == (200, {"sessions": []})


def test_two_concurrent_tone_sessions_stay_separate_files(start_recorder, tmp_path):
    recorder = start_recorder()
    sessions = {}
    for hz in (440, 880):
        status, body = recorder.call("POST", "/sessions", {"channel": f"g_tone{hz}_x",
                                                           "source": f"tone:{hz}"})
        assert status == 201, body
        sessions[hz] = body
    status, listed = recorder.call("GET", "/sessions")
    assert len(listed["sessions"]) == 2

    time.sleep(3)  # both record at once
    results = {hz: recorder.call("POST", f"/sessions/{s['sid']}/stop")[1]
               for hz, s in sessions.items()}

    assert sessions[440]["filename"] != sessions[880]["filename"]
    for hz, result in results.items():
        assert "path" not in result
        stored = downloaded(result["firebase"]["url"], tmp_path)
        assert dominant_hz(stored) == pytest.approx(hz, rel=0.05)


def test_every_endpoint_but_health_needs_the_secret(start_recorder):
    recorder = start_recorder()
    assert recorder.call("GET", "/health", secret=None)[0] == 200
    for method, path, body in [("GET", "/sessions", None),
                               ("POST", "/sessions", {"channel": "c", "source": "tone:440"}),
                               ("POST", "/sessions/nope/stop", None)]:
        for secret in (None, "wrong"):
            status, answer = recorder.call(method, path, body, secret=secret)
            assert status == 401
            assert answer["error"]["code"] == "unauthorized"
    assert recorder.call("GET", "/sessions") == (200, {"sessions": []})


def test_bad_input_and_unknown_sessions_answer_json_errors(start_recorder):
    recorder = start_recorder()
    status, answer = recorder.call("POST", "/sessions", {"channel": "../etc", "source": "tone:440"})
    assert (status, answer["error"]["code"]) == (400, "bad_request")
    status, answer = recorder.call("POST", "/sessions", {"channel": "c", "source": "tone:5"})
    assert (status, answer["error"]["code"]) == (400, "bad_request")
    status, answer = recorder.call("POST", "/sessions/no-such-sid/stop")
    assert (status, answer["error"]["code"]) == (404, "session_not_found")


def test_unreachable_agora_fails_the_start_with_join_timeout_and_leaves_nothing(start_recorder):
    recorder = start_recorder(AGORA_APP_ID="0123456789abcdef0123456789abcdef",
                              RECORDER_JOIN_TIMEOUT_SECONDS="3")

    status, answer = recorder.call("POST", "/sessions", {
        "channel": "group1_alice_bob_1", "uid": 999999, "token": None, "source": "agora"})

    assert status == 504, answer
    assert answer["error"]["code"] == "agora_join_timeout"
    assert recorder.call("GET", "/sessions") == (200, {"sessions": []})
    health = recorder.call("GET", "/health")[1]
    assert (health["sessions"], health["contexts"], health["browser"]) == (0, 0, "up")
    assert list(recorder.recordings.iterdir()) == []


def test_a_recording_survives_a_recorder_crash_and_is_recovered(start_recorder):
    recorder = start_recorder()
    status, started = recorder.call("POST", "/sessions", {"channel": "g_crash_x",
                                                          "source": "tone:440"})
    assert status == 201, started
    wait_until(lambda: recorder.sidecar(started["filename"])["chunks"] >= 3, timeout=30,
               what="three chunks on disk")

    recorder.kill_hard()

    webm = recorder.recordings / started["filename"]
    assert recorder.sidecar(started["filename"])["state"] == "recording"
    assert decoded_seconds(webm) >= 2.0  # ffmpeg decodes what the crash left (exit 0)
    left = webm.stat().st_size

    restarted = start_recorder()  # same directory; recovery runs before it answers /health
    sidecar = restarted.sidecar(started["filename"])
    assert sidecar["state"] in ("stopped", "processing", "completed")
    assert sidecar["recovered"] is True
    assert sidecar["bytes"] == left
    assert sidecar["durationMs"] >= 2000
    status, result = restarted.call("POST", f"/sessions/{started['sid']}/stop")
    assert (status, result["status"], result["recovered"]) == (200, "stopped", True)
    # ...and the partial recording is processed and stored like any other.
    wait_until(lambda: restarted.sidecar(started["filename"])["state"] == "completed",
               timeout=60, what="the recovered recording stored")
    document = firestore_client().collection("recordings").document(started["sid"]).get()
    assert document.get("status") == "completed" and document.get("duration") >= 2000
    assert media_left(restarted) == []


def test_recovery_hands_each_unfinished_recording_to_on_stopped_once(tmp_path, monkeypatch):
    from recorder.config import Settings
    from recorder.sessions import RecorderService

    (tmp_path / "c_2026-01-01T00-00-00.webm").write_bytes(b"")
    (tmp_path / "c_2026-01-01T00-00-00.json").write_text(json.dumps(
        {"sid": "s1", "channel": "c", "uid": 1, "callId": "k", "source": "agora",
         "state": "recording", "chunks": 0, "bytes": 0}))
    (tmp_path / "d_2026-01-01T00-00-00.json").write_text(json.dumps(
        {"sid": "s2", "channel": "d", "state": "stopped", "chunks": 0, "bytes": 0}))
    monkeypatch.setenv("RECORDER_SECRET", "x")
    monkeypatch.setenv("RECORDINGS_DIR", str(tmp_path))
    calls = []

    async def run():
        service = RecorderService(Settings.from_env())
        service.on_stopped = lambda session: calls.append((session.sid, session.recovered))
        await service.recover()
        await asyncio.gather(*service._tasks)

    asyncio.run(run())

    assert calls == [("s1", True)]
    assert json.loads((tmp_path / "c_2026-01-01T00-00-00.json").read_text())["state"] == "stopped"


def test_chunks_are_written_in_order_once_and_a_gap_is_noted(tmp_path):
    from recorder.sink import ChunkSink, utc_now

    sink = ChunkSink.create(tmp_path, channel="c", started_at=utc_now(), meta={"sid": "s"})
    assert [sink.append(0, b"a"), sink.append(1, b"b"), sink.append(1, b"b"),
            sink.append(3, b"d")] == ["written", "written", "duplicate", "written"]
    assert sink.path.read_bytes() == b"abd"
    saved = json.loads(sink.sidecar_path.read_text())
    assert (saved["chunks"], saved["bytes"], saved["gaps"]) == (3, 3, [[2, 2]])


def test_sigterm_stops_every_session_cleanly_and_exits_0(start_recorder):
    recorder = start_recorder()
    status, started = recorder.call("POST", "/sessions", {"channel": "g_term_x",
                                                          "source": "tone:440"})
    assert status == 201, started
    wait_until(lambda: recorder.sidecar(started["filename"])["chunks"] >= 2, timeout=30,
               what="two chunks on disk")

    recorder.proc.send_signal(signal.SIGTERM)  # the main process only, as Docker does

    assert recorder.proc.wait(timeout=60) == 0
    sidecar = recorder.sidecar(started["filename"])
    assert (sidecar["state"], sidecar["stopReason"]) == ("completed", "shutdown")
    assert sidecar["bytes"] > 0 and sidecar["durationMs"] >= 1500
    assert media_left(recorder) == []  # stored before the exit, so nothing is kept


def test_a_session_stops_by_itself_at_the_maximum_duration(start_recorder):
    recorder = start_recorder(RECORDER_MAX_SECONDS="2")
    status, started = recorder.call("POST", "/sessions", {"channel": "g_max_x",
                                                          "source": "tone:440"})
    assert status == 201, started

    wait_until(lambda: recorder.call("GET", f"/sessions/{started['sid']}")[1]["status"]
               == "stopped", timeout=30, what="the auto-stop")

    result = recorder.call("GET", f"/sessions/{started['sid']}")[1]
    assert result["stopReason"] == "max_duration"
    wait_until(lambda: recorder.sidecar(started["filename"])["state"] == "completed",
               timeout=60, what="the auto-stopped recording stored")
    document = firestore_client().collection("recordings").document(started["sid"]).get()
    assert document.get("duration") >= 1500


def test_a_fixture_file_is_recorded_until_it_ends(start_recorder, tmp_path):
    fixtures = tmp_path / "fixtures"
    fixtures.mkdir()
    subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-f", "lavfi", "-i",
                    "sine=frequency=660:duration=2", "-ar", "48000", str(fixtures / "voice.wav")],
                   check=True, timeout=30)
    recorder = start_recorder(RECORDER_FIXTURES_DIR=str(fixtures))
    status, started = recorder.call("POST", "/sessions", {"channel": "g_fixture_x",
                                                          "source": "/fixtures/voice.wav"})
    assert status == 201, started

    wait_until(lambda: recorder.call("GET", f"/sessions/{started['sid']}")[1]["status"]
               == "stopped", timeout=30, what="the stop at the fixture's end")

    result = recorder.call("GET", f"/sessions/{started['sid']}")[1]
    assert result["stopReason"] == "source_ended"
    wait_until(lambda: recorder.sidecar(started["filename"])["state"] == "completed",
               timeout=60, what="the recording stored")
    document = firestore_client().collection("recordings").document(started["sid"]).get()
    assert dominant_hz(downloaded(document.get("url"), tmp_path)) == pytest.approx(660, rel=0.05)


def test_idle_auto_stop_is_for_agora_sessions_nobody_is_in(tmp_path, monkeypatch):
    from recorder.config import Settings
    from recorder.sessions import RecorderService, Session
    from recorder.sink import ChunkSink, utc_now

    monkeypatch.setenv("RECORDER_SECRET", "x")
    monkeypatch.setenv("RECORDER_MAX_IDLE_SECONDS", "30")
    monkeypatch.setenv("RECORDER_MAX_SECONDS", "100")
    service = RecorderService(Settings.from_env())

    def session(source: str, *, users: int, quiet_for: float, age: float = 50) -> Session:
        sink = ChunkSink.create(tmp_path, channel="c", started_at=utc_now(), meta={})
        return Session(sid="s", channel="c", uid=1, call_id=None, source=source, sink=sink,
                       state="recording", remote_users=users, started_mono=1000 - age,
                       last_presence=1000 - quiet_for)

    reason = service.auto_stop_reason
    assert reason(session("agora", users=0, quiet_for=31), now=1000) == "idle"
    assert reason(session("agora", users=0, quiet_for=29), now=1000) is None
    assert reason(session("agora", users=1, quiet_for=300), now=1000) is None
    assert reason(session("tone:440", users=0, quiet_for=300), now=1000) is None
    assert reason(session("tone:440", users=0, quiet_for=0, age=100), now=1000) == "max_duration"


def test_storage_down_at_stop_keeps_the_files_and_the_next_start_stores_them(start_recorder):
    recorder = start_recorder(**storage_down())
    status, started = recorder.call("POST", "/sessions", {"channel": "group1_alice_bob_1",
                                                          "source": "tone:440"})
    assert status == 201, started
    wait_until(lambda: recorder.sidecar(started["filename"])["chunks"] >= 2, timeout=30,
               what="two chunks on disk")
    status, stopped = recorder.call("POST", f"/sessions/{started['sid']}/stop")
    assert status == 200
    assert (stopped["status"], stopped["firebase"], stopped["error"]) == (
        "failed", None, "storage_unavailable")
    sidecar = recorder.sidecar(started["filename"])
    assert (sidecar["state"], sidecar["retryCount"]) == ("failed", 1)
    stem = started["filename"].removesuffix(".webm")
    assert media_left(recorder) == sorted([f"{stem}.webm", f"{stem}.remux.webm", f"{stem}.wav"])
    document = firestore_client().collection("recordings").document(started["sid"])
    assert document.get().get("status") == "failed"
    recorder.proc.send_signal(signal.SIGTERM)
    assert recorder.proc.wait(timeout=60) == 0

    restarted = start_recorder()  # Storage is back
    wait_until(lambda: restarted.sidecar(started["filename"])["state"] == "completed",
               timeout=60, what="the retried upload")
    stored = document.get()
    assert (stored.get("status"), stored.get("format")) == ("completed", "wav")
    with urllib.request.urlopen(stored.get("url"), timeout=30) as response:
        assert response.read(4) == b"RIFF"
    assert media_left(restarted) == []
    # No call: the channel name is not parsed for parties, and the document says so.
    assert (stored.get("groupId"), stored.get("user1"), stored.get("user2"),
            stored.get("participants"), stored.get("partiesKnown")) == (
        None, None, None, [], False)


def test_the_next_start_removes_media_left_of_recordings_already_stored(start_recorder,
                                                                        tmp_path):
    """A recorder that stopped after storing a recording but before removing its files:
    the next start removes them when the document says completed, and keeps them else."""
    folder = tmp_path / "recordings"
    folder.mkdir()
    for sid in ("s-stored", "s-unknown"):
        stem = f"g_{sid}_x_2026-01-01T00-00-00"
        for suffix in (".webm", ".remux.webm", ".wav"):
            (folder / f"{stem}{suffix}").write_bytes(b"media")
        (folder / f"{stem}.json").write_text(json.dumps(
            {"sid": sid, "channel": f"g_{sid}_x", "state": "completed", "recordingId": sid}))
    firestore_client().collection("recordings").document("s-stored").set(
        {"status": "completed", "storagePath": "recordings/x.wav"})

    recorder = start_recorder()

    assert recorder.recordings == folder
    stem = "g_s-unknown_x_2026-01-01T00-00-00"
    assert media_left(recorder) == sorted([f"{stem}.webm", f"{stem}.remux.webm", f"{stem}.wav"])
    assert recorder.sidecar("g_s-stored_x_2026-01-01T00-00-00.webm")["state"] == "completed"
    health = recorder.call("GET", "/health")[1]
    assert health["disk"]["recordingsBytes"] == sum(
        p.stat().st_size for p in folder.iterdir())
    assert health["disk"]["freeBytes"] > 0


def test_a_stop_wait_that_is_not_a_number_of_seconds_is_400(start_recorder):
    recorder = start_recorder()
    for wait in ("soon", 0, -1, None, [30]):
        status, answer = recorder.call("POST", "/sessions/no-such-session/stop",
                                       {"wait": wait})
        assert (status, answer["error"]["code"]) == (400, "bad_request"), (wait, answer)
    status, answer = recorder.call("POST", "/sessions/no-such-session/stop", {"wait": 5})
    assert (status, answer["error"]["code"]) == (404, "session_not_found")


def _renderers(root: int) -> list[tuple[int, int]]:
    """(PSS kB, pid) of every Chromium renderer process under `root`."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            parents[int(entry.name)] = int(stat[stat.rindex(")") + 2:].split()[1])
    tree, grew = {root}, True
    while grew:
        more = {pid for pid, ppid in parents.items() if ppid in tree} - tree
        tree |= more
        grew = bool(more)
    found = []
    for pid in tree:
        try:
            if b"--type=renderer" not in Path(f"/proc/{pid}/cmdline").read_bytes():
                continue
            rollup = Path(f"/proc/{pid}/smaps_rollup").read_text()
        except OSError:
            continue
        found.append((int(re.search(r"^Pss:\s+(\d+)", rollup, re.M).group(1)), pid))
    return found


def test_a_killed_renderer_ends_only_the_sessions_of_its_context(start_recorder):
    recorder = start_recorder(RECORDER_SESSIONS_PER_CONTEXT="2")
    started = []
    for i in range(4):  # two contexts of two sessions
        status, body = recorder.call("POST", "/sessions", {"channel": f"g_shard{i}_x",
                                                           "source": f"tone:{440 + 110 * i}"})
        assert status == 201, body
        started.append(body)
    assert recorder.call("GET", "/health")[1]["contexts"] == 2
    sids = [s["sid"] for s in started]
    wait_until(lambda: all(recorder.sidecar(s["filename"])["chunks"] >= 3 for s in started),
               timeout=60, what="three chunks of every session")
    before = {s["sid"]: recorder.sidecar(s["filename"])["chunks"] for s in started}

    def status(sid: str) -> dict:
        return recorder.call("GET", f"/sessions/{sid}")[1]

    def any_ended() -> bool:
        return any(status(sid)["status"] != "recording" for sid in sids)

    # Each context has two renderers of about the same size: the one its pages share and one
    # that only keeps its first about:blank (killing that ends nothing). Kill them, biggest
    # first, until one takes sessions with it.
    for _, victim in sorted(_renderers(recorder.proc.pid), reverse=True):
        os.kill(victim, signal.SIGKILL)
        deadline = time.monotonic() + 10
        while not any_ended() and time.monotonic() < deadline:
            time.sleep(0.5)
        if any_ended():
            break
    wait_until(lambda: any(status(sid)["status"] == "stopped" for sid in sids), timeout=60,
               what="a session ending with the renderer")
    time.sleep(3)  # the other context's sessions go on recording meanwhile
    ended = [sid for sid in sids if status(sid)["status"] == "stopped"]
    assert ended in (sids[:2], sids[2:]), ended  # exactly the two of one context
    for sid in ended:
        result = status(sid)
        assert result["stopReason"] == "renderer_crashed"
        # Everything uploaded before the crash is in the stored recording.
        assert result["chunks"] >= before[sid] and result["durationMs"] >= (
            before[sid] - 1) * 1000, result
    for s in started:
        if s["sid"] not in ended:
            assert status(s["sid"])["status"] == "recording"
            assert recorder.sidecar(s["filename"])["chunks"] > before[s["sid"]] + 1
            stopped = recorder.call("POST", f"/sessions/{s['sid']}/stop")[1]
            assert stopped["stopReason"] == "requested"
