"""The ops console (/ops/): sessions and CSRF over Django's test client, and the pages in a
real headless Chromium against a real gunicorn: sign-in, the live Now page, a call's
timeline, playback, the transcript, a review and a deletion from the console."""

from __future__ import annotations

import json
import struct
import zlib
from pathlib import Path

import pytest
from django.conf import settings
from django.test import Client

from api.console.session import limiter
from integrations.firebase import firestore_client, storage_bucket
from tests import test_library
from tests.test_calls import error_of, invite, stored
from tests.test_library import document, upload

media = test_library.media  # the library tests' audio files (3 s tones)

CHROMIUM = "/usr/bin/chromium"
WAIT_MS = 15_000  # every browser wait is bounded


@pytest.fixture(autouse=True)
def _fresh_limiter():
    limiter.clear()


def _signed_in(client: Client) -> Client:
    response = client.post("/ops/sign-in", {"credential": settings.OPS_API_KEY, "next": "/ops/"})
    assert response.status_code == 302, response.content
    return client


def _entries(action: str) -> list[dict]:
    from google.cloud.firestore import FieldFilter
    query = firestore_client().collection("auditLog").where(
        filter=FieldFilter("action", "==", action))
    return [snap.to_dict() for snap in query.stream()]


# --- sessions and CSRF (Django's client) ------------------------------------------------------

def test_pages_need_a_session_and_the_poll_answers_401():
    client = Client()
    response = client.get("/ops/calls")
    assert response.status_code == 302 and response["Location"] == "/ops/sign-in?next=/ops/calls"
    error_of(client.get("/ops/now.json"), 401, "unauthenticated")
    assert client.get("/ops/sign-in").status_code == 200


def test_sign_in_sets_a_strict_http_only_secure_cookie_and_sign_out_ends_it():
    client = _signed_in(Client())
    cookie = client.cookies[settings.SESSION_COOKIE_NAME]
    assert cookie["httponly"] and cookie["samesite"] == "Strict" and cookie["secure"]
    assert cookie["path"] == "/ops/"
    assert client.get("/ops/now.json").status_code == 200
    entry, = _entries("console_sign_in")
    assert (entry["uid"], entry["detail"]) == ("ops", {"via": "ops"})
    client.post("/ops/sign-out")
    assert client.get("/ops/now.json").status_code == 401


def test_a_wrong_key_or_a_non_admin_token_is_refused(bearer):
    client = Client()
    wrong = client.post("/ops/sign-in", {"credential": "not-the-key"})
    assert wrong.status_code == 401 and b"not the ops key" in wrong.content
    token = bearer("alice")["Authorization"].split()[1]
    assert client.post("/ops/sign-in", {"credential": token}).status_code == 403
    admin = bearer("root", admin=True)["Authorization"].split()[1]
    assert client.post("/ops/sign-in", {"credential": admin}).status_code == 302
    assert client.get("/ops/now.json").status_code == 200
    assert len(_entries("console_sign_in_failed")) == 2


def test_failed_sign_ins_are_rate_limited_even_for_the_right_key():
    client = Client()
    for _ in range(settings.CONSOLE_SIGNIN_MAX_FAILURES):
        assert client.post("/ops/sign-in", {"credential": "guess"}).status_code == 401
    blocked = client.post("/ops/sign-in", {"credential": settings.OPS_API_KEY})
    assert blocked.status_code == 429
    assert client.get("/ops/now.json").status_code == 401


def test_a_form_post_without_the_csrf_token_is_refused(as_user):
    call_id = invite(as_user)["callId"]
    strict = Client(enforce_csrf_checks=True)
    assert strict.post("/ops/sign-in", {"credential": settings.OPS_API_KEY}).status_code == 403
    page = strict.get("/ops/sign-in")  # sets the CSRF cookie, renders the token
    token = page.context["csrf_token"]
    assert strict.post("/ops/sign-in", {"credential": settings.OPS_API_KEY,
                                        "csrfmiddlewaretoken": token}).status_code == 302
    refused = strict.post(f"/ops/calls/{call_id}/review", {"humanNotes": "no token"})
    assert refused.status_code == 403
    assert stored(call_id)["reviewCount"] == 0
    detail = strict.get(f"/ops/calls/{call_id}")
    ok = strict.post(f"/ops/calls/{call_id}/review", {
        "humanNotes": "with token", "csrfmiddlewaretoken": detail.context["csrf_token"]})
    assert ok.status_code == 302 and stored(call_id)["humanNotes"] == "with token"


def test_every_page_renders_for_a_signed_in_admin(as_user):
    client = _signed_in(Client())
    call_id = invite(as_user)["callId"]
    for path in ("/ops/", f"/ops/calls?status=pending&user=alice", f"/ops/calls/{call_id}",
                 "/ops/recordings", "/ops/audit?action=console_sign_in"):
        response = client.get(path)
        assert response.status_code == 200, (path, response.content[:500])
    listed = client.get("/ops/calls?user=bob").content.decode()
    assert call_id in listed
    assert call_id not in client.get("/ops/calls?user=carol").content.decode()
    assert client.get("/ops/calls/nope").status_code == 404
    assert client.get("/static/console/console.js").status_code == 200
