"""The recording library over HTTP against the emulators, real ffmpeg and real Storage:
uploads (de-duplicated, converted, kept when Storage fails), lookups, playback with HTTP
Range, downloads, the admin listing, upload statistics and retries."""

from __future__ import annotations

import email
import os
import subprocess
import urllib.parse
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import requests
from django.conf import settings
from django.test import RequestFactory
from hypothesis import given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from api import delivery
from integrations.firebase import firestore_client, storage_bucket
from library.lookups import MediaFile
from media import audio
from ops.sweep import sweep_run
from tests.helpers import (
    document,
    error_of,
    invite,
    leftovers,
    objects,
    sha256_of,
    storage_down,
    stored,
    upload,
)

KOREAN_NAME = "엄마와 통화 11월.m4a"


def _ffmpeg(*args: str) -> None:
    subprocess.run(["ffmpeg", "-hide_banner", "-loglevel", "error", "-y", *args], check=True)


def _tone(seconds: float, frequency: int) -> list[str]:
    return ["-f", "lavfi", "-i", f"sine=frequency={frequency}:duration={seconds}:sample_rate=44100"]


@pytest.fixture(scope="module")
def media(tmp_path_factory) -> dict[str, Path]:
    """What phones upload (each a 3 s tone, each different), and what they must not."""
    folder = tmp_path_factory.mktemp("uploads")
    made = {
        "m4a": (["-c:a", "aac", "-b:a", "64k"], "call.m4a", 440),
        "mp3": (["-c:a", "libmp3lame", "-b:a", "64k"], "call.mp3", 550),
        "ogg": (["-c:a", "libvorbis"], "call.ogg", 660),
        "wav": (["-c:a", "pcm_s16le", "-ac", "2"], "call.wav", 770),
        "webm": (["-c:a", "libopus", "-b:a", "32k"], "call.webm", 880),
    }
    files = {}
    for kind, (codec, name, frequency) in made.items():
        files[kind] = folder / name
        _ffmpeg(*_tone(3, frequency), *codec, str(files[kind]))
    files["random"] = folder / "random.m4a"
    files["random"].write_bytes(os.urandom(40_000))
    files["text"] = folder / "notes.mp3"
    files["text"].write_text("Not a recording: a shopping list.\n" * 100)
    files["video"] = folder / "silent-video.mp4"
    _ffmpeg("-f", "lavfi", "-i", "testsrc=duration=1:size=64x64:rate=5", "-an",
            str(files["video"]))
    return files


@pytest.fixture
def call(as_user) -> dict:
    return invite(as_user)


@pytest.fixture
def alice(bearer):
    return bearer("alice")


# --- uploads ---------------------------------------------------------------------------------

def test_an_m4a_from_the_phone_is_kept_as_original_and_speech_ready_wav(client, alice, call,
                                                                         media, tmp_path):
    response = upload(client, alice, call["callId"], media["m4a"],
                      original_filename=KOREAN_NAME, duration="3")

    assert response.status_code == 201, response.content
    answer = response.json()
    assert answer["success"] is True and answer["duplicate"] is False
    assert (answer["callId"], answer["status"], answer["format"]) == (
        call["callId"], "completed", "wav")
    assert abs(answer["duration"] - 3000) <= 100
    recording = document(answer["recordingId"])
    assert recording["source"] == "upload"
    assert recording["sha256"] == sha256_of(media["m4a"])
    assert (recording["originalFilename"], recording["originalFormat"]) == (KOREAN_NAME, "m4a")
    assert (recording["user1"], recording["user2"], recording["participants"]) == (
        "alice", "bob", ["alice", "bob"])
    assert recording["retryCount"] == 0 and recording["error"] is None
    stored_objects = objects()
    assert stored_objects[recording["originalPath"]] == media["m4a"].stat().st_size
    assert stored_objects[recording["storagePath"]] == answer["fileSize"]
    wav = tmp_path / "stored.wav"
    storage_bucket().blob(recording["storagePath"]).download_to_filename(wav)
    checked = audio.validate_wav(path=wav, expected_ms=3000)
    assert (checked.sample_rate, checked.channels, checked.bits_per_sample) == (16000, 1, 16)
    assert stored(call["callId"])["recordingId"] == answer["recordingId"]
    assert leftovers() == []  # Storage has it: nothing stays on the server's disk


@pytest.mark.parametrize("kind,expected", [("mp3", "mp3"), ("ogg", "ogg"), ("wav", "wav"),
                                           ("webm", "webm")])
def test_formats_are_recognised_by_content_not_by_name(client, alice, call, media, kind,
                                                       expected, tmp_path):
    disguised = tmp_path / "recording.txt"
    disguised.write_bytes(media[kind].read_bytes())
    response = upload(client, alice, call["callId"], disguised)
    assert response.status_code == 201, response.content
    recording = document(response.json()["recordingId"])
    assert recording["originalFormat"] == expected
    assert recording["originalPath"].endswith(f".{expected}")
    assert recording["originalFilename"] == "recording.txt"


