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

from integrations.firebase import firestore_client, storage_bucket
from tests import test_library
from tests.helpers import document, error_of, invite, stored, upload

media = test_library.media  # the library tests' audio files (3 s tones)

CHROMIUM = "/usr/bin/chromium"
WAIT_MS = 15_000  # every browser wait is bounded


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
    copied = client.cookies[settings.SESSION_COOKIE_NAME].value
    client.post("/ops/sign-out")
    assert client.get("/ops/now.json").status_code == 401
    thief = Client()  # a copy of the cookie taken before the sign-out no longer works
    thief.cookies[settings.SESSION_COOKIE_NAME] = copied
    error_of(thief.get("/ops/now.json"), 401, "unauthenticated")


def test_a_session_is_kept_in_firestore_under_a_hash_of_its_key_and_expires():
    import hashlib

    from core.clock import utc_now
    client = _signed_in(Client())
    key = client.cookies[settings.SESSION_COOKIE_NAME].value
    sessions = firestore_client().collection("consoleSessions")
    snapshot = sessions.document(hashlib.sha256(key.encode()).hexdigest()).get()
    assert snapshot.exists and key not in json.dumps(snapshot.to_dict(), default=str)
    assert snapshot.get("expireAt") > utc_now()
    snapshot.reference.update({"expireAt": utc_now()})  # as a TTL policy would find it
    error_of(client.get("/ops/now.json"), 401, "unauthenticated")


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


def test_failed_sign_ins_count_in_every_process(start_server):
    """Failures counted here (the test's process) refuse the right key in a gunicorn."""
    import http.cookiejar
    import re
    import urllib.error
    import urllib.parse
    import urllib.request
    for _ in range(settings.CONSOLE_SIGNIN_MAX_FAILURES):
        assert Client().post("/ops/sign-in", {"credential": "guess"}).status_code == 401
    base = start_server(CONSOLE_COOKIE_SECURE="0")  # urllib keeps Secure cookies off http
    opener = urllib.request.build_opener(
        urllib.request.HTTPCookieProcessor(http.cookiejar.CookieJar()))
    form = opener.open(f"{base}/ops/sign-in", timeout=10).read().decode()
    token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', form).group(1)
    body = urllib.parse.urlencode({"credential": settings.OPS_API_KEY,
                                   "csrfmiddlewaretoken": token}).encode()
    with pytest.raises(urllib.error.HTTPError) as refused:
        opener.open(urllib.request.Request(f"{base}/ops/sign-in", data=body,
                                           headers={"Referer": f"{base}/ops/sign-in"}),
                    timeout=10)
    assert refused.value.code == 429


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
    for path in ("/ops/", "/ops/calls?status=pending&user=alice", f"/ops/calls/{call_id}",
                 "/ops/recordings", "/ops/audit?action=console_sign_in"):
        response = client.get(path)
        assert response.status_code == 200, (path, response.content[:500])
    listed = client.get("/ops/calls?user=bob").content.decode()
    assert call_id in listed
    assert call_id not in client.get("/ops/calls?user=carol").content.decode()
    assert client.get("/ops/calls/nope").status_code == 404
    assert client.get("/static/console/console.js").status_code == 200
    csp = client.get("/ops/")["Content-Security-Policy"]
    assert "script-src 'self'" in csp and "frame-ancestors 'none'" in csp


@pytest.mark.parametrize("path, field", [
    ("/ops/calls?date_from=2024-13-45", "date_from"),
    ("/ops/calls?date_to=9999-12-31", "date_to"),  # the day after it does not exist
    ("/ops/recordings?date_to=9999-12-31T23:59:59", "date_to"),
    ("/ops/audit?before=yesterday", "before"),
])
def test_bad_filters_are_a_400_page_naming_the_field(path, field):
    response = _signed_in(Client()).get(path)
    assert response.status_code == 400, response.content[:300]
    assert f"{field}: " in response.content.decode()


