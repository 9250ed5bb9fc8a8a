"""Recordings in Firebase Storage: upload, URLs the apps can fetch, download, delete,
metadata and ranged reads (for playback).

Every function works on the default bucket (`integrations.firebase.storage_bucket()`)
unless given another `bucket`. Every failure ends in one `StorageError(code, message)`
within a bounded time:

- `storage_unavailable` — Storage could not be reached (or kept failing transiently)
  within the time budget; worth retrying later.
- `storage_not_found` — the object does not exist.
- `storage_corrupt` — the bytes stored are not the bytes sent; the object was removed.
- `storage_error` — anything else Storage refused (permissions, a missing bucket, ...).

Limits come from a `StorageConfig` that the process supplies (`configure`; by default
from the environment, same names as the API's settings, defaults in brackets):
`STORAGE_UPLOAD_TIMEOUT_SECONDS` [300] bounds one upload or download, retries included;
`STORAGE_REQUEST_TIMEOUT_SECONDS` [30] bounds one metadata call (URL, delete);
`STORAGE_UPLOAD_CHUNK_BYTES` [8 MiB] is the resumable chunk (rounded down to 256 KiB);
`STORAGE_URL_TTL_SECONDS` [7 days, the V4 maximum] is how long a signed URL works;
`STORAGE_STREAM_CHUNK_BYTES` [1 MiB] is one read of `recording_chunks`.
"""

from __future__ import annotations

import base64
import http.client
import io
import os
import time
import urllib.parse
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from functools import partial
from pathlib import Path

import google_crc32c
import requests
import urllib3
from google.api_core import exceptions as api_exceptions
from google.api_core.retry import Retry
from google.auth import exceptions as auth_exceptions
from google.auth.credentials import Signing
from google.cloud.storage import Blob, Bucket
from google.cloud.storage.exceptions import DataCorruption, InvalidResponse

from core.errors import DependencyTimeout, ServiceUnavailable
from integrations.firebase import storage_bucket, storage_emulated

DOWNLOAD_TOKENS_KEY = "firebaseStorageDownloadTokens"  # what Firebase Storage reads
FIREBASE_DOWNLOAD_BASE = "https://firebasestorage.googleapis.com/v0"
MAX_URL_TTL_SECONDS = 7 * 24 * 3600  # V4 signed URLs cannot live longer
CHUNK_QUANTUM = 256 * 1024  # resumable chunks must be multiples of this

_TRANSIENT_STATUS = frozenset({408, 429, 500, 502, 503, 504})
_TRANSIENT_ERRORS = (
    ConnectionError,
    requests.ConnectionError,
    requests.Timeout,
    requests.exceptions.ChunkedEncodingError,
    http.client.HTTPException,
    urllib3.exceptions.HTTPError,
    auth_exceptions.TransportError,
)


class StorageError(Exception):
    """Storage failed for good: a stable `code` and a message for logs and clients."""

    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code = code
        self.message = message

    def __str__(self) -> str:
        return f"{self.code}: {self.message}"


def unavailable(exc: StorageError, message: str) -> ServiceUnavailable:
    """The 503 a request answers when Storage failed it: `dependency_timeout` (with
    Retry-After) when Storage gave no answer within its time budget, else Storage's code."""
    if exc.code == "storage_unavailable":
        return DependencyTimeout(f"{message} (Storage did not answer in time).")
    return ServiceUnavailable(f"{message} ({exc.code}).", code=exc.code)


@dataclass(frozen=True)
class StorageConfig:
    upload_timeout_seconds: float = 300
    request_timeout_seconds: float = 30
    upload_chunk_bytes: int = 8 * 1024 * 1024
    url_ttl_seconds: int = MAX_URL_TTL_SECONDS
    stream_chunk_bytes: int = 1024 * 1024

    @classmethod
    def from_env(cls, environ=os.environ) -> StorageConfig:
        def number(name: str, default, kind=float):
            raw = environ.get(name, "").strip()
            return kind(raw) if raw else default
        return cls(
            upload_timeout_seconds=number("STORAGE_UPLOAD_TIMEOUT_SECONDS", 300),
            request_timeout_seconds=number("STORAGE_REQUEST_TIMEOUT_SECONDS", 30),
            upload_chunk_bytes=number("STORAGE_UPLOAD_CHUNK_BYTES", 8 * 1024 * 1024, int),
            url_ttl_seconds=number("STORAGE_URL_TTL_SECONDS", MAX_URL_TTL_SECONDS, int),
            stream_chunk_bytes=number("STORAGE_STREAM_CHUNK_BYTES", 1024 * 1024, int),
        )