def test_the_same_file_twice_for_a_call_is_one_recording(client, alice, bearer, call, media):
    first = upload(client, alice, call["callId"], media["mp3"])
    stored_before = objects()
    again = upload(client, bearer("bob"), call["callId"], media["mp3"])

    assert (first.status_code, again.status_code) == (201, 200)
    assert again.json()["recordingId"] == first.json()["recordingId"]
    assert again.json()["duplicate"] is True and again.json()["status"] == "completed"
    assert objects() == stored_before
    assert len(list(firestore_client().collection("recordings").stream())) == 1


def test_the_same_file_for_another_call_is_another_recording(client, alice, as_user, call,
                                                             media):
    first = upload(client, alice, call["callId"], media["mp3"])
    second = upload(client, alice, next_call(as_user, call), media["mp3"])
    assert (first.status_code, second.status_code) == (201, 201)
    assert first.json()["recordingId"] != second.json()["recordingId"]


@pytest.mark.parametrize("kind", ["random", "text", "video"])
def test_a_file_that_is_not_audio_is_refused_and_nothing_is_kept(client, alice, call, media,
                                                                  kind):
    response = upload(client, alice, call["callId"], media[kind])

    error = error_of(response, 400, "unsupported_audio")
    assert error["reason"] == "not_audio"  # ffprobe finds no audio stream in any of them
    assert list(firestore_client().collection("recordings").stream()) == []
    assert objects() == {}
    assert leftovers() == []
    assert stored(call["callId"])["recordingId"] is None


def test_without_ffmpeg_an_upload_is_503_not_the_files_fault(client, alice, call, media,
                                                               monkeypatch):
    monkeypatch.setenv("FFMPEG_BINARY", "/nonexistent/ffmpeg")
    response = upload(client, alice, call["callId"], media["m4a"])
    assert error_of(response, 503, "audio_unavailable")["reason"] == "ffmpeg_missing"
    assert objects() == {} and leftovers() == []


def test_only_the_calls_participants_or_an_admin_upload(client, bearer, call, media):
    error_of(upload(client, bearer("mallory"), call["callId"], media["m4a"]), 403,
             "not_in_call")
    error_of(upload(client, bearer("alice"), "no-such-call", media["m4a"]), 404,
             "call_not_found")
    error_of(upload(client, {}, call["callId"], media["m4a"]), 401, "unauthenticated")
    assert upload(client, bearer("root", admin=True), call["callId"],
                  media["m4a"]).status_code == 201
    assert leftovers() == []


def test_an_upload_without_its_fields_names_what_is_missing(client, alice, call, media):
    with media["m4a"].open("rb") as file:
        no_call = client.post("/api/recordings/upload", data={"recording": file},
                              headers=alice)
    assert "call_id" in error_of(no_call, 400, "validation_error")["message"]
    no_file = client.post("/api/recordings/upload", data={"call_id": call["callId"]},
                          headers=alice)
    assert "recording" in error_of(no_file, 400, "validation_error")["message"]
    as_json = client.post("/api/recordings/upload", data={"call_id": call["callId"]},
                          content_type="application/json", headers=alice)
    assert as_json.status_code == 400
    assert leftovers() == []


def test_a_recording_over_the_limit_is_refused_while_it_streams(client, alice, call, settings,
                                                                tmp_path):
    settings.RECORDING_MAX_UPLOAD_MB = 1
    # Within the declared-size allowance (limit + 1 MiB of multipart), over the file limit:
    # refused by the upload handler once 1 MiB has arrived.
    big = tmp_path / "long.wav"
    big.write_bytes(os.urandom(1024 * 1024 + 300_000))
    error = error_of(upload(client, alice, call["callId"], big), 413, "recording_too_large")
    assert "RECORDING_MAX_UPLOAD_MB" in error["message"]
    # Declared larger than the limit allows: refused before a byte is read.
    bigger = tmp_path / "longer.wav"
    bigger.write_bytes(os.urandom(3 * 1024 * 1024))
    error_of(upload(client, alice, call["callId"], bigger), 413, "payload_too_large")
    assert leftovers() == []
    assert objects() == {}


# --- Storage down: kept, then retried ---------------------------------------------------------

