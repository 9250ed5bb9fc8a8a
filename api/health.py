"""Health: liveness without I/O, and readiness with each dependency's state and latency."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

import httpx
from django.conf import settings
from django.http import HttpRequest, JsonResponse
from ninja import Router

from api.schemas import HealthOut, LiveOut
from core.disk import disk_usage
from integrations import firebase
from recorder_bridge import placement

router = Router(tags=["health"])
_pool = ThreadPoolExecutor(max_workers=4, thread_name_prefix="health")
# The recorder nodes' probes run beside the others (never queued behind them).
_node_pool = ThreadPoolExecutor(max_workers=8, thread_name_prefix="health-node")


def _probe(check) -> dict:
    started = time.perf_counter()
    try:
        detail = check()
    except Exception as exc:  # any failure is a state to report, never a 500
        return {"status": "down", "latencyMs": _ms(started), "error": type(exc).__name__}
    result = {"status": "ok", "latencyMs": _ms(started)}
    if detail:
        result.update(detail)
    return result


def _ms(started: float) -> float:
    return round((time.perf_counter() - started) * 1000, 1)


def _firestore_check() -> None:
    doc = firebase.firestore_client().collection("_health").document("ping")
    doc.get(timeout=settings.HEALTH_TIMEOUT_SECONDS, retry=None)


def _recorder_health(url: str) -> dict:
    """One recorder's own /health answer."""
    with httpx.Client(timeout=settings.HEALTH_TIMEOUT_SECONDS) as http:
        response = http.get(url.rstrip("/") + "/health")
    response.raise_for_status()
    return response.json()


def _recorder_check() -> dict:
    """RECORDER_SERVICE_URL alone: that recorder, as one node."""
    body = _recorder_health(settings.RECORDER_SERVICE_URL)
    sessions, capacity = int(body.get("sessions") or 0), body.get("capacity")
    free = max(int(capacity) - sessions, 0) if capacity is not None else None
    node = {"nodeId": body.get("nodeId"), "url": placement.url_public(
        settings.RECORDER_SERVICE_URL), "status": "ok", "healthy": True,
        "capacity": capacity, "sessions": sessions, "free": free,
        "browser": body.get("browser")}
    return {"browser": body.get("browser"), "sessions": sessions, "disk": body.get("disk"),
            "capacity": capacity, "freeCapacity": free, "nodes": [node]}


def _node_probe(url: str) -> dict:
    """A node's reachability (its counts are the registry's, as placement sees them)."""
    probed = _probe(lambda: _recorder_health(url))
    return {key: value for key, value in probed.items()
            if key in ("status", "latencyMs", "error", "browser", "disk")}


def _recorder_nodes_check() -> dict:
    """RECORDER_NODES: every registered node; a healthy one (fresh heartbeat) is also
    asked for its /health. Free capacity counts the nodes that are healthy and answer."""
    listed = placement.recorder_nodes_listed()
    probes = {node["nodeId"]: _node_pool.submit(_node_probe, url)
              for node, url in listed if node["healthy"]}
    nodes = []
    for node, _url in listed:
        if node["healthy"]:
            node = {**node, **probes[node["nodeId"]].result()}
        else:
            node = {**node, "status": "stale"}
        nodes.append(node)
    usable = [node for node in nodes if node["status"] == "ok"]
    result = {"sessions": sum(node["sessions"] for node in usable),
              "capacity": sum(node["capacity"] for node in usable),
              "freeCapacity": sum(node["free"] for node in usable), "nodes": nodes}
    if not usable:  # reported as down, with what is known of each node
        result.update(status="down", error="no_healthy_node")
    return result


def _storage_check() -> dict | None:
    bucket = firebase.storage_bucket()
    if not bucket.exists(timeout=settings.HEALTH_TIMEOUT_SECONDS, retry=None):
        raise LookupError("bucket missing")
    return None


@router.get("/live", auth=None, response=LiveOut, summary="Liveness (no I/O)")
def live(request: HttpRequest):
    return {"status": "ok"}


def readiness() -> dict:
    """Each dependency's state and latency, and the overall `status` (ok, degraded, down)."""
    firestore_future = _pool.submit(_probe, _firestore_check)
    storage_future = _pool.submit(_probe, _storage_check)
    recorder_check = (_recorder_nodes_check if settings.RECORDER_NODES
                      else _recorder_check if settings.RECORDER_SERVICE_URL else None)
    recorder_future = _pool.submit(_probe, recorder_check) if recorder_check else None
    firestore, storage = firestore_future.result(), storage_future.result()
    recorder = recorder_future.result() if recorder_future else {"status": "not_configured"}
    if firestore["status"] != "ok":
        status = "down"
    elif storage["status"] != "ok":
        status = "degraded"
    else:
        status = "ok"
    return {"status": status, "firestore": firestore, "storage": storage, "recorder": recorder,
            # the app uploads not yet in Storage (the recorder reports its own directory)
            "disk": disk_usage(settings.RECORDING_UPLOADS_DIR, recursive=True)}


@router.get("", auth=None, response={200: HealthOut, 503: HealthOut},
            summary="Readiness: Firestore, Storage, recorder")
def health(request: HttpRequest):
    # 503 only without Firestore: the API still works without Storage or the recorder.
    body = readiness()
    return JsonResponse(body, status=503 if body["status"] == "down" else 200)
