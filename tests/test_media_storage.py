"""Recordings in Storage, against the real fake-gcs-server of the session fixtures."""

from __future__ import annotations

import base64
import hashlib
import os
import urllib.parse
import urllib.request
from pathlib import Path

import pytest
import requests
from django.conf import settings as django_settings
from google.auth.credentials import AnonymousCredentials
from google.cloud import storage

from devstack.emulators import free_port
from integrations.firebase import storage_bucket
from media.storage import (
    DOWNLOAD_TOKENS_KEY,
    StorageError,
    recording_delete,
    recording_download,
    recording_upload,
    recording_url,
)
from tests.helpers import sha256_of

MiB = 1024 * 1024


def _recording(tmp_path: Path, name: str, size: int) -> Path:
    path = tmp_path / name
    path.write_bytes(os.urandom(size))
    return path


def _fetch(url: str) -> bytes:
    """GET with nothing but the URL: no credentials, like the apps."""
    with urllib.request.urlopen(url, timeout=30) as response:
        return response.read()


def _client(**kwargs) -> storage.Client:
    return storage.Client(project=django_settings.FIREBASE_PROJECT_ID, **kwargs)


@pytest.fixture
def observed_bucket():
    """The default bucket through a client whose HTTP requests are written down."""
    seen: list[tuple[str, str, int]] = []
    session = requests.Session()
    session.hooks["response"].append(
        lambda response, *args, **kwargs: seen.append(
            (response.request.method, response.request.url, response.status_code)))
    client = _client(credentials=AnonymousCredentials(), _http=session)
    yield client.bucket(django_settings.FIREBASE_STORAGE_BUCKET), seen
    session.close()


class LosesOneAnswer(requests.Session):
    """A network that delivers the n-th chunk of an upload but loses Storage's answer."""

    def __init__(self, nth_chunk: int):
        super().__init__()
        self.chunks_sent, self.nth_chunk = 0, nth_chunk

    def send(self, request, **kwargs):
        response = super().send(request, **kwargs)
        if request.method == "PUT":
            self.chunks_sent += 1
            if self.chunks_sent == self.nth_chunk:
                raise requests.ConnectionError("connection reset before the answer arrived")
        return response


def test_an_hour_long_call_goes_up_in_resumable_chunks_and_comes_back_identical(
        tmp_path, settings, observed_bucket):
    settings.STORAGE_UPLOAD_CHUNK_BYTES = 1 * MiB
    bucket, seen = observed_bucket
    wav = _recording(tmp_path, "family_call.wav", 20 * MiB + 12345)
    data = wav.read_bytes()

    stored = recording_upload(path=wav, object_name="recordings/family_call.wav",
                              content_type="audio/wav",
                              metadata={"callId": "call-1", "channel": "g1_alice_bob_1"},
                              bucket=bucket)

    assert stored.object_name == "recordings/family_call.wav"
    assert stored.size == len(data)
    assert stored.content_type == "audio/wav"
    assert stored.md5 == base64.b64encode(hashlib.md5(data).digest()).decode()
    assert stored.crc32c and stored.generation > 0
    assert stored.metadata["callId"] == "call-1"
    assert stored.metadata["channel"] == "g1_alice_bob_1"
    # One resumable session, 21 chunks: 20 answered "308 resume", the last one "200".
    starts = [url for method, url, _ in seen if method == "POST" and "/upload/" in url]
    assert len(starts) == 1 and "uploadType=resumable" in starts[0]
    puts = [status for method, url, status in seen if method == "PUT"]
    assert puts == [308] * 20 + [200]

    kept = storage_bucket().get_blob("recordings/family_call.wav")
    assert kept.content_type == "audio/wav" and kept.metadata["callId"] == "call-1"
    copy = tmp_path / "copy.wav"
    again = recording_download(object_name="recordings/family_call.wav", dst=copy)
    assert sha256_of(copy.read_bytes()) == sha256_of(data)
    assert again.generation == stored.generation and again.url is None
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".part")] == []


def test_a_chunk_whose_answer_was_lost_still_ends_in_a_whole_recording(tmp_path, settings):
    settings.STORAGE_UPLOAD_CHUNK_BYTES = 1 * MiB
    network = LosesOneAnswer(nth_chunk=4)
    bucket = _client(credentials=AnonymousCredentials(), _http=network).bucket(
        django_settings.FIREBASE_STORAGE_BUCKET)
    wav = _recording(tmp_path, "bad_wifi.wav", 9 * MiB + 1)

    stored = recording_upload(path=wav, object_name="recordings/bad_wifi.wav",
                              content_type="audio/wav", bucket=bucket)

    assert network.chunks_sent > 10  # the chunk was sent again
    assert stored.size == wav.stat().st_size
    assert sha256_of(_fetch(stored.url)) == sha256_of(wav.read_bytes())


def test_the_apps_play_a_recording_from_its_url_without_credentials(tmp_path):
    wav = _recording(tmp_path, "short_call.wav", 300_000)

    stored = recording_upload(path=wav, object_name="recordings/short call+1.wav",
                              content_type="audio/wav")

    assert stored.metadata[DOWNLOAD_TOKENS_KEY]  # stored with the object: no second trip
    assert f"token={stored.metadata[DOWNLOAD_TOKENS_KEY]}" in stored.url
    assert "/o/recordings%2Fshort%20call%2B1.wav?" in stored.url
    assert _fetch(stored.url) == wav.read_bytes()
    assert recording_url(object_name="recordings/short call+1.wav") == stored.url