def test_storage_down_keeps_the_upload_and_a_retry_completes_it(start_server, securetoken,
                                                                as_user, call, media, client):
    base = start_server(**{**storage_down(), "STORAGE_UPLOAD_TIMEOUT_SECONDS": "1",
                           "STORAGE_REQUEST_TIMEOUT_SECONDS": "1"})
    headers = {"Authorization": f"Bearer {securetoken.mint('alice')}"}
    with media["ogg"].open("rb") as file:
        response = requests.post(f"{base}/api/recordings/upload", headers=headers,
                                 files={"recording": ("call.ogg", file, "audio/ogg")},
                                 data={"call_id": call["callId"]}, timeout=60)

    assert response.status_code == 202, response.text
    answer = response.json()
    assert (answer["status"], answer["error"]) == ("failed", "storage_unavailable")
    recording_id = answer["recordingId"]
    assert document(recording_id)["status"] == "failed"
    assert leftovers() == [f"{recording_id}.ogg"]  # the original waits on disk

    # A retry while Storage is still down: accepted, failed again, the original still kept.
    early = requests.post(f"{base}/api/recordings/{recording_id}/retry-upload", json={},
                          headers=headers, timeout=60)
    assert early.status_code == 202, early.text
    assert (early.json()["status"], early.json()["error"]) == ("failed", "storage_unavailable")
    assert (document(recording_id)["status"], document(recording_id)["retryCount"]) == (
        "failed", 1)
    assert leftovers() == [f"{recording_id}.ogg"]

    # Storage is back (this process's client uses the live emulator).
    retried = as_user("bob").post(f"/api/recordings/{recording_id}/retry-upload", {})
    assert retried.status_code == 200, retried.content
    assert retried.json()["status"] == "completed"
    recording = document(recording_id)
    assert (recording["status"], recording["retryCount"], recording["error"]) == (
        "completed", 2, None)
    assert objects()[recording["originalPath"]] == media["ogg"].stat().st_size
    assert leftovers() == []
    again = as_user("bob").post(f"/api/recordings/{recording_id}/retry-upload", {})
    assert error_of(again, 409, "not_failed")["status"] == "completed"


def _fail(recording_id: str, **fields) -> None:
    firestore_client().collection("recordings").document(recording_id).update(
        {"status": "failed", "error": "storage_unavailable", **fields})


def test_a_retry_without_the_local_file_reprocesses_the_stored_original(client, alice, call,
                                                                         media, as_user):
    recording_id = upload(client, alice, call["callId"], media["mp3"]).json()["recordingId"]
    wav_path = document(recording_id)["storagePath"]
    storage_bucket().delete_blob(wav_path)
    _fail(recording_id)  # as if the WAV had not reached Storage

    error_of(as_user("mallory").post(f"/api/recordings/{recording_id}/retry-upload", {}),
             403, "not_in_call")
    response = as_user("root", admin=True).post(
        f"/api/recordings/{recording_id}/retry-upload", {})

    assert response.status_code == 200, response.content
    assert document(recording_id)["status"] == "completed"
    assert wav_path in objects()
    assert leftovers() == []


def test_a_retry_with_nothing_to_retry_from_says_so(client, alice, call, media, as_user):
    recording_id = upload(client, alice, call["callId"], media["mp3"]).json()["recordingId"]
    storage_bucket().delete_blob(document(recording_id)["originalPath"])
    _fail(recording_id)
    response = as_user("alice").post(f"/api/recordings/{recording_id}/retry-upload", {})
    error_of(response, 409, "source_missing")
    assert (document(recording_id)["status"], document(recording_id)["error"]) == (
        "failed", "source_missing")
    _fail(recording_id, originalPath=None)
    response = as_user("alice").post(f"/api/recordings/{recording_id}/retry-upload", {})
    error_of(response, 409, "source_missing")


@pytest.mark.parametrize("stage", ["pending", "uploading"])
def test_the_sweep_fails_interrupted_uploads_and_retries_them(client, alice, as_user, call,
                                                              media, stage):
    recording_id = upload(client, alice, call["callId"], media["webm"]).json()["recordingId"]
    an_hour_ago = (datetime.now(UTC) - timedelta(hours=1)).isoformat()
    firestore_client().collection("recordings").document(recording_id).update(
        {"status": stage, "updatedAt": an_hour_ago.replace("+00:00", "Z")})
    fresh = upload(client, alice, next_call(as_user, call), media["ogg"]).json()
    firestore_client().collection("recordings").document(fresh["recordingId"]).update(
        {"status": stage})  # in progress right now: left alone

    report = sweep_run(timeout_seconds=60).parts["uploads"]

    assert report == {"interrupted": 1, "retried": 1, "completed": 1, "abandonedFilesRemoved": 0}
    recording = document(recording_id)
    assert (recording["status"], recording["retryCount"]) == ("completed", 1)
    assert document(fresh["recordingId"])["status"] == stage


def next_call(as_user, previous: dict) -> str:
    """Alice calls Bob again (after cancelling `previous`, which keeps their lines busy)."""
    assert as_user("alice").post("/api/call/cancel",
                                 {"call_id": previous["callId"]}).status_code == 200
    return invite(as_user)["callId"]


def test_the_sweep_gives_up_after_the_automatic_retries(client, alice, call, media, settings):
    recording_id = upload(client, alice, call["callId"], media["mp3"]).json()["recordingId"]
    _fail(recording_id, retryCount=settings.RECORDING_UPLOAD_AUTO_RETRIES)
    stored_before = objects()
    report = sweep_run(timeout_seconds=60).parts["uploads"]
    # Not retried: the sweep says so, the count and Storage are unchanged.
    assert (report["retried"], report["completed"]) == (0, 0)
    assert document(recording_id)["retryCount"] == settings.RECORDING_UPLOAD_AUTO_RETRIES
    assert objects() == stored_before