_config_source = StorageConfig.from_env


def configure(source) -> None:
    """Where the limits come from (a callable returning a StorageConfig, read per call)."""
    global _config_source
    _config_source = source


def _config() -> StorageConfig:
    return _config_source()


@dataclass(frozen=True)
class StoredObject:
    """One object as Storage holds it."""

    object_name: str  # e.g. recordings/<file>.wav
    size: int
    content_type: str
    generation: int
    md5: str | None = None  # base64, as Storage reports it
    crc32c: str | None = None  # base64, as Storage reports it
    url: str | None = None  # a URL the apps can GET without credentials (None for downloads)
    metadata: dict[str, str] = field(default_factory=dict)
    updated: datetime | None = None  # when this generation was written


class _DeadlinePassed(Exception):
    pass


class _Deadline:
    """One time budget for an operation and everything it retries."""

    def __init__(self, seconds: float):
        self.seconds = seconds
        self._at = time.monotonic() + seconds

    def passed(self) -> bool:
        return time.monotonic() >= self._at

    def check(self) -> None:
        if self.passed():
            raise _DeadlinePassed(f"gave up after {self.seconds:g} s")

    def retry(self) -> Retry:
        # The library retries per request (per chunk of an upload); the predicate makes the
        # budget span all of them.
        return Retry(predicate=lambda exc: _is_transient(exc) and not self.passed(),
                     initial=min(0.5, self.seconds / 8), maximum=min(8.0, self.seconds / 4),
                     multiplier=2.0, timeout=self.seconds)

    def request_timeout(self) -> tuple[float, float]:
        """(connect, read) seconds for each HTTP request."""
        return min(10.0, self.seconds), min(60.0, self.seconds)


class _DeadlineReader(io.BufferedReader):
    """The file being uploaded; a read after the deadline ends the upload."""

    def __init__(self, path: Path, deadline: _Deadline):
        super().__init__(io.FileIO(path, "r"))
        self._deadline = deadline

    def read(self, size: int | None = -1) -> bytes:
        self._deadline.check()
        return super().read(size)


class _DeadlineWriter(io.BufferedWriter):
    """The file being downloaded into; a write after the deadline ends the download."""

    def __init__(self, path: Path, deadline: _Deadline):
        super().__init__(io.FileIO(path, "w"))
        self._deadline = deadline

    def write(self, data) -> int:
        self._deadline.check()
        return super().write(data)


def recording_upload(*, path: Path, object_name: str, content_type: str,
                     metadata: dict[str, str] | None = None,
                     bucket: Bucket | None = None) -> StoredObject:
    """Upload `path` to `object_name`, replacing any object of that name.

    Streamed from disk; files over 8 MiB go up as a resumable upload in chunks of
    `STORAGE_UPLOAD_CHUNK_BYTES` (smaller ones as one request — the library's rule).
    Transient failures are retried with backoff within `STORAGE_UPLOAD_TIMEOUT_SECONDS`.
    The stored CRC32C is checked against the file's; a mismatch removes the object and
    the upload is made once more from the start.
    Without signing credentials a Firebase download token is stored with the object so
    `url` works at once.
    """
    bucket = bucket or storage_bucket()
    deadline = _Deadline(_config().upload_timeout_seconds)
    local_crc32c = _file_crc32c(path)
    metadata = dict(metadata or {})
    if not _can_sign(bucket):
        metadata.setdefault(DOWNLOAD_TOKENS_KEY, str(uuid.uuid4()))
    upload = partial(_upload_once, bucket=bucket, path=path, object_name=object_name,
                     content_type=content_type, metadata=metadata,
                     local_crc32c=local_crc32c, deadline=deadline)
    try:
        blob = upload()
    except StorageError as error:
        if error.code != "storage_corrupt" or deadline.passed():
            raise
        blob = upload()  # the corrupt object is gone already; one fresh session is worth it
    return _stored(blob, url=_url(blob))


def _upload_once(*, bucket: Bucket, path: Path, object_name: str, content_type: str,
                 metadata: dict[str, str], local_crc32c: str, deadline: _Deadline) -> Blob:
    blob = bucket.blob(object_name, chunk_size=_chunk_bytes())
    blob.metadata = metadata or None
    try:
        with _DeadlineReader(path, deadline) as stream:
            # Retrying without a precondition is safe: Storage only ever creates whole
            # objects, and a chunk stored twice is caught by the checksum checks.
            blob.upload_from_file(stream, size=path.stat().st_size, content_type=content_type,
                                  checksum="auto", retry=deadline.retry(),
                                  timeout=deadline.request_timeout())
    except _FAILURES as exc:
        raise _storage_error(exc, f"upload {object_name}", deadline) from exc
    if blob.crc32c is not None and blob.crc32c != local_crc32c:
        _delete_quietly(blob)
        raise StorageError("storage_corrupt",
                           f"Storage holds other bytes than were sent for {object_name} "
                           f"(crc32c {blob.crc32c} != {local_crc32c}); removed it.")
    return blob