def test_a_recording_keeps_the_download_token_it_already_has(tmp_path):
    console_upload = storage_bucket().blob("recordings/from_console.wav")
    console_upload.metadata = {DOWNLOAD_TOKENS_KEY: "token-from-the-console,second-token"}
    console_upload.upload_from_string(b"RIFF console", content_type="audio/wav")

    url = recording_url(object_name="recordings/from_console.wav")

    assert "token=token-from-the-console" in url
    assert _fetch(url) == b"RIFF console"
    blob = storage_bucket().get_blob("recordings/from_console.wav")
    assert blob.metadata[DOWNLOAD_TOKENS_KEY] == "token-from-the-console,second-token"


def test_a_recording_without_a_token_gets_one_that_lasts(tmp_path):
    storage_bucket().blob("recordings/bare.wav").upload_from_string(
        b"RIFF bare", content_type="audio/wav")

    first = recording_url(object_name="recordings/bare.wav")
    second = recording_url(object_name="recordings/bare.wav")

    token = storage_bucket().get_blob("recordings/bare.wav").metadata[DOWNLOAD_TOKENS_KEY]
    assert first == second and f"token={token}" in first
    assert _fetch(first) == b"RIFF bare"


def test_with_a_service_account_key_the_url_is_a_v4_signed_url(tmp_path, settings,
                                                               signing_bucket):
    wav = _recording(tmp_path, "signed.wav", 50_000)
    recording_upload(path=wav, object_name="recordings/signed call.wav",
                     content_type="audio/wav")

    url = recording_url(object_name="recordings/signed call.wav", bucket=signing_bucket)
    settings.STORAGE_URL_TTL_SECONDS = 3600
    short = recording_url(object_name="recordings/signed call.wav", bucket=signing_bucket)

    parts = urllib.parse.urlsplit(url)
    query = urllib.parse.parse_qs(parts.query)
    assert parts.path == f"/{django_settings.FIREBASE_STORAGE_BUCKET}/recordings/signed%20call.wav"
    assert query["X-Goog-Algorithm"] == ["GOOG4-RSA-SHA256"]
    assert query["X-Goog-Expires"] == ["604800"]  # the default: 7 days, the V4 maximum
    assert query["X-Goog-Credential"][0].startswith("recorder@demo-memharbor-test.iam")
    assert len(query["X-Goog-Signature"][0]) == 512  # hex of an RSA-2048 signature
    assert urllib.parse.parse_qs(urllib.parse.urlsplit(short).query)["X-Goog-Expires"] == ["3600"]
    # fake-gcs-server does not check signatures, but the path leads to the object.
    assert _fetch(url) == wav.read_bytes()


def test_uploading_the_same_name_again_keeps_the_newer_recording(tmp_path):
    first = recording_upload(path=_recording(tmp_path, "take1.wav", 40_000),
                             object_name="recordings/retake.wav", content_type="audio/wav")
    newer = _recording(tmp_path, "take2.wav", 30_000)
    second = recording_upload(path=newer, object_name="recordings/retake.wav",
                              content_type="audio/wav")

    assert second.generation > first.generation and second.size == 30_000
    copy = tmp_path / "copy.wav"
    recording_download(object_name="recordings/retake.wav", dst=copy)
    assert copy.read_bytes() == newer.read_bytes()


def test_deleting_a_recording_twice_says_it_was_already_gone(tmp_path):
    recording_upload(path=_recording(tmp_path, "old.wav", 10_000),
                     object_name="recordings/old.wav", content_type="audio/wav")

    assert recording_delete(object_name="recordings/old.wav") is True
    assert recording_delete(object_name="recordings/old.wav") is False
    with pytest.raises(StorageError) as gone:
        recording_url(object_name="recordings/old.wav")
    assert gone.value.code == "storage_not_found"
    with pytest.raises(StorageError) as missing:
        recording_download(object_name="recordings/old.wav", dst=tmp_path / "old_copy.wav")
    assert missing.value.code == "storage_not_found"
    assert list(tmp_path.glob("*old_copy*")) == []


def test_storage_down_ends_in_storage_unavailable_within_the_budget(tmp_path, settings,
                                                                     monkeypatch):
    settings.STORAGE_UPLOAD_TIMEOUT_SECONDS = 1
    settings.STORAGE_REQUEST_TIMEOUT_SECONDS = 1
    # google-cloud-storage would otherwise keep probing the dead bucket in the background.
    monkeypatch.setenv("DISABLE_GCS_PYTHON_CLIENT_OTEL_BUCKET_METADATA", "true")
    dead = _client(credentials=AnonymousCredentials(),
                   client_options={"api_endpoint": f"http://127.0.0.1:{free_port()}"})
    bucket = dead.bucket(django_settings.FIREBASE_STORAGE_BUCKET)
    wav = _recording(tmp_path, "unlucky.wav", 10_000)

    with pytest.raises(StorageError) as upload:
        recording_upload(path=wav, object_name="recordings/unlucky.wav",
                         content_type="audio/wav", bucket=bucket)
    with pytest.raises(StorageError) as delete:
        recording_delete(object_name="recordings/unlucky.wav", bucket=bucket)

    assert upload.value.code == delete.value.code == "storage_unavailable"
    assert "recordings/unlucky.wav" in upload.value.message