# --- lookups ----------------------------------------------------------------------------------

def test_check_exists_by_call_by_file_and_by_channel_and_time(client, alice, bearer, call,
                                                              media, as_user):
    def check(query: str, who="alice"):
        response = as_user(who).get(f"/api/recordings/check-exists?{query}")
        assert response.status_code == 200, response.content
        return response.json()

    sha = sha256_of(media["m4a"])
    channel = urllib.parse.quote(call["channelName"])
    created_ms = int(stored(call["callId"])["createdAt"].timestamp() * 1000)
    assert check(f"call_id={call['callId']}") == {"exists": False, "recordingId": None,
                                                  "status": None}
    recording_id = upload(client, alice, call["callId"], media["m4a"]).json()["recordingId"]

    found = {"exists": True, "recordingId": recording_id, "status": "completed"}
    assert check(f"call_id={call['callId']}") == found
    assert check(f"sha256={sha}") == found
    assert check(f"sha256={sha.upper()}", who="bob") == found
    assert check(f"sha256={sha}", who="mallory")["exists"] is False  # not their call
    assert check(f"channel={channel}") == found
    assert check(f"channel={channel}&timestamp={created_ms}") == found
    assert check(f"channel={channel}&timestamp={created_ms // 1000 + 60}") == found
    assert check(f"channel={channel}&timestamp={created_ms + 3_600_000}")["exists"] is False
    iso = datetime.fromtimestamp(created_ms / 1000, UTC).isoformat()
    assert check(f"channel={channel}&timestamp={urllib.parse.quote(iso)}") == found
    error_of(as_user("mallory").get(f"/api/recordings/check-exists?call_id={call['callId']}"),
             403, "not_in_call")
    error_of(as_user("alice").get("/api/recordings/check-exists"), 400, "validation_error")
    error_of(as_user("alice").get(f"/api/recordings/check-exists?call_id=x&sha256={sha}"),
             400, "validation_error")
    error_of(as_user("alice").get("/api/recordings/check-exists?sha256=xyz"), 400,
             "validation_error")
    error_of(as_user("alice").get(f"/api/recordings/check-exists?channel={channel}"
                                  "&timestamp=yesterday"), 400, "validation_error")


def test_has_recording_for_a_call_and_for_a_user(client, alice, call, media, as_user):
    nothing = as_user("bob").get(f"/api/calls/{call['callId']}/has-recording").json()
    assert nothing == {"hasRecording": False, "callId": call["callId"], "recordingId": None,
                       "recordedAt": None, "duration": None}
    assert as_user("alice").get("/api/users/alice/has-recording").json()["hasRecording"] is False
    answer = upload(client, alice, call["callId"], media["m4a"]).json()

    expected = {"hasRecording": True, "callId": call["callId"],
                "recordingId": answer["recordingId"],
                "recordedAt": document(answer["recordingId"])["recordedAt"],
                "duration": answer["duration"]}
    assert as_user("bob").get(f"/api/calls/{call['callId']}/has-recording").json() == expected
    assert as_user("alice").get("/api/users/alice/has-recording").json() == expected
    assert as_user("bob").get("/api/users/alice/has-recording").json() == expected  # their call
    assert as_user("root", admin=True).get("/api/users/bob/has-recording").json() == expected
    assert as_user("mallory").get("/api/users/alice/has-recording").json()[
        "hasRecording"] is False
    error_of(as_user("mallory").get(f"/api/calls/{call['callId']}/has-recording"), 403,
             "not_in_call")
    error_of(as_user("alice").get("/api/calls/nope/has-recording"), 404, "call_not_found")


def test_has_recording_names_the_latest_completed_recording(client, alice, as_user, call,
                                                             media):
    older = upload(client, alice, call["callId"], media["m4a"]).json()["recordingId"]
    later_call = next_call(as_user, call)
    newer = upload(client, alice, later_call, media["mp3"]).json()["recordingId"]
    assert as_user("alice").get("/api/users/alice/has-recording").json()[
        "recordingId"] == newer
    _fail(newer)
    assert as_user("alice").get("/api/users/alice/has-recording").json()[
        "recordingId"] == older


# --- playback and download ----------------------------------------------------------------------

@pytest.fixture
def played(client, alice, call, media, settings) -> dict:
    """A completed upload, its WAV's bytes, and Storage read 4 KiB at a time (so ranges
    cross chunk boundaries)."""
    settings.STORAGE_STREAM_CHUNK_BYTES = 4096
    answer = upload(client, alice, call["callId"], media["m4a"],
                    original_filename=KOREAN_NAME).json()
    recording = document(answer["recordingId"])
    wav = storage_bucket().blob(recording["storagePath"]).download_as_bytes()
    return {"id": answer["recordingId"], "wav": wav, "size": len(wav)}


def _get(client, headers: dict, path: str, range_header: str | None = None, **extra):
    if range_header is not None:
        extra["Range"] = range_header
    return client.get(path, headers={**headers, **extra})