def recording_delete(*, object_name: str, bucket: Bucket | None = None) -> bool:
    """Delete the object; False when there was none."""
    bucket = bucket or storage_bucket()
    deadline = _Deadline(_config().request_timeout_seconds)
    try:
        bucket.delete_blob(object_name, retry=deadline.retry(),
                           timeout=deadline.request_timeout())
    except api_exceptions.NotFound:
        return False
    except _FAILURES as exc:
        raise _storage_error(exc, f"delete {object_name}", deadline) from exc
    return True


def recording_download(*, object_name: str, dst: Path,
                       bucket: Bucket | None = None) -> StoredObject:
    """Stream the object to `dst` (replaced only once the whole object has arrived and
    its checksum matched) within `STORAGE_UPLOAD_TIMEOUT_SECONDS`, retries included."""
    bucket = bucket or storage_bucket()
    deadline = _Deadline(_config().upload_timeout_seconds)
    part = dst.with_name(f".{dst.name}.{uuid.uuid4().hex}.part")
    try:
        blob = _existing_blob(bucket, object_name, deadline)
        with _DeadlineWriter(part, deadline) as out:
            # Pinned to the generation just read, so a concurrent re-upload cannot mix in.
            blob.download_to_file(out, if_generation_match=blob.generation, checksum="auto",
                                  retry=deadline.retry(), timeout=deadline.request_timeout())
        if blob.size is not None and part.stat().st_size != blob.size:
            raise StorageError("storage_corrupt",
                               f"Downloaded {part.stat().st_size} bytes of {object_name}, "
                               f"Storage says {blob.size}.")
        os.replace(part, dst)
    except _FAILURES as exc:
        raise _storage_error(exc, f"download {object_name}", deadline) from exc
    finally:
        part.unlink(missing_ok=True)
    return _stored(blob, url=None)


def recording_stat(*, object_name: str, bucket: Bucket | None = None) -> StoredObject:
    """The object's size, checksums, generation and time, without its bytes."""
    bucket = bucket or storage_bucket()
    deadline = _Deadline(_config().request_timeout_seconds)
    try:
        return _stored(_existing_blob(bucket, object_name, deadline), url=None)
    except _FAILURES as exc:
        raise _storage_error(exc, f"read the metadata of {object_name}", deadline) from exc


def recording_signed_url(*, object_name: str, ttl_seconds: int,
                         disposition: str | None = None,
                         bucket: Bucket | None = None) -> str | None:
    """A V4 signed GET URL living `ttl_seconds` (Storage serves HTTP Range on it itself),
    answered with the `Content-Disposition` header value `disposition` when given; None
    when the credentials cannot sign (the emulator, ADC without a key)."""
    bucket = bucket or storage_bucket()
    if not _can_sign(bucket):
        return None
    return _signed_url(bucket.blob(object_name), ttl_seconds=ttl_seconds,
                       disposition=disposition)


def recording_chunks(*, stored: StoredObject, start: int, end: int,
                     bucket: Bucket | None = None) -> Iterator[bytes]:
    """Bytes `start`..`end` (inclusive) of exactly the generation `stored` describes,
    fetched `STORAGE_STREAM_CHUNK_BYTES` [1 MiB] at a time with HTTP Range: memory stays
    at one chunk whatever the length. Raises StorageError (mid-stream too)."""
    bucket = bucket or storage_bucket()
    chunk_bytes = max(int(_config().stream_chunk_bytes), 1)
    blob = bucket.blob(stored.object_name, generation=stored.generation)
    position = start
    while position <= end:
        last = min(position + chunk_bytes - 1, end)
        deadline = _Deadline(_config().request_timeout_seconds)
        try:
            data = blob.download_as_bytes(start=position, end=last, checksum=None,
                                          retry=deadline.retry(),
                                          timeout=deadline.request_timeout())
        except _FAILURES as exc:
            raise _storage_error(exc, f"read {stored.object_name}", deadline) from exc
        if not data:
            raise StorageError("storage_corrupt", f"{stored.object_name} ended at {position} "
                               f"bytes, before the {end + 1} Storage reported.")
        yield data
        position += len(data)


