"""Which recorder: RECORDER_SERVICE_URL alone, or (RECORDER_NODES) the healthy nodes in
Firestore `recorderNodes`, a new session going to the one with the most free capacity."""

from __future__ import annotations

from datetime import datetime
from urllib.parse import urlsplit, urlunsplit

from django.conf import settings

from core.clock import iso, utc_now
from core.errors import RecorderBusy, RecorderUnavailable
from recordings import nodes, store


def recorder_configured() -> bool:
    return bool(settings.RECORDER_NODES or settings.RECORDER_SERVICE_URL)


def _healthy() -> list[dict]:
    now = utc_now()
    healthy = [node for node in nodes.nodes_all()
               if node.get("url") and nodes.node_healthy(
                   node, now=now, heartbeat_seconds=settings.RECORDER_HEARTBEAT_SECONDS)]
    if not healthy:
        raise RecorderUnavailable("No recorder node is healthy (no recent heartbeat).")
    return healthy


def recorder_urls() -> list[str]:
    """Every recorder that may hold a session (for stop, status and retry)."""
    if settings.RECORDER_NODES:
        return [node["url"] for node in sorted(_healthy(), key=lambda n: n["nodeId"])]
    if not settings.RECORDER_SERVICE_URL:
        raise RecorderUnavailable("The recorder is not configured (RECORDER_SERVICE_URL).")
    return [settings.RECORDER_SERVICE_URL.rstrip("/")]


def recorder_urls_for_new_session() -> list[str]:
    """Where to try a new session, best first: most free capacity (ties by node id).
    503 recorder_busy when every healthy node is full."""
    if not settings.RECORDER_NODES:
        return recorder_urls()
    free = [(int(node.get("capacity") or 0) - int(node.get("sessions") or 0), node)
            for node in _healthy()]
    ranked = sorted((item for item in free if item[0] > 0),
                    key=lambda item: (-item[0], item[1]["nodeId"]))
    if not ranked:
        raise RecorderBusy()
    return [node["url"] for _, node in ranked]


def recorder_url_of_recording(sid: str | None) -> str | None:
    """The node that recorded `sid` (the document's `recorderNode`; its files are there),
    or None when that is not known (then every node is asked). 503 recorder_unavailable
    when that node is not healthy: no other node has the files."""
    if not settings.RECORDER_NODES or not sid:
        return None
    node_id = (store.recording_read(sid) or {}).get("recorderNode")
    if not node_id:
        return None
    url = recorder_node_urls().get(node_id)
    if url is None:
        raise RecorderUnavailable(f"The recorder node {node_id} that holds this recording "
                                  "is not healthy (no recent heartbeat).")
    return url


def recorder_node_urls() -> dict[str, str]:
    """nodeId -> URL of every healthy node ({} when none is)."""
    try:
        return {node["nodeId"]: node["url"] for node in _healthy()}
    except RecorderUnavailable:
        return {}


def url_public(url: str) -> str:
    """`url` without credentials, query or fragment (what health may show)."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    netloc = f"{host}:{parts.port}" if parts.port else host
    return urlunsplit((parts.scheme, netloc, parts.path.rstrip("/"), "", ""))


def recorder_nodes_listed() -> list[tuple[dict, str]]:
    """Every registered node, by node id, as health shows it (`nodeId`, `url` without
    credentials, `capacity`, `sessions`, `free`, `healthy`: a heartbeat within three
    RECORDER_HEARTBEAT_SECONDS, `heartbeatAt`, `heartbeatAgeSeconds`) with the URL it is
    reached at."""
    now = utc_now()
    listed = []
    for node in sorted(nodes.nodes_all(), key=lambda n: str(n.get("nodeId"))):
        capacity, sessions = int(node.get("capacity") or 0), int(node.get("sessions") or 0)
        beat = node.get("heartbeatAt")
        listed.append(({
            "nodeId": node.get("nodeId"), "url": url_public(node.get("url") or ""),
            "capacity": capacity, "sessions": sessions, "free": max(capacity - sessions, 0),
            "healthy": bool(node.get("url")) and nodes.node_healthy(
                node, now=now, heartbeat_seconds=settings.RECORDER_HEARTBEAT_SECONDS),
            "heartbeatAt": iso(beat) if beat else None,
            "heartbeatAgeSeconds": (round((now - beat).total_seconds(), 1)
                                    if isinstance(beat, datetime) else None)},
                       node.get("url") or ""))
    return listed