def _body(response) -> bytes:
    return b"".join(response.streaming_content) if response.streaming else response.content


def test_playback_serves_the_whole_wav_and_says_it_takes_ranges(client, alice, played):
    response = _get(client, alice, f"/api/recordings/{played['id']}/stream")
    assert response.status_code == 200
    assert _body(response) == played["wav"]
    assert response["Accept-Ranges"] == "bytes"
    assert response["Content-Type"] == "audio/wav"
    assert int(response["Content-Length"]) == played["size"]
    assert response["Content-Disposition"].startswith("inline")
    assert response["ETag"]


@pytest.mark.parametrize("header,start,end", [
    ("bytes=0-0", 0, 0),
    ("bytes=0-43", 0, 43),                    # the WAV header
    ("bytes=10000-", 10000, None),            # open-ended
    ("bytes=-500", -500, None),               # suffix: the last 500 bytes
    ("bytes=4000-9000", 4000, 9000),          # across Storage chunks
    ("bytes=100-999999999", 100, None),       # end past the file: clipped
    ("bytes=0-9,5-19", 0, 19),                # overlapping: merged into one
])
def test_one_range_is_answered_with_206_and_exactly_those_bytes(client, alice, played, header,
                                                                 start, end):
    size, wav = played["size"], played["wav"]
    first = start if start >= 0 else size + start
    last = size - 1 if end is None else end
    response = _get(client, alice, f"/api/recordings/{played['id']}/stream", header)
    assert response.status_code == 206
    assert response["Content-Range"] == f"bytes {first}-{last}/{size}"
    assert int(response["Content-Length"]) == last - first + 1
    assert _body(response) == wav[first:last + 1]


def test_several_ranges_come_back_as_multipart_byteranges(client, alice, played):
    size, wav = played["size"], played["wav"]
    response = _get(client, alice, f"/api/recordings/{played['id']}/stream",
                    "bytes=0-3, 8-15, -4")
    assert response.status_code == 206
    body = _body(response)
    assert int(response["Content-Length"]) == len(body)
    message = email.message_from_bytes(
        f"Content-Type: {response['Content-Type']}\r\n\r\n".encode() + body)
    assert message.get_content_type() == "multipart/byteranges"
    parts = [(part["Content-Range"], part.get_payload(decode=True))
             for part in message.get_payload()]
    assert parts == [(f"bytes 0-3/{size}", wav[0:4]), (f"bytes 8-15/{size}", wav[8:16]),
                     (f"bytes {size - 4}-{size - 1}/{size}", wav[-4:])]


def test_an_unsatisfiable_range_is_416_with_the_size(client, alice, played):
    size = played["size"]
    for header in (f"bytes={size}-", f"bytes={size + 10}-{size + 20}", "bytes=-0"):
        response = _get(client, alice, f"/api/recordings/{played['id']}/stream", header)
        assert error_of(response, 416, "range_not_satisfiable")
        assert response["Content-Range"] == f"bytes */{size}"


@pytest.mark.parametrize("header", ["bytes=abc", "bytes=5-1", "items=0-10", "bytes=",
                                    "bytes=" + ",".join(f"{n * 10}-{n * 10 + 1}"
                                                        for n in range(20))])
def test_a_range_that_cannot_be_understood_gets_the_whole_file(client, alice, played, header):
    response = _get(client, alice, f"/api/recordings/{played['id']}/stream", header)
    assert response.status_code == 200
    assert _body(response) == played["wav"]


@pytest.mark.parametrize("digit", ["²", "¹", "³", "٣", "１"])
def test_a_range_with_digits_that_are_not_ascii_gets_the_whole_file(client, alice, played,
                                                                   digit):
    for header in (f"bytes={digit}-", f"bytes=0-{digit}", f"bytes=-{digit}"):
        response = _get(client, alice, f"/api/recordings/{played['id']}/stream", header)
        assert response.status_code == 200, (header, response.content)
        assert _body(response) == played["wav"]


RANGE_CHARS = st.sampled_from("0123456789-, =\tbytes²¹³٣１")
range_headers = st.one_of(
    st.text(max_size=60),
    st.text(RANGE_CHARS, max_size=60),
    st.lists(st.tuples(st.integers(0, 10**25) | st.none(), st.integers(0, 10**25) | st.none())
             .map(lambda pair: "-".join("" if n is None else str(n) for n in pair)),
             min_size=1, max_size=20).map(lambda specs: "bytes=" + ",".join(specs)),
    st.sampled_from(["bytes=²-", "bytes=0-²", "bytes=" + "9" * 5000 + "-",
                     "bytes=0-" + "9" * 5000, "bytes=-" + "9" * 5000, "bytes=" + "0" * 30 + "5-"]),
)


