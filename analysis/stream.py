"""A job's progress as Server-Sent Events (the `text/event-stream` body of
`GET /api/analysis/<job_id>/events`).

Change detection polls the job document (one point read every
ANALYSIS_STREAM_POLL_SECONDS) rather than holding a Firestore `on_snapshot` listener:
a listener is a gRPC stream plus a thread of the SDK's per open stream, and in a gthread
worker an abandoned stream is only noticed at its next write, so listeners would pile up
for every dropped client; a poll costs one read a second for a job that lives minutes,
needs no cleanup, and the job's `seq` says exactly what changed. Apps that want push
updates listen to `analysisJobs/{id}` directly (firestore.rules lets participants read it).

The stream: a comment at once (so proxies and clients see the response start), `retry:`,
then one event per change (`id:` the job's seq, `event:` progress | completed | failed,
`data:` the job as JSON), a comment heartbeat every ANALYSIS_STREAM_HEARTBEAT_SECONDS
without news, and the end after the final event or after ANALYSIS_STREAM_MAX_SECONDS
(the client reconnects with `Last-Event-ID` and gets only newer events).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator

from analysis import store
from analysis.states import EVENT_OF, FINAL, Status

RETRY_MS = 3000


def _event(job: dict, view: Callable[[dict], dict]) -> str:
    data = json.dumps(view(job), ensure_ascii=False, separators=(",", ":"))
    return f"id: {int(job.get('seq') or 0)}\nevent: {EVENT_OF[Status(job['status'])]}\ndata: {data}\n\n"


def job_events(job: dict, *, last_seq: int, view: Callable[[dict], dict], poll_seconds: float,
               heartbeat_seconds: float, max_seconds: float,
               sleep: Callable[[float], None] = time.sleep) -> Iterator[str]:
    """The event stream of `job` (as first read) after `last_seq`."""
    job_id = job["jobId"]
    started = last_write = time.monotonic()
    yield f": analysis {job_id}\nretry: {RETRY_MS}\n\n"
    while True:
        if job is None:
            return  # deleted meanwhile
        if int(job.get("seq") or 0) > last_seq:
            last_seq = int(job.get("seq") or 0)
            last_write = time.monotonic()
            yield _event(job, view)
        if Status(job["status"]) in FINAL:
            return
        now = time.monotonic()
        if now - started >= max_seconds:
            return
        if now - last_write >= heartbeat_seconds:
            last_write = now
            yield ": heartbeat\n\n"
        sleep(poll_seconds)
        job = store.job_read(job_id)
