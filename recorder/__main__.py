"""`python -m recorder`: serve until SIGTERM/SIGINT, then stop every session and exit 0."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys

from aiohttp import web

from .config import ConfigError, Settings
from .sessions import RecorderService
from .web import build_app

log = logging.getLogger("recorder")


async def serve(settings: Settings) -> None:
    service = RecorderService(settings)
    runner = web.AppRunner(build_app(service, fixtures_dir=settings.fixtures_dir),
                           access_log=None)
    await runner.setup()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    try:
        # Recovery finishes before the port opens, so a ready recorder has no stale sidecars.
        await service.open()
        site = web.TCPSite(runner, settings.host, settings.port)
        await site.start()
        if settings.secret is None:
            log.warning("RECORDER_ALLOW_NO_SECRET=1: the API accepts requests without a secret")
        log.info("recorder listening on http://%s:%s, recordings in %s", settings.host,
                 settings.port, settings.recordings_dir)
        await stop.wait()
        log.info("shutting down: stopping %d session(s)", len(service.sessions_active()))
    finally:
        # Sessions stop while the server still listens: their last chunks upload to it.
        await service.close()
        await runner.cleanup()


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