@given(range_headers, st.integers(0, 10_000))
def test_any_range_header_is_ranges_or_the_whole_file_or_unsatisfiable(header, size):
    try:
        ranges = delivery.byte_ranges(header, size)
    except delivery.Unsatisfiable:
        return
    if ranges is None:
        return
    assert 1 <= len(ranges) <= delivery.MAX_RANGES
    for (start, end), later in zip(ranges, [*ranges[1:], None], strict=True):
        assert 0 <= start <= end < size
        assert later is None or later[0] > end + 1  # sorted, merged


@hypothesis_settings(max_examples=40)
@given(header=range_headers)
def test_any_range_header_on_stream_is_200_206_or_416(client, alice, played, header):
    response = _get(client, alice, f"/api/recordings/{played['id']}/stream", header)
    assert response.status_code in (200, 206, 416), (header, response.content)
    if response.status_code == 200:
        assert _body(response) == played["wav"]


def test_if_range_with_another_version_gets_the_whole_file(client, alice, played):
    path = f"/api/recordings/{played['id']}/stream"
    etag = _get(client, alice, path)["ETag"]
    same = _get(client, alice, path, "bytes=0-3", HTTP_IF_RANGE=etag)
    assert same.status_code == 206 and _body(same) == played["wav"][:4]
    other = _get(client, alice, path, "bytes=0-3", **{"If-Range": '"another-version"'})
    assert other.status_code == 200 and _body(other) == played["wav"]


def test_download_is_an_attachment_named_after_the_original(client, alice, played, media):
    response = _get(client, alice, f"/api/recordings/{played['id']}/download")
    assert response.status_code == 200
    assert _body(response) == played["wav"]
    quoted = urllib.parse.quote("엄마와 통화 11월.wav")
    assert response["Content-Disposition"] == f"attachment; filename*=utf-8''{quoted}"

    original = _get(client, alice, f"/api/recordings/{played['id']}/download?file=original")
    assert _body(original) == media["m4a"].read_bytes()
    assert original["Content-Type"] == "audio/mp4"
    assert original["Content-Disposition"] == (
        f"attachment; filename*=utf-8''{urllib.parse.quote(KOREAN_NAME)}")


def test_a_hostile_original_name_is_reduced_to_a_plain_file_name(client, alice, call, media):
    answer = upload(client, alice, call["callId"], media["mp3"],
                    original_filename='../../etc/"passwd"\r\nX-Evil: 1.mp3').json()
    response = _get(client, alice, f"/api/recordings/{answer['recordingId']}/download")
    disposition = response["Content-Disposition"]
    assert "\r" not in disposition and "\n" not in disposition and "/" not in disposition
    assert disposition == 'attachment; filename="\\"passwd\\"X-Evil: 1.wav"'


def test_only_participants_and_admins_play_or_download(client, bearer, played):
    for path in (f"/api/recordings/{played['id']}/stream",
                 f"/api/recordings/{played['id']}/download"):
        error_of(client.get(path, headers=bearer("mallory")), 403, "not_in_call")
        error_of(client.get(path), 401, "unauthenticated")
        assert client.get(path, headers=bearer("bob")).status_code == 200
        assert client.get(path, headers=bearer("root", admin=True)).status_code == 200
    error_of(client.get("/api/recordings/nope/stream", headers=bearer("bob")), 404,
             "recording_not_found")


def test_a_recording_not_yet_stored_is_not_playable(client, alice, played):
    _fail(played["id"])
    response = client.get(f"/api/recordings/{played['id']}/stream", headers=alice)
    assert error_of(response, 409, "recording_not_ready")["status"] == "failed"


def test_a_file_missing_from_storage_is_404_not_500(client, alice, played):
    storage_bucket().delete_blob(document(played["id"])["storagePath"])
    response = client.get(f"/api/recordings/{played['id']}/stream", headers=alice)
    error_of(response, 404, "recording_file_missing")


def test_with_a_signing_key_playback_redirects_to_a_short_lived_signed_url(played, alice,
                                                                          signing_bucket):
    request = RequestFactory().get("/", headers={"Range": "bytes=0-3"})
    media_file = MediaFile(document(played["id"])["storagePath"], "audio/wav",
                                    "엄마와 통화.wav")

    inline = delivery.media_response(request, media_file, attachment=False,
                                     bucket=signing_bucket)
    attachment = delivery.media_response(request, media_file, attachment=True,
                                         bucket=signing_bucket)

    assert inline.status_code == attachment.status_code == 302
    query = urllib.parse.parse_qs(urllib.parse.urlsplit(inline["Location"]).query)
    assert query["X-Goog-Algorithm"] == ["GOOG4-RSA-SHA256"]
    assert query["X-Goog-Expires"] == [str(settings.STORAGE_STREAM_URL_TTL_SECONDS)]
    assert "response-content-disposition" not in query
    signed = urllib.parse.parse_qs(urllib.parse.urlsplit(attachment["Location"]).query)
    assert signed["response-content-disposition"] == [
        "attachment; filename*=utf-8''" + urllib.parse.quote("엄마와 통화.wav")]
    # Storage serves the ranges itself (fake-gcs-server does not check the signature).
    fetched = requests.get(inline["Location"], headers={"Range": "bytes=0-3"}, timeout=10)
    assert (fetched.status_code, fetched.content) == (206, b"RIFF")