def test_the_console_shows_retention_and_runs_the_sweep(settings, client, bearer, as_user,
                                                        media):
    from datetime import timedelta

    from core.clock import iso, utc_now
    call_id = invite(as_user)["callId"]
    old = upload(client, bearer("alice"), call_id, media["m4a"]).json()["recordingId"]
    firestore_client().collection("recordings").document(old).update(
        {"recordedAt": iso(utc_now() - timedelta(days=40))})
    console = _signed_in(Client())
    assert "kept forever" in console.get("/ops/").content.decode()
    settings.RECORDING_RETENTION_DAYS = 30
    now_page = console.get("/ops/").content.decode()
    assert "30 days: <strong>1</strong> recording past it" in now_page
    report = console.post("/ops/sweep")
    assert report.status_code == 200
    assert report.context["parts"]["retention"] == {"retentionDays": 30, "deleted": 1,
                                                    "deleting": 0}
    assert document(old)["status"] == "deleted"
    entry, = _entries("sweep")
    assert entry["uid"] == "ops"


# --- in a real browser against gunicorn -------------------------------------------------------

def png_colours(data: bytes, *, enough: int = 8) -> int:
    """How many different pixels a PNG screenshot has (up to `enough`): 1 means blank."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, idat, width, height, depth, kind = 8, b"", 0, 0, 8, 2
    while pos < len(data):
        length, tag = struct.unpack(">I4s", data[pos:pos + 8])
        chunk = data[pos + 8:pos + 8 + length]
        if tag == b"IHDR":
            width, height, depth, kind = struct.unpack(">IIBB", chunk[:10])
        elif tag == b"IDAT":
            idat += chunk
        pos += 12 + length
    assert depth == 8 and kind in (2, 6), (depth, kind)
    bpp = 3 if kind == 2 else 4
    raw, stride = zlib.decompress(idat), width * bpp
    previous, seen = bytearray(stride), set()
    for row in range(height):
        start = row * (stride + 1)
        method, line = raw[start], bytearray(raw[start + 1:start + 1 + stride])
        for i in range(stride):
            left = line[i - bpp] if i >= bpp else 0
            up, corner = previous[i], previous[i - bpp] if i >= bpp else 0
            if method == 1:
                line[i] = (line[i] + left) & 255
            elif method == 2:
                line[i] = (line[i] + up) & 255
            elif method == 3:
                line[i] = (line[i] + (left + up) // 2) & 255
            elif method == 4:
                p = left + up - corner
                pa, pb, pc = abs(p - left), abs(p - up), abs(p - corner)
                line[i] = (line[i] + (left if pa <= pb and pa <= pc else up if pb <= pc else corner)) & 255
        for i in range(0, stride, bpp * 7):
            seen.add(bytes(line[i:i + bpp]))
        if len(seen) >= enough:
            return len(seen)
        previous = line
    return len(seen)


@pytest.fixture(scope="module")
def chromium():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM, headless=True,
            args=["--headless=new", "--no-sandbox", "--autoplay-policy=no-user-gesture-required",
                  "--mute-audio"])
        yield browser
        browser.close()


@pytest.fixture
def console(chromium, start_server, tmp_path):
    """A signed-in console page on a fresh gunicorn; `shot(name)` saves a screenshot of
    the page under tmp_path and checks it is not blank."""
    base = start_server()
    context = chromium.new_context(viewport={"width": 1100, "height": 900})
    page = context.new_page()
    page.set_default_timeout(WAIT_MS)
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.on("dialog", lambda dialog: dialog.accept())

    def shot(name: str) -> Path:
        path = tmp_path / f"{name}.png"
        page.screenshot(path=str(path), full_page=True)
        assert png_colours(path.read_bytes()) >= 8, f"{name}: the screenshot is blank"
        return path

    page.goto(f"{base}/ops/")
    page.fill("#credential", settings.OPS_API_KEY)
    page.click("#sign-in button[type=submit]")
    page.wait_for_url(f"{base}/ops/")
    page.base, page.shot = base, shot
    yield page
    context.close()
    assert errors == [], errors


def test_a_wrong_key_is_refused_in_the_browser(chromium, start_server, tmp_path):
    base = start_server()
    context = chromium.new_context()
    page = context.new_page()
    page.set_default_timeout(WAIT_MS)
    page.goto(f"{base}/ops/calls")
    assert page.url.startswith(f"{base}/ops/sign-in")
    page.fill("#credential", "wrong-key")
    page.click("#sign-in button[type=submit]")
    assert page.locator("#error").get_attribute("data-code") == "invalid_credential"
    page.screenshot(path=str(tmp_path / "sign-in-refused.png"))
    assert png_colours((tmp_path / "sign-in-refused.png").read_bytes()) >= 8
    page.fill("#credential", settings.OPS_API_KEY)
    page.click("#sign-in button[type=submit]")
    page.wait_for_url(f"{base}/ops/calls")
    cookies = {c["name"]: c for c in context.cookies()}
    session = cookies[settings.SESSION_COOKIE_NAME]
    assert session["httpOnly"] and session["sameSite"] == "Strict"
    assert page.evaluate("document.cookie") == ""  # nothing the page's scripts can read
    context.close()


def test_the_now_page_shows_a_call_while_it_rings_and_drops_it_when_it_ends(console, as_user):
    page = console
    page.evaluate("window.notReloaded = true")
    call_id = invite(as_user)["callId"]
    row = page.locator(f'#active tr[data-call-id="{call_id}"]')
    row.wait_for(state="visible")
    assert "alice → bob" in row.inner_text() and "pending" in row.inner_text()
    page.shot("now-ringing")
    as_user("bob").post("/api/call/answer", {"call_id": call_id, "action": "accept"})
    page.wait_for_function(
        """id => document.querySelector(`#active tr[data-call-id="${id}"] .st`)
            ?.textContent === 'accepted'""", arg=call_id, timeout=WAIT_MS)
    as_user("alice").post("/api/call/end", {"call_id": call_id})
    row.wait_for(state="detached")
    assert page.evaluate("window.notReloaded") is True
    assert page.locator("#active tr.empty").is_visible()
    page.wait_for_function(
        "() => document.querySelector('#today-status dd[data-key=ended]').textContent === '1'",
        timeout=WAIT_MS)
    page.shot("now-ended")


def test_call_detail_shows_the_timeline_plays_the_recording_and_seeks_by_transcript(
        console, as_user, client, bearer, media):
    page = console
    call_id = invite(as_user)["callId"]
    as_user("bob").post("/api/call/answer", {"call_id": call_id, "action": "accept"})
    call = stored(call_id)
    firestore_client().collection("calls").document(call_id).update({
        "pushDevices": {"phone-1": {"platform": "ios", "sent": True, "error": None},
                        "tablet-2": {"platform": "android", "sent": False,
                                     "error": "unregistered"}},
        "presence": {"alice": {"inChannel": False, "joinedAt": call["answeredAt"],
                               "leftAt": call["answeredAt"], "leaveReason": "quit"}}})
    as_user("alice").post("/api/call/end", {"call_id": call_id})
    recording_id = upload(client, bearer("alice"), call_id, media["m4a"]).json()["recordingId"]
    transcript = {"text": "hello mum how are you",
                  "segments": [{"start": 0.2, "end": 1.0, "text": "hello mum", "words": []},
                               {"start": 1.8, "end": 2.7, "text": "how are you", "words": []}]}
    storage_bucket().blob("analysis/job-9.json").upload_from_string(json.dumps(transcript))
    firestore_client().collection("analysisJobs").document("job-9").set(
        {"recordingId": recording_id, "status": "completed",
         "result": {"transcriptPath": "analysis/job-9.json"}})

    page.goto(f"{page.base}/ops/calls/{call_id}")
    timeline = page.locator("#timeline").inner_text()
    end_reason = stored(call_id)["endReason"]
    assert end_reason
    for text in ("alice invited bob", "push to phone-1 (ios): rang",
                 "push to tablet-2 (android): not rung (unregistered)", "bob answered",
                 "alice joined the channel", "alice left the channel (quit)",
                 f"ended by alice: {end_reason}"):
        assert text in timeline, (text, timeline)
    kinds = page.locator("#timeline li").evaluate_all("items => items.map(i => i.dataset.kind)")
    assert kinds == ["invite", "push", "push", "answer", "join", "leave", "end"]
    assert page.locator(".strip rect.speech").count() == 2
    page.shot("call-detail")

    audio = page.locator(f'article[data-recording-id="{recording_id}"] audio')
    audio.evaluate("a => a.play()")
    page.wait_for_function("a => a.currentTime > 0.5 && !a.error",
                           arg=audio.element_handle(), timeout=WAIT_MS)
    assert audio.evaluate("a => a.error") is None
    page.locator(".transcript .seg", has_text="how are you").click()
    page.wait_for_function("a => a.currentTime >= 1.8", arg=audio.element_handle(),
                           timeout=WAIT_MS)
    entries = _entries("stream")
    assert entries and entries[0]["uid"] == "ops" and entries[0]["target"] == recording_id


def test_a_review_saved_in_the_console_shows_in_the_call_status(console, as_user):
    page = console
    call_id = invite(as_user)["callId"]
    page.goto(f"{page.base}/ops/calls/{call_id}")
    page.fill("#humanSummary", "Talked about the garden.")
    page.fill("#humanKeywords", "garden, weather")
    page.fill("#humanNotes", "Call again on Sunday.")
    page.click("#review button[type=submit]")
    page.locator("#saved").wait_for()
    status = as_user("alice").get(f"/api/call/status/{call_id}").json()
    assert (status["humanSummary"], status["humanKeywords"], status["humanNotes"],
            status["reviewCount"]) == ("Talked about the garden.", ["garden", "weather"],
                                       "Call again on Sunday.", 1)
    assert page.locator("#humanKeywords").input_value() == "garden, weather"
    page.shot("review-saved")
    entry, = _entries("review")
    assert (entry["uid"], entry["target"], entry["detail"]["console"]) == ("ops", call_id, True)


def test_deleting_from_the_console_makes_stream_answer_410(console, as_user, client, bearer,
                                                          media):
    page = console
    call_id = invite(as_user)["callId"]
    recording_id = upload(client, bearer("alice"), call_id, media["ogg"]).json()["recordingId"]
    page.goto(f"{page.base}/ops/recordings")
    card = page.locator(f'article[data-recording-id="{recording_id}"]')
    assert "completed" in card.inner_text()
    page.shot("recordings")
    card.locator("button.danger").click()
    page.locator("#done").wait_for()
    assert document(recording_id)["status"] == "deleted"
    error_of(client.get(f"/api/recordings/{recording_id}/stream", headers=bearer("alice")),
             410, "recording_deleted")
    assert page.request.get(f"{page.base}/ops/recordings/{recording_id}/stream").status == 410
    page.goto(f"{page.base}/ops/audit")
    log = page.locator("#audit").inner_text()
    assert "delete" in log and recording_id in log and "console_sign_in" in log
    page.shot("access-log")
    page.goto(f"{page.base}/ops/calls")
    assert page.locator(f'#calls tr[data-call-id="{call_id}"]').is_visible()
    page.shot("calls")


def test_the_pages_fit_a_phone_screen(console, as_user):
    page = console
    call_id = invite(as_user)["callId"]
    page.set_viewport_size({"width": 390, "height": 844})
    for path, name in (("/ops/", "phone-now"), (f"/ops/calls/{call_id}", "phone-call"),
                       ("/ops/calls", "phone-calls"), ("/ops/recordings", "phone-recordings"),
                       ("/ops/audit", "phone-audit")):
        page.goto(page.base + path)
        width = page.evaluate("[document.documentElement.scrollWidth, window.innerWidth]")
        assert width[0] <= width[1], (path, width)
        page.shot(name)


def test_the_now_page_shows_the_recorder_nodes_and_their_free_capacity(
        chromium, start_server, start_recorder, tmp_path):
    from devstack.emulators import wait_until
    from recordings.nodes import nodes_all

    node = start_recorder(RECORDER_NODE_ID="node-a", RECORDER_MAX_SESSIONS="3")
    wait_until(lambda: any(n.get("url") == node.base for n in nodes_all()), timeout=30,
               what="node-a registered")
    base = start_server(RECORDER_NODES="true")
    context = chromium.new_context(viewport={"width": 1100, "height": 900})
    page = context.new_page()
    page.set_default_timeout(WAIT_MS)
    page.goto(f"{base}/ops/")
    page.fill("#credential", settings.OPS_API_KEY)
    page.click("#sign-in button[type=submit]")
    page.wait_for_url(f"{base}/ops/")
    row = page.locator('#recorder-nodes tr[data-node-id="node-a"]')
    text = row.inner_text()
    assert "ok" in text and "0 / 3" in text and node.base in text, text
    assert page.locator("#recorder-free").inner_text() == "3"
    page.screenshot(path=str(tmp_path / "now-recorder-nodes.png"), full_page=True)
    assert png_colours((tmp_path / "now-recorder-nodes.png").read_bytes()) >= 8
    context.close()