_FAILURES = (
    api_exceptions.GoogleAPICallError,
    api_exceptions.RetryError,
    InvalidResponse,
    DataCorruption,
    auth_exceptions.GoogleAuthError,
    _DeadlinePassed,
    *_TRANSIENT_ERRORS,
)


def _is_transient(exc: BaseException) -> bool:
    if isinstance(exc, InvalidResponse):
        return exc.response.status_code in _TRANSIENT_STATUS
    if isinstance(exc, api_exceptions.GoogleAPICallError):
        return exc.code in _TRANSIENT_STATUS
    return isinstance(exc, _TRANSIENT_ERRORS)


def _storage_error(exc: BaseException, doing: str, deadline: _Deadline) -> StorageError:
    cause = exc.cause if isinstance(exc, api_exceptions.RetryError) and exc.cause else exc
    reason = f"{type(cause).__name__}: {cause}"[:300]
    if isinstance(exc, (_DeadlinePassed, api_exceptions.RetryError)) or _is_transient(cause):
        return StorageError("storage_unavailable",
                            f"Storage is unavailable: could not {doing} within "
                            f"{deadline.seconds:g} s ({reason}).")
    if isinstance(cause, api_exceptions.NotFound):
        return StorageError("storage_not_found", f"Could not {doing}: not found ({reason}).")
    if isinstance(cause, DataCorruption):
        return StorageError("storage_corrupt", f"Could not {doing}: {reason}.")
    return StorageError("storage_error", f"Could not {doing}: {reason}.")


def _existing_blob(bucket: Bucket, object_name: str, deadline: _Deadline) -> Blob:
    blob = bucket.get_blob(object_name, retry=deadline.retry(),
                           timeout=deadline.request_timeout())
    if blob is None:
        raise StorageError("storage_not_found", f"No object {object_name} in Storage.")
    return blob


def _can_sign(bucket: Bucket) -> bool:
    # A service account key signs locally; ADC on GCE and the emulator's anonymous
    # credentials cannot, so they get download-token URLs.
    return isinstance(bucket.client._credentials, Signing)


def _url(blob: Blob) -> str:
    if _can_sign(blob.bucket):
        return _signed_url(blob)
    return _token_url(blob, _download_token(blob))


def _signed_url(blob: Blob, *, ttl_seconds: float | None = None,
                disposition: str | None = None) -> str:
    if ttl_seconds is None:
        ttl_seconds = _config().url_ttl_seconds
    ttl = min(max(int(ttl_seconds), 1), MAX_URL_TTL_SECONDS)
    return blob.generate_signed_url(version="v4", method="GET",
                                    expiration=timedelta(seconds=ttl),
                                    response_disposition=disposition,
                                    credentials=blob.bucket.client._credentials)


def _download_token(blob: Blob) -> str | None:
    tokens = (blob.metadata or {}).get(DOWNLOAD_TOKENS_KEY, "")
    return next((t.strip() for t in tokens.split(",") if t.strip()), None)


def _token_url(blob: Blob, token: str) -> str:
    name = urllib.parse.quote(blob.name, safe="")
    query = urllib.parse.urlencode({"alt": "media", "token": token})
    if storage_emulated():
        emulator = os.environ["STORAGE_EMULATOR_HOST"]
        # fake-gcs-server has no Firebase /v0 API; this is its media URL (token ignored).
        base = f"{emulator.rstrip('/')}/download/storage/v1"
    else:
        base = FIREBASE_DOWNLOAD_BASE
    return f"{base}/b/{blob.bucket.name}/o/{name}?{query}"


def _stored(blob: Blob, *, url: str | None) -> StoredObject:
    return StoredObject(object_name=blob.name, size=int(blob.size or 0),
                        content_type=blob.content_type or "application/octet-stream",
                        generation=int(blob.generation or 0), md5=blob.md5_hash,
                        crc32c=blob.crc32c, url=url, metadata=dict(blob.metadata or {}),
                        updated=blob.updated)


def _delete_quietly(blob: Blob) -> None:
    try:
        blob.delete(if_generation_match=blob.generation, retry=None, timeout=10)
    except _FAILURES:
        pass  # the error about the corrupt object is what the caller needs


def _file_crc32c(path: Path) -> str:
    checksum = google_crc32c.Checksum()
    with path.open("rb") as file:
        while block := file.read(1024 * 1024):
            checksum.update(block)
    return base64.b64encode(checksum.digest()).decode()


def _chunk_bytes() -> int:
    wanted = int(_config().upload_chunk_bytes)
    return max(wanted // CHUNK_QUANTUM, 1) * CHUNK_QUANTUM