# --- the admin listing and the upload statistics -----------------------------------------------

@pytest.fixture
def library(client, bearer, as_user, media) -> dict:
    """Three uploads: two of Alice and Bob's calls (one since failed), one of Carol and Dave
    recorded in January."""
    first = invite(as_user)
    ids = {"first": upload(client, bearer("alice"), first["callId"], media["m4a"],
                           original_filename="first.m4a").json()["recordingId"]}
    ids["second"] = upload(client, bearer("bob"), next_call(as_user, first),
                           media["mp3"]).json()["recordingId"]
    other = invite(as_user, group_id="group2", caller_id="carol", receiver_id="dave")
    ids["january"] = upload(client, bearer("dave"), other["callId"],
                            media["ogg"]).json()["recordingId"]
    firestore_client().collection("recordings").document(ids["january"]).update(
        {"recordedAt": "2026-01-15T10:00:00.250000Z"})
    _fail(ids["second"])
    return ids


def _listing(client, query: str = "", headers: dict | None = None):
    return client.get(f"/api/admin/recordings?{query}",
                      headers=headers or {"X-Ops-Key": settings.OPS_API_KEY})


def _ids(response) -> list[str]:
    assert response.status_code == 200, response.content
    return [item["recordingId"] for item in response.json()["recordings"]]


def test_the_admin_listing_pages_newest_first_with_the_total(client, library):
    first = _listing(client, "limit=2")
    assert _ids(first) == [library["second"], library["first"]]
    assert first.json()["total"] == 3
    token = first.json()["nextPageToken"]
    last = _listing(client, f"limit=2&next_page_token={token}")
    assert _ids(last) == [library["january"]]
    assert (last.json()["total"], last.json()["nextPageToken"]) == (3, None)
    item = first.json()["recordings"][1]
    assert item["originalFilename"] == "first.m4a"
    assert (item["format"], item["status"], item["source"]) == ("wav", "completed", "upload")
    assert item["participants"] == ["alice", "bob"] and item["callId"]
    assert item["duration"] > 2900 and item["fileSize"] > 90_000 and item["recordedAt"]


@pytest.mark.parametrize("query,expected", [
    ("user_id=alice", ["second", "first"]),
    ("user_id=dave", ["january"]),
    ("group_id=group2", ["january"]),
    ("status=failed", ["second"]),
    ("status=completed&user_id=bob", ["first"]),
    ("source=upload&format=wav", ["second", "first", "january"]),
    ("source=recorder", []),
    ("format=webm", []),
    ("date_from=2026-01-01&date_to=2026-01-31", ["january"]),
    ("date_to=2026-01-15", ["january"]),              # inclusive
    ("date_from=2026-01-16&user_id=dave", []),
    ("date_from=2026-01-01&group_id=group2&source=upload&format=wav", ["january"]),
    ("date_from=2026-01-15T09:59:00Z&date_to=2026-01-15T10:00:00Z", ["january"]),
    ("date_from=2026-01-15T10:00:01%2B00:00", ["second", "first"]),
])
def test_the_admin_listing_filters_and_counts_what_it_filters(client, library, query,
                                                             expected):
    response = _listing(client, query)
    assert _ids(response) == [library[name] for name in expected]
    assert response.json()["total"] == len(expected)


def test_the_admin_listing_is_for_admins_and_ops_only(client, bearer, library):
    error_of(_listing(client, headers=bearer("alice")), 403, "admin_required")
    error_of(client.get("/api/admin/recordings"), 401, "unauthenticated")
    assert len(_ids(_listing(client, headers=bearer("root", admin=True)))) == 3


@pytest.mark.parametrize("query,code", [
    ("limit=500", "validation_error"),
    ("limit=0", "validation_error"),
    ("status=lost", "validation_error"),
    ("date_from=yesterday", "validation_error"),
    ("date_from=2026-02-01&date_to=2026-01-01", "validation_error"),
    ("next_page_token=no-such-recording", "bad_page_token"),
])
def test_the_admin_listing_explains_bad_queries(client, library, query, code):
    error_of(_listing(client, query), 400, code)


@pytest.mark.parametrize("query,field", [
    ("date_from=2024-13-45", "date_from"),
    ("date_to=9999-12-31", "date_to"),
    ("date_to=9999-12-31T23:59:59", "date_to"),
    ("date_from=0001-01-01T00:00:00%2B01:00", "date_from"),
])
def test_impossible_days_and_the_end_of_time_are_400_naming_the_field(client, query, field):
    error = error_of(_listing(client, query), 400, "validation_error")
    assert error["message"].startswith(f"{field}: ")
    assert error["details"][0]["field"] == field


@pytest.mark.parametrize("timestamp", ["9999-12-31T23:59:59", "0001-01-01"])
def test_a_check_exists_window_past_the_end_of_time_is_400_naming_the_field(as_user,
                                                                           timestamp):
    error = error_of(as_user("alice").get(
        f"/api/recordings/check-exists?channel=x&timestamp={timestamp}"), 400,
        "validation_error")
    assert error["message"].startswith("timestamp: ")


