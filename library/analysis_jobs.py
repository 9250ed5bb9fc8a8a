"""What the library reads of `analysisJobs/{id}` (written by the analysis feature): a
recording's latest job, its transcript from Storage, and jobs counted per status."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import structlog
from google.cloud import firestore

from integrations.firebase import firestore_client
from media import storage

ANALYSIS_JOBS = "analysisJobs"
log = structlog.get_logger("library.analysis_jobs")


def _jobs():
    return firestore_client().collection(ANALYSIS_JOBS)


def recording_analysis(recording: dict) -> dict | None:
    """The job the recording names (`analysisId`), else any job naming the recording."""
    if recording.get("analysisId"):
        snap = _jobs().document(recording["analysisId"]).get()
        if snap.exists:
            return {**snap.to_dict(), "jobId": snap.id}
    query = _jobs().where(filter=firestore.FieldFilter(
        "recordingId", "==", recording["recordingId"])).limit(5)
    jobs = [{**snap.to_dict(), "jobId": snap.id} for snap in query.stream()]
    done = [job for job in jobs if (job.get("result") or {}).get("transcriptPath")]
    return (done or jobs or [None])[0]


def analysis_transcript(job: dict | None, *, max_bytes: int = 5 * 1024 * 1024) -> dict | None:
    """`{text, segments: [{start, end, text, words}]}` of a job's `result.transcriptPath`
    in Storage; None when there is none (or it cannot be read: the page shows nothing)."""
    path = ((job or {}).get("result") or {}).get("transcriptPath")
    if not path:
        return None
    with tempfile.TemporaryDirectory(prefix="transcript-") as folder:
        dst = Path(folder) / "t.json"
        try:
            if storage.recording_stat(object_name=path).size > max_bytes:
                return None
            storage.recording_download(object_name=path, dst=dst)
            data = json.loads(dst.read_text(encoding="utf-8"))
        except (storage.StorageError, ValueError, OSError) as exc:
            log.warning("transcript_unreadable", path=path, error=str(exc)[:200])
            return None
    segments = []
    for segment in data.get("segments") or []:
        try:
            start, end = float(segment["start"]), float(segment["end"])
        except (KeyError, TypeError, ValueError):
            continue
        segments.append({"start": start, "end": max(end, start),
                         "text": str(segment.get("text") or "")})
    return {"text": str(data.get("text") or ""), "segments": segments}


def analysis_counts(statuses: tuple[str, ...] = ("queued", "failed")) -> dict:
    """How many jobs are in each status (count aggregations)."""
    counts = {}
    for status in statuses:
        result = _jobs().where(filter=firestore.FieldFilter("status", "==", status)).count(
            alias="n").get()
        counts[status] = int(result[0][0].value)
    return counts
