"""Analysis jobs: the request's fields, checked (`job_from_request`), and the queue that
holds them while they wait for a worker or run (`JobQueue`).

A job is `queued` until a worker takes it, then `running` until the worker is done with
it; after that the queue forgets it, so the same `job_id` may be submitted again (to
analyse a recording once more). A `job_id` already queued or running is not queued twice.
"""

from __future__ import annotations

import re
import threading
import urllib.parse
from collections import deque
from dataclasses import dataclass

from .errors import InvalidField, QueueFull, ShuttingDown

JOB_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,127}")
LANGUAGE = re.compile(r"[A-Za-z]{2,3}([-_][A-Za-z0-9]{1,8})*")
MAX_URL_CHARS = 8192
DEFAULT_LANGUAGE = "ko"


@dataclass(frozen=True)
class Job:
    job_id: str
    audio_url: str
    callback_url: str
    duration_ms: int | None  # what the API believes; informational, the audio is measured
    spec: dict | None        # the recording's {sampleRate, channels, bitDepth}; informational
    language: str


def job_from_request(payload) -> Job:
    """The job a `POST /jobs` body describes. Raises InvalidField naming the first field
    that is missing or wrong."""
    if not isinstance(payload, dict):
        raise InvalidField("the body must be a JSON object", field="body")
    job_id = payload.get("job_id")
    if not isinstance(job_id, str) or not JOB_ID.fullmatch(job_id):
        raise InvalidField("job_id must be a string of 1-128 letters, digits or ._:- "
                           "(starting with a letter or digit)", field="job_id")
    audio_url = _http_url(payload, "audio_url")
    callback_url = _http_url(payload, "callback_url")
    duration_ms = payload.get("duration_ms")
    if duration_ms is not None and (isinstance(duration_ms, bool)
                                    or not isinstance(duration_ms, int) or duration_ms < 0):
        raise InvalidField("duration_ms must be a whole number of milliseconds >= 0, or null",
                           field="duration_ms")
    spec = payload.get("spec")
    if spec is not None and not isinstance(spec, dict):
        raise InvalidField("spec must be an object (e.g. {sampleRate, channels, bitDepth}) "
                           "or null", field="spec")
    language = payload.get("language")
    if language is None:
        language = DEFAULT_LANGUAGE
    if not isinstance(language, str) or not LANGUAGE.fullmatch(language):
        raise InvalidField("language must be a language tag such as 'ko', or null",
                           field="language")
    return Job(job_id=job_id, audio_url=audio_url, callback_url=callback_url,
               duration_ms=duration_ms, spec=spec, language=language)


def _http_url(payload: dict, field: str) -> str:
    value = payload.get(field)
    if not isinstance(value, str) or len(value) > MAX_URL_CHARS:
        raise InvalidField(f"{field} must be an http(s) URL", field=field)
    try:
        parts = urllib.parse.urlsplit(value)
    except ValueError:
        parts = None
    if parts is None or parts.scheme not in ("http", "https") or not parts.hostname:
        raise InvalidField(f"{field} must be an http(s) URL with a host", field=field)
    return value


class JobQueue:
    """Thread-safe: the web server submits, worker threads take. At most `max_queued` jobs
    wait; running ones do not count."""

    def __init__(self, *, max_queued: int) -> None:
        self.max_queued = max_queued
        self._cond = threading.Condition()
        self._waiting: deque[Job] = deque()
        self._running: dict[str, Job] = {}
        self._closed = False

    def submit(self, job: Job) -> str:
        """Queue `job`; returns its status, `queued`, or `running` for a `job_id` a worker
        already has (nothing is queued then). Raises QueueFull or ShuttingDown."""
        with self._cond:
            if self._closed:
                raise ShuttingDown("the analyzer is shutting down")
            if job.job_id in self._running:
                return "running"
            if any(waiting.job_id == job.job_id for waiting in self._waiting):
                return "queued"
            if len(self._waiting) >= self.max_queued:
                raise QueueFull(f"{len(self._waiting)} jobs are waiting already "
                                f"(ANALYZER_MAX_QUEUE={self.max_queued})")
            self._waiting.append(job)
            self._cond.notify()
            return "queued"

    def take(self) -> Job | None:
        """The next job (now `running`), waiting for one; None once the queue is closed."""
        with self._cond:
            while not self._waiting and not self._closed:
                self._cond.wait()
            if self._closed:
                return None
            job = self._waiting.popleft()
            self._running[job.job_id] = job
            return job

    def done(self, job: Job) -> None:
        with self._cond:
            self._running.pop(job.job_id, None)

    def close(self) -> list[Job]:
        """Refuse new jobs and stop handing out queued ones; returns those that were waiting
        (they will not run)."""
        with self._cond:
            self._closed = True
            waiting = list(self._waiting)
            self._waiting.clear()
            self._cond.notify_all()
            return waiting

    def counts(self) -> tuple[int, int]:
        """(queued, running)"""
        with self._cond:
            return len(self._waiting), len(self._running)