def test_upload_status_counts_from_aggregations(client, bearer, library):
    response = client.get("/api/recordings/upload-status",
                          headers={"X-Ops-Key": settings.OPS_API_KEY})
    assert response.status_code == 200, response.content
    status = response.json()
    assert (status["completed"], status["failed"], status["pending"], status["uploading"],
            status["total"]) == (2, 1, 0, 0, 3)
    assert status["storageUsed"] == sum(objects().values())  # originals and WAVs
    # The last completed upload ("second" has failed since): Dave's.
    assert status["lastUploadId"] == library["january"]
    assert status["lastUpload"] == document(library["january"])["uploadedAt"]
    recorder_only = client.get("/api/recordings/upload-status?source=recorder",
                               headers=bearer("root", admin=True)).json()
    assert (recorder_only["total"], recorder_only["storageUsed"],
            recorder_only["lastUpload"]) == (0, 0, None)
    error_of(client.get("/api/recordings/upload-status", headers=bearer("alice")), 403,
             "admin_required")


def test_the_sweep_removes_what_dead_workers_left_half_done(client, alice, call, media):
    failed = upload(client, alice, call["callId"], media["mp3"]).json()["recordingId"]
    _fail(failed, originalPath=None, retryCount=settings.RECORDING_UPLOAD_AUTO_RETRIES)
    root = settings.RECORDING_UPLOADS_DIR
    kept = root / f"{failed}.mp3"
    kept.write_bytes(media["mp3"].read_bytes())  # an original waiting for Storage
    incoming = Path(settings.FILE_UPLOAD_TEMP_DIR)
    abandoned = [incoming / "tmpabc.upload", root / ".x.0123.wav"]
    fresh = incoming / "tmpnew.upload"  # a body arriving right now
    day_ago = (datetime.now(UTC) - timedelta(days=1)).timestamp()
    for path in (*abandoned, fresh):
        path.write_bytes(b"partial")
    for path in (*abandoned, kept):
        os.utime(path, (day_ago, day_ago))

    sweep_run(timeout_seconds=60)

    assert leftovers() == sorted([f"{failed}.mp3", ".incoming/tmpnew.upload"])
    fresh.unlink()
    kept.unlink()


def test_uploads_and_ranged_playback_through_gunicorn(start_server, securetoken, call, media):
    base = start_server()
    headers = {"Authorization": f"Bearer {securetoken.mint('bob')}"}
    with media["webm"].open("rb") as file:
        answer = requests.post(f"{base}/api/recordings/upload", headers=headers, timeout=60,
                               files={"recording": ("통화.webm", file, "audio/webm")},
                               data={"call_id": call["callId"]}).json()
    assert answer["status"] == "completed", answer
    wav = storage_bucket().blob(document(answer["recordingId"])["storagePath"]) \
        .download_as_bytes()

    path = f"{base}/api/recordings/{answer['recordingId']}"
    ranged = requests.get(f"{path}/stream", headers={**headers, "Range": "bytes=-1000"},
                          timeout=30)
    assert ranged.status_code == 206
    assert ranged.headers["Content-Range"] == f"bytes {len(wav) - 1000}-{len(wav) - 1}/{len(wav)}"
    assert ranged.content == wav[-1000:]
    whole = requests.get(f"{path}/download", headers=headers, timeout=30)
    assert whole.content == wav
    assert whole.headers["Content-Disposition"] == (
        "attachment; filename*=utf-8''" + urllib.parse.quote("통화.wav"))


def test_uploading_again_after_a_failure_reprocesses_the_recording(client, alice, call, media):
    recording_id = upload(client, alice, call["callId"], media["ogg"]).json()["recordingId"]
    _fail(recording_id)
    again = upload(client, alice, call["callId"], media["ogg"])
    assert again.status_code == 201, again.content
    assert (again.json()["recordingId"], again.json()["duplicate"]) == (recording_id, False)
    assert (document(recording_id)["status"], document(recording_id)["retryCount"]) == (
        "completed", 1)


def test_racing_identical_uploads_store_one_recording(start_server, securetoken, call, media):
    base = start_server(GUNICORN_THREADS="6")
    headers = {"Authorization": f"Bearer {securetoken.mint('alice')}"}

    def send(_):
        with media["m4a"].open("rb") as file:
            return requests.post(f"{base}/api/recordings/upload", headers=headers, timeout=60,
                                 files={"recording": ("call.m4a", file)},
                                 data={"call_id": call["callId"]})

    with ThreadPoolExecutor(6) as pool:
        answers = list(pool.map(send, range(6)))

    assert sorted(a.status_code for a in answers) == [200] * 5 + [201]
    assert len({a.json()["recordingId"] for a in answers}) == 1
    assert len(objects()) == 2  # one original, one WAV
    assert len(list(firestore_client().collection("recordings").stream())) == 1
    assert leftovers() == []
