"""A job's progress as Server-Sent Events (the `text/event-stream` body of
`GET /api/analysis/<job_id>/events`).

Two bodies with one behaviour: `job_events_async`, what the ASGI event-stream server
(`python -m config.events`, uvicorn; nginx routes the events there) streams on its event
loop, so an open stream costs a coroutine and a few kB, not a thread; and `job_events`, the
same stream as a plain generator for gunicorn's gthread workers (every path still answers
there, one thread per open stream). BENCHMARKS.md ("200 event streams") has the measurement
behind the choice. Each stream reads its job with Firestore's async client (a point read,
as in gunicorn; batching the streams' reads into BatchGetDocuments measured slower on the
emulator, whose batched reads cost more per document than concurrent point reads).

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

import asyncio
import json
import time
from collections.abc import AsyncIterator, Callable, Iterator

from analysis import store
from analysis.states import EVENT_OF, FINAL, Status

RETRY_MS = 3000


def _event(job: dict, view: Callable[[dict], dict]) -> str:
    data = json.dumps(view(job), ensure_ascii=False, separators=(",", ":"))
    return f"id: {int(job.get('seq') or 0)}\nevent: {EVENT_OF[Status(job['status'])]}\ndata: {data}\n\n"


class _Stream:
    """What to send for each read of the job; the same for both bodies."""

    def __init__(self, *, last_seq: int, view: Callable[[dict], dict],
                 heartbeat_seconds: float, max_seconds: float) -> None:
        self.last_seq, self.view = last_seq, view
        self.heartbeat_seconds, self.max_seconds = heartbeat_seconds, max_seconds
        self.started = self.last_write = time.monotonic()

    @staticmethod
    def opening(job_id: str) -> str:
        return f": analysis {job_id}\nretry: {RETRY_MS}\n\n"

    def step(self, job: dict | None) -> tuple[list[str], bool]:
        """(chunks to send, whether the stream ends after them) for `job` as just read."""
        if job is None:
            return [], True  # deleted meanwhile
        chunks = []
        if int(job.get("seq") or 0) > self.last_seq:
            self.last_seq = int(job.get("seq") or 0)
            self.last_write = time.monotonic()
            chunks.append(_event(job, self.view))
        if Status(job["status"]) in FINAL:
            return chunks, True
        now = time.monotonic()
        if now - self.started >= self.max_seconds:
            return chunks, True
        if now - self.last_write >= self.heartbeat_seconds:
            self.last_write = now
            chunks.append(": heartbeat\n\n")
        return chunks, False


def job_events(job: dict, *, last_seq: int, view: Callable[[dict], dict], poll_seconds: float,
               heartbeat_seconds: float, max_seconds: float,
               sleep: Callable[[float], None] = time.sleep) -> Iterator[str]:
    """The event stream of `job` (as first read) after `last_seq`, for a WSGI thread."""
    job_id = job["jobId"]
    stream = _Stream(last_seq=last_seq, view=view, heartbeat_seconds=heartbeat_seconds,
                     max_seconds=max_seconds)
    yield stream.opening(job_id)
    while True:
        chunks, done = stream.step(job)
        yield from chunks
        if done:
            return
        sleep(poll_seconds)
        job = store.job_read(job_id)


async def job_events_async(job: dict, *, last_seq: int, view: Callable[[dict], dict],
                           poll_seconds: float, heartbeat_seconds: float,
                           max_seconds: float) -> AsyncIterator[str]:
    """The same stream on an event loop (ASGI): a disconnected client cancels it."""
    job_id = job["jobId"]
    stream = _Stream(last_seq=last_seq, view=view, heartbeat_seconds=heartbeat_seconds,
                     max_seconds=max_seconds)
    yield stream.opening(job_id)
    loop = asyncio.get_running_loop()
    due = loop.time()
    while True:
        chunks, done = stream.step(job)
        for chunk in chunks:
            yield chunk
        if done:
            return
        # A read every poll_seconds from the stream's start, however long reads take: the
        # streams keep the phases they started with, and their reads stay spread out.
        due = max(due + poll_seconds, loop.time())
        await asyncio.sleep(due - loop.time())
        job = await store.job_read_async(job_id)
