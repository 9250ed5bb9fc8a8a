"""Firestore `recorderNodes/{nodeId}`: the recorder processes that take sessions, each with
its URL, capacity (RECORDER_MAX_SESSIONS), sessions now and last heartbeat. Each recorder
writes its own document; the API's placement reads them all. No Django."""

from __future__ import annotations

from datetime import datetime

from integrations.firebase import firestore_client

COLLECTION = "recorderNodes"


def _nodes():
    return firestore_client().collection(COLLECTION)


def node_heartbeat(node_id: str, *, url: str, capacity: int, sessions: int,
                   now: datetime) -> None:
    """Register `node_id` or refresh it: where it is, how much it takes, how busy it is."""
    _nodes().document(node_id).set({"nodeId": node_id, "url": url, "capacity": capacity,
                                    "sessions": sessions, "heartbeatAt": now})


def node_remove(node_id: str) -> None:
    """A node that shuts down cleanly takes no more sessions."""
    _nodes().document(node_id).delete()


def nodes_all() -> list[dict]:
    return [snap.to_dict() for snap in _nodes().stream()]


def node_healthy(node: dict, *, now: datetime, heartbeat_seconds: float) -> bool:
    """A node is healthy while its last heartbeat is younger than three intervals."""
    beat = node.get("heartbeatAt")
    return isinstance(beat, datetime) and (now - beat).total_seconds() <= 3 * heartbeat_seconds
