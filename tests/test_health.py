"""Health tells ops which dependency is down, without secrets and without auth."""

from __future__ import annotations

from django.conf import settings


def test_health_reports_each_dependency_with_latency(client):
    response = client.get("/api/health")
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "ok"
    for dependency in ("firestore", "storage"):
        assert body[dependency]["status"] == "ok"
        assert body[dependency]["latencyMs"] >= 0
    assert body["recorder"] == {"status": "not_configured"}
    text = response.content.decode()
    for secret in (settings.AGORA_APP_CERT, settings.SECRET_KEY, settings.OPS_API_KEY):
        assert secret not in text


def test_liveness_needs_no_dependency(client):
    response = client.get("/api/health/live")
    assert response.status_code == 200 and response.json() == {"status": "ok"}
