"""`python -m recorder`: serve until SIGTERM/SIGINT, then stop every session and exit 0."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys

from aiohttp import web

from . import pipeline, registry
from .config import ConfigError, Settings
from .sessions import RecorderService
from .web import build_app

log = logging.getLogger("recorder")


def _finish_recording(session) -> dict:
    return pipeline.recording_finish(webm=session.path, sid=session.sid,
                                     channel=session.channel, call_id=session.call_id)


async def serve(settings: Settings) -> None:
    service = RecorderService(settings)
    service.on_stopped = _finish_recording
    pending: list[asyncio.Task] = []
    beat: asyncio.Task | None = None
    runner = web.AppRunner(build_app(service, fixtures_dir=settings.fixtures_dir),
                           access_log=None)
    await runner.setup()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    try:
        # Uploads a previous process did not finish (Storage down, crash while processing);
        # listed before recovery marks the crashed recordings, which it processes itself.
        retries = pipeline.recordings_to_retry(settings.recordings_dir)
        # Recovery finishes before the port opens, so a ready recorder has no stale sidecars
        # and no media of recordings already stored.
        await asyncio.to_thread(pipeline.recordings_clean_completed, settings.recordings_dir)
        await service.open()
        pending += [asyncio.create_task(asyncio.to_thread(pipeline.recording_finish, **item))
                    for item in retries]
        site = web.TCPSite(runner, settings.host, settings.port)
        await site.start()
        if settings.node_id:
            beat = asyncio.create_task(registry.heartbeat(service))
            log.info("registered as recorder node %s at %s (capacity %d)", settings.node_id,
                     settings.node_url, settings.max_sessions)
        if settings.secret is None:
            log.warning("RECORDER_ALLOW_NO_SECRET=1: the API accepts requests without a secret")
        log.info("recorder listening on http://%s:%s, recordings in %s", settings.host,
                 settings.port, settings.recordings_dir)
        await stop.wait()
        log.info("shutting down: stopping %d session(s)", len(service.sessions_active()))
    finally:
        if beat is not None:  # no new sessions placed here while the others stop
            beat.cancel()
            await registry.deregister(service)
        # Sessions stop while the server still listens: their last chunks upload to it.
        await service.close()
        await runner.cleanup()
        for task in pending:  # an unfinished upload is retried by the next start
            task.cancel()


def main() -> int:
    logging.basicConfig(level=os.environ.get("RECORDER_LOG_LEVEL", "INFO"),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        stream=sys.stdout)
    try:
        settings = Settings.from_env()
    except ConfigError as exc:
        log.error("%s", exc)
        return 2
    asyncio.run(serve(settings))
    return 0


if __name__ == "__main__":
    sys.exit(main())
