"""The real server process: gunicorn with config/gunicorn.conf.py, over HTTP."""

from __future__ import annotations

import http.client
import json
import urllib.error
import urllib.parse
import urllib.request

import pytest

from devstack.emulators import free_port
from tests.helpers import storage_down


def _call(url: str, *, body: dict | None = None, headers: dict | None = None):
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, headers={
        "Content-Type": "application/json", **(headers or {})})
    try:
        with urllib.request.urlopen(request, timeout=20) as response:
            return response.status, json.load(response), dict(response.headers)
    except urllib.error.HTTPError as exc:
        return exc.code, json.load(exc), dict(exc.headers)


def test_gunicorn_serves_health_and_tokens_with_real_id_tokens(start_server, securetoken):
    base = start_server()
    status, body, _ = _call(f"{base}/api/health")
    assert status == 200 and body["status"] == "ok"
    alice = {"Authorization": f"Bearer {securetoken.mint('alice')}"}
    status, call, _ = _call(f"{base}/api/call/invite", headers=alice, body={
        "group_id": "g1", "caller_id": "alice", "receiver_id": "bob"})
    assert status == 200 and call["channelName"].startswith("g1_alice_bob_")
    status, body, headers = _call(
        f"{base}/api/token", body={"channel": call["channelName"], "uid": 7},
        headers={**alice, "X-Request-ID": "client-chosen-id-123"})
    assert status == 200 and body["token"].startswith("007")
    assert headers["X-Request-ID"] == "client-chosen-id-123"


def test_firestore_down_makes_health_503_quickly(start_server):
    base = start_server(FIRESTORE_EMULATOR_HOST=f"127.0.0.1:{free_port()}",
                        HEALTH_TIMEOUT_SECONDS="1")
    status, body, _ = _call(f"{base}/api/health")
    assert status == 503
    assert body["status"] == "down"
    assert body["firestore"]["status"] == "down" and body["storage"]["status"] == "ok"


def test_storage_down_degrades_health_but_stays_200(start_server):
    base = start_server(**storage_down(), HEALTH_TIMEOUT_SECONDS="1")
    status, body, _ = _call(f"{base}/api/health")
    assert status == 200
    assert body["status"] == "degraded"
    assert body["firestore"]["status"] == "ok" and body["storage"]["status"] == "down"


def _raw_get(base: str, path: str, *, host: str | None = None):
    """(status, content type, body) of a GET sending `host` as the Host header."""
    connection = http.client.HTTPConnection(urllib.parse.urlsplit(base).netloc, timeout=20)
    try:
        connection.putrequest("GET", path, skip_host=host is not None)
        if host is not None:
            connection.putheader("Host", host)
        connection.endheaders()
        response = connection.getresponse()
        return response.status, response.getheader("Content-Type", ""), response.read()
    finally:
        connection.close()


@pytest.mark.parametrize("debug", ["0", "1"], ids=["production", "dev-mode"])
def test_gunicorn_answers_a_bad_host_and_an_unknown_path_with_json(start_server, debug):
    base = start_server(MEMHARBOR_DEBUG=debug)
    status, content_type, body = _raw_get(base, "/api/health/live", host="evil.example")
    assert (status, content_type) == (400, "application/json"), body
    assert json.loads(body)["error"]["code"] == "disallowed_host"
    status, content_type, body = _raw_get(base, "/")
    assert (status, content_type) == (404, "application/json"), body
    assert json.loads(body) == {"success": False, "error": {
        "code": "not_found", "message": "No endpoint at /."}}


def test_gunicorn_refuses_a_chunked_json_body_with_411(start_server, securetoken):
    base = start_server()
    connection = http.client.HTTPConnection(urllib.parse.urlsplit(base).netloc, timeout=20)
    try:
        connection.request("POST", "/api/token", body=iter([b'{"channel": "c", ', b'"uid": 1}']),
                           encode_chunked=True, headers={
                               "Content-Type": "application/json",
                               "Authorization": f"Bearer {securetoken.mint('alice')}"})
        response = connection.getresponse()
        status, body = response.status, json.loads(response.read())
    finally:
        connection.close()
    assert status == 411, body
    assert body["success"] is False and body["error"]["code"] == "length_required"
