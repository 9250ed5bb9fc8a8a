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

router = Router(tags=["health"])
_pool = ThreadPoolExecutor(max_workers=4, thread_name_prefix="health")


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


def _recorder_check() -> dict | None:
    with httpx.Client(timeout=settings.HEALTH_TIMEOUT_SECONDS) as http:
        response = http.get(settings.RECORDER_SERVICE_URL.rstrip("/") + "/health")
    response.raise_for_status()
    body = response.json()
    return {"browser": body.get("browser"), "sessions": body.get("sessions"),
            "disk": body.get("disk")}


def _storage_check() -> dict | None:
    bucket = firebase.storage_bucket()
    if not bucket.exists(timeout=settings.HEALTH_TIMEOUT_SECONDS, retry=None):
        raise LookupError("bucket missing")
    return None


@router.get("/live", auth=None, response=LiveOut, summary="Liveness (no I/O)")
def live(request: HttpRequest):
    return {"status": "ok"}


@router.get("", auth=None, response={200: HealthOut, 503: HealthOut},
            summary="Readiness: Firestore, Storage, recorder")
def health(request: HttpRequest):
    # 503 only without Firestore: the API still works without Storage or the recorder.
    firestore_future = _pool.submit(_probe, _firestore_check)
    storage_future = _pool.submit(_probe, _storage_check)
    recorder_future = (_pool.submit(_probe, _recorder_check)
                       if settings.RECORDER_SERVICE_URL else None)
    firestore, storage = firestore_future.result(), storage_future.result()
    recorder = recorder_future.result() if recorder_future else {"status": "not_configured"}
    if firestore["status"] != "ok":
        status = "down"
    elif storage["status"] != "ok":
        status = "degraded"
    else:
        status = "ok"
    body = {"status": status, "firestore": firestore, "storage": storage, "recorder": recorder,
            # the app uploads not yet in Storage (the recorder reports its own directory)
            "disk": disk_usage(settings.RECORDING_UPLOADS_DIR, recursive=True)}
    return JsonResponse(body, status=503 if status == "down" else 200)
