"""One JSON log line per request, with the request id the client also gets back."""

from __future__ import annotations

import pytest

from tests.conftest import api_log_lines, post_json

pytestmark = pytest.mark.usefixtures("any_channel")


def test_each_request_is_one_json_line_with_uid_and_request_id(client, bearer):
    response = post_json(client, "/api/token", {"channel": "c", "uid": 1}, bearer("alice"))
    request_id = response["X-Request-ID"]
    assert len(request_id) == 32
    lines = [line for line in api_log_lines()
             if line.get("request_id") == request_id and line["event"] == "request"]
    assert len(lines) == 1
    line = lines[0]
    assert line["method"] == "POST" and line["path"] == "/api/token"
    assert line["status"] == 200 and line["uid"] == "alice" and line["ms"] >= 0
    assert line["level"] == "info" and line["timestamp"].endswith("Z")


def test_a_sane_client_request_id_is_kept_and_a_hostile_one_replaced(client):
    kept = client.get("/api/health/live", headers={"X-Request-ID": "app-7f3a-0001"})
    assert kept["X-Request-ID"] == "app-7f3a-0001"
    replaced = client.get("/api/health/live", headers={"X-Request-ID": "x\nforged: yes"})
    assert replaced["X-Request-ID"] != "x\nforged: yes" and len(replaced["X-Request-ID"]) == 32


def test_tokens_never_reach_the_log(client, securetoken):
    id_token = securetoken.mint("alice")
    response = post_json(client, "/api/token", {"channel": "c", "uid": 1},
                         {"Authorization": f"Bearer {id_token}"})
    log_text = "\n".join(str(line) for line in api_log_lines())
    assert id_token not in log_text
    assert response.json()["token"] not in log_text
