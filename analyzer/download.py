"""Fetching a job's audio: streamed to a file, never more than the size limit.

A `Content-Length` above the limit is refused before any byte is read; without one the
stream is cut as soon as it passes the limit (sizes are counted after any
`Content-Encoding` is undone, so a compressed body cannot inflate past it either).
5xx answers and connection errors are retried with backoff; 4xx answers are final.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

import httpx

from .errors import JobFailed

log = logging.getLogger(__name__)

RETRY_DELAYS_S = (1.0, 3.0)  # so at most three attempts
TIMEOUT = httpx.Timeout(connect=10.0, read=30.0, write=30.0, pool=10.0)


def audio_download(*, client: httpx.Client, url: str, dst: Path, max_bytes: int,
                   should_stop: Callable[[], bool],
                   wait: Callable[[float], bool]) -> int:
    """Write the body of `GET url` to `dst`; returns its size in bytes. `should_stop()` is
    asked between chunks; `wait(seconds)` sleeps between attempts and returns True when
    the wait was cut short by a stop. Raises JobFailed: `audio_too_large`,
    `audio_not_found` (404/410), `audio_download_failed`, `shutting_down`."""
    last = "no attempt"
    for delay in (*RETRY_DELAYS_S, None):
        try:
            return _attempt(client=client, url=url, dst=dst, max_bytes=max_bytes,
                            should_stop=should_stop)
        except _Retryable as exc:
            last = str(exc)
        except httpx.HTTPError as exc:  # connection refused or reset, timeouts, bad answers
            last = f"{type(exc).__name__}: {exc}"
        dst.unlink(missing_ok=True)
        if delay is None:
            break
        log.info("download of %s failed (%s); retrying in %.0f s", _safe(url), last, delay)
        if wait(delay):
            raise JobFailed("shutting_down", "the analyzer stopped while downloading")
    raise JobFailed("audio_download_failed", f"the audio could not be downloaded: {last}")


class _Retryable(Exception):
    pass


def _attempt(*, client: httpx.Client, url: str, dst: Path, max_bytes: int,
             should_stop: Callable[[], bool]) -> int:
    with client.stream("GET", url) as response:
        status = response.status_code
        if status in (404, 410):
            raise JobFailed("audio_not_found", f"the audio URL answered {status}")
        if status >= 500:
            raise _Retryable(f"HTTP {status}")
        if not 200 <= status < 300:
            raise JobFailed("audio_download_failed", f"the audio URL answered {status}")
        length = response.headers.get("content-length", "")
        if length.isdigit() and int(length) > max_bytes:
            raise _too_large(max_bytes, f"has {int(length)} bytes")
        written = 0
        with dst.open("wb") as out:
            for chunk in response.iter_bytes():  # as it arrives: a sized chunk would wait
                if should_stop():
                    raise JobFailed("shutting_down", "the analyzer stopped while downloading")
                written += len(chunk)
                if written > max_bytes:
                    raise _too_large(max_bytes, "is longer")
                out.write(chunk)
        return written


def _too_large(max_bytes: int, size: str) -> JobFailed:
    return JobFailed("audio_too_large", f"the audio {size}, above the limit of {max_bytes} "
                     f"bytes (ANALYZER_MAX_AUDIO_MB)")


def _safe(url: str) -> str:
    """The URL without its query: signed URLs carry credentials there."""
    return url.split("?", 1)[0]
