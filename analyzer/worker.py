"""Running analysis jobs: worker threads take jobs from the queue and see each through,
from the download to the one terminal webhook (`completed` or `failed`).

Steps and the progress each reports: downloaded 10, measured 30, transcribing 30..95 (an
update per 10 points), completed 100. Progress never goes down. The job's files live in
one temporary directory, removed before the terminal webhook is sent.
"""

from __future__ import annotations

import logging
import tempfile
import threading
from pathlib import Path

import httpx

from media.audio import AudioError, InvalidWav, WavInfo, convert_to_wav, validate_wav

from .callbacks import CallbackRejected, CallbackSender, webhook_body
from .config import Settings
from .download import TIMEOUT as DOWNLOAD_TIMEOUT
from .download import audio_download
from .errors import JobFailed
from .jobs import Job, JobQueue
from .metrics import speech_metrics
from .transcribe import Transcriber

log = logging.getLogger(__name__)

ENGINE = "memharbor-analyzer"
PROGRESS_DOWNLOADED, PROGRESS_MEASURED, PROGRESS_TRANSCRIBED = 10, 30, 95
PROGRESS_STEP = 10  # between two transcribing updates


class Worker(threading.Thread):
    """Takes jobs until the queue closes. `abort` set: stop the running job at its next
    check and report it failed (`shutting_down`)."""

    def __init__(self, *, index: int, queue: JobQueue, settings: Settings,
                 transcriber: Transcriber | None, abort: threading.Event) -> None:
        super().__init__(name=f"analyzer-worker-{index}", daemon=True)
        self.queue = queue
        self.settings = settings
        self.transcriber = transcriber
        self.abort = abort

    def run(self) -> None:
        sender = CallbackSender(secret=self.settings.secret)
        with httpx.Client(timeout=DOWNLOAD_TIMEOUT, follow_redirects=True) as client:
            try:
                while (job := self.queue.take()) is not None:
                    try:
                        job_analyse(job=job, settings=self.settings,
                                    transcriber=self.transcriber, client=client,
                                    sender=sender, abort=self.abort)
                    except Exception:  # a bug in one job must not end the worker
                        log.exception("job %s: unexpected error", job.job_id)
                    finally:
                        self.queue.done(job)
            finally:
                sender.close()


def job_analyse(*, job: Job, settings: Settings, transcriber: Transcriber | None,
                client: httpx.Client, sender: CallbackSender, abort: threading.Event) -> None:
    """Analyse `job`, reporting to its callback URL; sends exactly one terminal webhook
    unless the receiver rejects a message (4xx), which ends the job silently."""
    progress = _Progress(sender=sender, job=job)
    log.info("job %s: started", job.job_id)
    try:
        try:
            with tempfile.TemporaryDirectory(dir=settings.work_dir,
                                             prefix="analyzer-job-") as tmp:
                result = _analyse(job=job, settings=settings, transcriber=transcriber,
                                  client=client, abort=abort, progress=progress,
                                  tmp=Path(tmp))
        except AudioError as exc:
            raise JobFailed(exc.code, exc.message) from exc
    except JobFailed as exc:
        log.info("job %s: failed (%s): %s", job.job_id, exc.code, exc.message)
        _deliver_final(sender, job, webhook_body(
            job_id=job.job_id, type="failed", progress=progress.value, message=exc.message,
            result={"error": exc.code}))
    except CallbackRejected as exc:
        log.info("job %s: dropped, %s", job.job_id, exc)
    except Exception as exc:
        log.exception("job %s: internal error", job.job_id)
        _deliver_final(sender, job, webhook_body(
            job_id=job.job_id, type="failed", progress=progress.value,
            message=f"internal error: {type(exc).__name__}", result={"error": "internal_error"}))
    else:
        log.info("job %s: completed", job.job_id)
        _deliver_final(sender, job, webhook_body(
            job_id=job.job_id, type="completed", progress=100, message="analysis completed",
            result=result))


def job_refuse(*, job: Job, sender: CallbackSender, code: str, message: str) -> None:
    """Report a job that will never run (it was still queued at shutdown) as failed."""
    _deliver_final(sender, job, webhook_body(job_id=job.job_id, type="failed", progress=0,
                                             message=message, result={"error": code}))


def _analyse(*, job: Job, settings: Settings, transcriber: Transcriber | None,
             client: httpx.Client, abort: threading.Event, progress: _Progress,
             tmp: Path) -> dict:
    audio = tmp / "audio"
    audio_download(client=client, url=job.audio_url, dst=audio,
                   max_bytes=settings.max_audio_bytes, should_stop=abort.is_set,
                   wait=abort.wait)
    progress.report(PROGRESS_DOWNLOADED, "audio downloaded")
    wav = _speech_wav(audio, tmp / "speech.wav")
    metrics = speech_metrics(wav=wav.path, frames=wav.frames, should_stop=abort.is_set)
    progress.report(PROGRESS_MEASURED, "audio measured")
    transcript = None
    if transcriber is not None:
        span = PROGRESS_TRANSCRIBED - PROGRESS_MEASURED
        transcript = transcriber.transcribe(
            wav=wav.path, frames=wav.frames, should_stop=abort.is_set,
            on_progress=lambda done: progress.report(
                PROGRESS_MEASURED + int(span * done), f"transcribing {int(done * 100)}%",
                step=PROGRESS_STEP))
        progress.report(PROGRESS_TRANSCRIBED, "transcript ready")
    return {"summary": None, "language": job.language, "engine": ENGINE,
            "transcriber": transcriber.name if transcriber else "none",
            "metrics": metrics, "transcript": transcript}


def _speech_wav(audio: Path, converted: Path) -> WavInfo:
    """`audio` itself when it is a speech-ready WAV already (what the API stores), else
    `audio` converted to one (a truncated file is analysed as far as it goes)."""
    try:
        return validate_wav(path=audio)
    except InvalidWav:
        return convert_to_wav(src=audio, dst=converted, allow_truncated=True)


def _deliver_final(sender: CallbackSender, job: Job, body: dict) -> None:
    try:
        sender.deliver(job.callback_url, body)
    except CallbackRejected as exc:
        log.info("job %s: %s webhook refused: %s", job.job_id, body["type"], exc)


class _Progress:
    """The last progress reported; reports only values above it (and, with `step`, only
    once they are `step` points above it)."""

    def __init__(self, *, sender: CallbackSender, job: Job) -> None:
        self.sender = sender
        self.job = job
        self.value = 0

    def report(self, value: int, message: str, *, step: int = 1) -> None:
        """Raises CallbackRejected when the receiver refuses it (4xx)."""
        value = min(int(value), PROGRESS_TRANSCRIBED)
        if value - self.value < step:
            return
        self.value = value
        self.sender.deliver(self.job.callback_url, webhook_body(
            job_id=self.job.job_id, type="progress", progress=value, message=message))
