"""Behaviour README promises that no other test pinned down (issue 17's list)."""

from __future__ import annotations

import subprocess
from datetime import timedelta

from google.cloud import firestore

from core.clock import utc_now
from integrations.firebase import firestore_client
from recordings import store
from recordings.documents import recording_document
from tests.conftest import post_json
from tests.helpers import INVITE, document, error_of, held, index_gaps, invite, stored, upload


def _stored_recording(recording_id: str, *, minutes_ago: int, participants=("alice", "bob")):
    call = {"callerId": participants[0], "receiverId": participants[1], "groupId": "g"}
    created = utc_now() - timedelta(minutes=minutes_ago)
    store.recording_move(recording_id, "process", create=recording_document(
        recording_id=recording_id, source="recorder", status="processing", call=call,
        call_id=f"call-{recording_id}", channel="g_alice_bob_1", filename=f"{recording_id}.wav",
        fmt="wav", recorded_at=created, now=created))


def test_recording_list_is_newest_first_and_pages_by_cursor(as_user):
    for name, minutes in (("old", 30), ("mid", 20), ("new", 10)):
        _stored_recording(name, minutes_ago=minutes)
    _stored_recording("others", minutes_ago=5, participants=("carol", "dave"))
    first = as_user("alice").get("/api/recording/list?limit=2").json()
    assert [r["recordingId"] for r in first["recordings"]] == ["new", "mid"]
    assert first["nextCursor"] == "mid"
    rest = as_user("alice").get(f"/api/recording/list?limit=2&cursor={first['nextCursor']}").json()
    assert ([r["recordingId"] for r in rest["recordings"]], rest["nextCursor"]) == (["old"], None)
    error_of(as_user("alice").get("/api/recording/list?cursor=no-such-recording"), 404,
             "bad_cursor")


def test_an_idempotency_key_over_255_characters_is_400(as_user):
    response = as_user("alice").post("/api/call/invite", INVITE,
                                     {"Idempotency-Key": "k" * 256})
    assert "Idempotency-Key" in error_of(response, 400, "validation_error")["message"]


def test_an_upload_without_a_length_is_411_and_a_bad_length_is_400(client, bearer):
    headers = bearer("alice")
    response = client.generic("POST", "/api/recordings/upload", b"",
                              CONTENT_TYPE="multipart/form-data; boundary=x",
                              HTTP_AUTHORIZATION=headers["Authorization"], CONTENT_LENGTH="")
    error_of(response, 411, "length_required")
    response = client.generic("POST", "/api/call/invite", b"{}", CONTENT_TYPE="application/json",
                              HTTP_AUTHORIZATION=headers["Authorization"], CONTENT_LENGTH="abc")
    assert "Content-Length" in error_of(response, 400, "bad_request")["message"]


def test_the_token_version_setting_picks_006(client, bearer, settings, any_channel):
    settings.AGORA_TOKEN_VERSION = "006"
    response = post_json(client, "/api/token", {"channel": "c", "uid": 1}, bearer("alice"))
    assert response.json()["token"].startswith("006" + settings.AGORA_APP_ID)


def test_recording_stop_takes_a_sid_or_a_channel_not_both(as_user):
    response = as_user("alice").post("/api/recording/stop", {"sid": "abc", "channel": "c"})
    assert "exactly one of sid or channel" in error_of(response, 400, "validation_error")["message"]


def _mp3(path):
    subprocess.run(["ffmpeg", "-hide_banner", "-loglevel", "error", "-y", "-f", "lavfi", "-i",
                    "sine=frequency=440:duration=2", str(path)], check=True)
    return path


def test_an_upload_keeps_the_apps_duration_and_serves_its_original(as_user, client, bearer,
                                                                    tmp_path):
    call = invite(as_user)
    sent = _mp3(tmp_path / "call.mp3")
    answer = upload(client, bearer("alice"), call["callId"], sent, duration=12)
    assert answer.status_code == 201, answer.content
    recording_id = answer.json()["recordingId"]
    recording = document(recording_id)
    # The app's own figure is kept apart from the measured one.
    assert (recording["declaredDuration"], recording["duration"] // 1000) == (12, 2)
    original = client.get(f"/api/recordings/{recording_id}/stream?file=original",
                          headers=bearer("bob"))
    assert original.status_code == 200
    assert original["Content-Type"] == "audio/mpeg"
    assert b"".join(original.streaming_content) == sent.read_bytes()


def test_a_call_another_writer_holds_through_every_retry_is_503_contention(as_user):
    call = invite(as_user)
    accept = {"call_id": call["callId"], "action": "accept"}
    with held(f"calls/{call['callId']}"):
        response = as_user("bob").post("/api/call/answer", accept)
        error_of(response, 503, "contention")
        assert stored(call["callId"])["status"] == "pending"  # nothing half-done
    # The writer is gone: the same request now goes through.
    assert as_user("bob").post("/api/call/answer", accept).json()["status"] == "accepted"


def test_a_query_the_index_file_cannot_serve_fails_the_test_that_sends_it(as_user,
                                                                        query_index_gaps):
    calls = firestore_client().collection("calls")
    by_group = firestore.FieldFilter("groupId", "==", "group1")
    list(calls.where(filter=by_group).order_by("updatedAt").stream())
    assert query_index_gaps == ["calls: [('groupId', 'eq')] then [('updatedAt', 'ASCENDING')]"]
    query_index_gaps.clear()  # (this test's own query; the fixture would fail the test)
    invite(as_user)
    assert as_user("alice").get("/api/recording/list").status_code == 200
    assert as_user("alice").get("/api/users/bob/has-recording").status_code == 200
    assert query_index_gaps == []


def _query(collection: str, *filters, order=()):
    query = firestore_client().collection(collection)
    for f in filters:
        query = query.where(filter=f)
    for field, direction in order:
        query = query.order_by(field, direction=direction)
    return query._to_protobuf()._pb


def test_the_index_check_reads_or_merges_and_directions_as_firestore_does():
    eq, desc = firestore.FieldFilter, firestore.Query.DESCENDING
    indexes = [{"collectionGroup": "c", "queryScope": "COLLECTION", "fields": [
        {"fieldPath": a, "order": "ASCENDING"}, {"fieldPath": "at", "order": "DESCENDING"}]}
        for a in ("a", "b")]
    assert index_gaps(_query("c", eq("a", "==", 1), order=[("at", desc)]), indexes) == []
    # Two equalities: the (a, at) and (b, at) indexes merge.
    assert index_gaps(_query("c", eq("a", "==", 1), eq("b", "==", 2), order=[("at", desc)]),
                      indexes) == []
    # Each side of an OR needs its own index; the order's direction matters.
    assert index_gaps(_query("c", firestore.Or([eq("a", "==", 1), eq("d", "==", 2)]),
                             order=[("at", desc)]), indexes) == [
        "c: [('d', 'eq')] then [('at', 'DESCENDING')]"]
    assert index_gaps(_query("c", eq("a", "==", 1), order=[("at", firestore.Query.ASCENDING)]),
                      indexes) == ["c: [('a', 'eq')] then [('at', 'ASCENDING')]"]
    # A range and an order on another field; one field alone is always served.
    assert index_gaps(_query("c", eq("x", "<", 1), order=[("at", desc)]), indexes) == [
        "c: [] then [('x', 'ASCENDING'), ('at', 'DESCENDING')]"]
    assert index_gaps(_query("c", eq("x", "<", 1)), []) == []
