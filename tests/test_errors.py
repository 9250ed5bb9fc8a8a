"""Every failure a client can cause, and the ones it cannot, answer one JSON error shape."""

from __future__ import annotations

import pytest
from django.core.exceptions import BadRequest, PermissionDenied, SuspiciousOperation
from django.http import Http404
from django.test import override_settings
from django.urls import path

from config import urls as config_urls
from tests.conftest import api_log_lines, post_json

pytestmark = pytest.mark.usefixtures("any_channel")


def _error(response, status: int, code: str) -> dict:
    assert response.status_code == status, response.content
    assert response["Content-Type"].startswith("application/json")
    body = response.json()
    assert body["success"] is False
    assert body["error"]["code"] == code
    assert body["error"]["message"]
    return body["error"]


def test_validation_error_names_the_field(client, bearer):
    error = _error(post_json(client, "/api/token", {"channel": "c", "uid": "x"}, bearer("a")),
                   400, "validation_error")
    assert error["message"].startswith("uid:")
    assert error["details"][0]["field"] == "uid"


def test_an_empty_body_says_a_body_is_required(client, bearer):
    error = _error(post_json(client, "/api/token", "", bearer("a")), 400, "validation_error")
    assert "body is required" in error["message"]


def test_malformed_json_is_400(client, bearer):
    _error(post_json(client, "/api/token", '{"channel": ', bearer("a")), 400, "malformed_json")


def test_a_json_array_is_not_an_object(client, bearer):
    _error(post_json(client, "/api/token", "[1, 2]", bearer("a")), 400, "validation_error")


def test_an_oversized_body_is_413_before_it_is_read(client, bearer):
    huge = '{"channel": "' + "x" * 70_000 + '", "uid": 1}'
    _error(post_json(client, "/api/token", huge, bearer("a")), 413, "payload_too_large")


@pytest.mark.parametrize("content_type", ["text/plain", "application/x-www-form-urlencoded",
                                          "application/octet-stream", "text/json"])
def test_a_json_body_that_does_not_say_json_is_415(client, bearer, content_type):
    response = client.post("/api/token", data='{"channel": "c", "uid": 1}',
                           content_type=content_type, headers=bearer("a"))
    error = _error(response, 415, "unsupported_media_type")
    assert content_type in error["message"]


@pytest.mark.parametrize("content_type", ["application/json; charset=utf-8", "Application/JSON",
                                          "application/vnd.memharbor+json"])
def test_a_json_body_that_says_json_in_any_spelling_is_read(client, bearer, content_type):
    response = client.post("/api/token", data='{"channel": "c", "uid": 1}',
                           content_type=content_type, headers=bearer("a"))
    assert response.status_code == 200, response.content


def test_a_chunked_body_is_411_not_an_empty_body(client, bearer):
    response = client.post("/api/token", data='{"channel": "c", "uid": 1}',
                           content_type="application/json",
                           headers={**bearer("a"), "Transfer-Encoding": "chunked"})
    _error(response, 411, "length_required")


def test_an_unknown_path_is_404_json(client):
    error = _error(client.get("/api/no/such/thing"), 404, "not_found")
    assert "/api/no/such/thing" in error["message"]


def test_a_wrong_method_is_405_json_with_allow(client, bearer):
    response = client.get("/api/token", headers=bearer("a"))
    _error(response, 405, "method_not_allowed")
    assert response["Allow"] == "POST"


def test_auth_failure_is_401_json(client):
    _error(post_json(client, "/api/token", {"channel": "c", "uid": 1}), 401, "unauthenticated")


@override_settings(AGORA_APP_ID="not-a-valid-app-id")
def test_an_unexpected_failure_is_500_json_with_request_id_and_logged(client, bearer):
    response = post_json(client, "/api/token", {"channel": "c", "uid": 1}, bearer("a"))
    error = _error(response, 500, "internal_error")
    request_id = response["X-Request-ID"]
    assert error["requestId"] == request_id and request_id in error["message"]
    assert "Agora" not in response.content.decode()  # nothing of the exception is sent
    logged = [line for line in api_log_lines() if line.get("request_id") == request_id]
    crash = next(line for line in logged if line["event"] == "unhandled_exception")
    assert "RuntimeError" in crash["exception"] and "Traceback" in crash["exception"]
    assert any(line["event"] == "request" and line["status"] == 500 for line in logged)


# --- Django's own answers (its HTML pages) are JSON too ----------------------------------

@pytest.mark.parametrize("debug", [False, True], ids=["production", "dev-mode"])
def test_a_host_this_server_does_not_serve_is_400_json(client, debug):
    with override_settings(DEBUG=debug):
        response = client.get("/api/health/live", headers={"Host": "evil.example"})
    error = _error(response, 400, "disallowed_host")
    assert "evil.example" not in error["message"]


@pytest.mark.parametrize("path", ["/", "/favicon.ico", "/static/nothing.css"])
def test_dev_mode_answers_an_unknown_path_with_json_not_the_debug_page(client, path):
    with override_settings(DEBUG=True):
        error = _error(client.get(path), 404, "not_found")
    assert path in error["message"]


def _raises(exception: Exception):
    def view(request):
        raise exception
    return view


# This module is also the URLconf of the next test: config/urls.py plus views that raise
# what Django itself renders, with config/urls.py's handlers.
urlpatterns = [*config_urls.urlpatterns,
               path("suspicious", _raises(SuspiciousOperation("a forged header"))),
               path("bad-request", _raises(BadRequest("a broken request"))),
               path("denied", _raises(PermissionDenied())),
               path("missing", _raises(Http404())),
               path("crash", _raises(RuntimeError("a bug, secret=hunter2")))]
# (Django's defaults where config/urls.py names none.)
handler400, handler403, handler404, handler500 = (
    getattr(config_urls, f"handler{status}", f"django.views.defaults.{view}")
    for status, view in ((400, "bad_request"), (403, "permission_denied"),
                         (404, "page_not_found"), (500, "server_error")))


@pytest.mark.parametrize("debug", [False, True], ids=["production", "dev-mode"])
@pytest.mark.parametrize("path,status,code", [
    ("/suspicious", 400, "bad_request"),
    ("/bad-request", 400, "bad_request"),
    ("/denied", 403, "forbidden"),
    ("/missing", 404, "not_found"),
    ("/crash", 500, "internal_error"),
])
def test_djangos_error_handlers_answer_json(client, debug, path, status, code):
    with override_settings(ROOT_URLCONF=__name__, DEBUG=debug):
        response = client.get(path)
    _error(response, status, code)
    assert b"<" not in response.content and b"hunter2" not in response.content
