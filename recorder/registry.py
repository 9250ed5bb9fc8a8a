"""This recorder in Firestore `recorderNodes/{nodeId}` (when RECORDER_NODE_ID is set):
registered once it listens, a heartbeat every RECORDER_HEARTBEAT_SECONDS with its session
count, removed at a clean shutdown (a crashed node goes stale and the API skips it)."""

from __future__ import annotations

import asyncio
import logging

from core.clock import utc_now
from recordings import nodes

from .sessions import RecorderService

log = logging.getLogger(__name__)


async def heartbeat(service: RecorderService) -> None:
    settings = service.settings
    while True:
        try:
            await asyncio.to_thread(
                nodes.node_heartbeat, settings.node_id, url=settings.node_url,
                capacity=settings.max_sessions, sessions=len(service.sessions_active()),
                now=utc_now())
        except Exception as exc:  # Firestore away: the API sees a stale node meanwhile
            log.warning("heartbeat of node %s failed: %s", settings.node_id, exc)
        await asyncio.sleep(settings.heartbeat_seconds)


async def deregister(service: RecorderService) -> None:
    try:
        await asyncio.to_thread(nodes.node_remove, service.settings.node_id)
    except Exception as exc:
        log.warning("removing node %s failed: %s", service.settings.node_id, exc)
