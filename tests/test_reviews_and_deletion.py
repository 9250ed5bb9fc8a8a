"""Reviews, deletion (one recording, a user's, interrupted by Storage and finished by the
sweep), retention and the access log, over HTTP against the emulators and real Storage."""

from __future__ import annotations

from datetime import timedelta

import requests
from django.conf import settings
from google.cloud.firestore import FieldFilter

from core.clock import iso, utc_now
from devstack.emulators import free_port
from integrations.firebase import firestore_client, storage_bucket
from ops.sweep import sweep_run
from tests import test_library
from tests.helpers import app_firestore as _as
from tests.helpers import document, error_of, invite, leftovers, objects, stored, upload

# The library tests' fixtures: a call between alice and bob, alice's headers, the media.
alice, call, media = test_library.alice, test_library.call, test_library.media


def _entries(action: str) -> list[dict]:
    docs = firestore_client().collection("auditLog").where(
        filter=FieldFilter("action", "==", action)).stream()
    return [snap.to_dict() for snap in docs]


def _reviews(call_id: str) -> list[dict]:
    ref = firestore_client().collection("calls").document(call_id).collection("reviews")
    return sorted((snap.to_dict() for snap in ref.stream()), key=lambda r: r["at"])


# --- reviews -----------------------------------------------------------------------------

def test_a_participant_reviews_a_call_and_every_review_is_kept(as_user):
    call_id = invite(as_user)["callId"]
    first = as_user("alice").post(f"/api/calls/{call_id}/review", {
        "humanSummary": "  Mum slept well. ", "humanKeywords": ["sleep", "meds", "sleep"]})
    assert first.status_code == 200, first.content
    body = first.json()
    assert (body["humanSummary"], body["humanKeywords"], body["reviewCount"]) == (
        "Mum slept well.", ["sleep", "meds"], 1)
    assert body["changed"] == ["humanKeywords", "humanSummary"]
    second = as_user("root", admin=True).post(f"/api/calls/{call_id}/review",
                                              {"humanNotes": "Follow up on Friday."})
    assert second.status_code == 200, second.content

    status = as_user("bob").get(f"/api/call/status/{call_id}").json()
    assert (status["humanSummary"], status["humanNotes"], status["reviewCount"]) == (
        "Mum slept well.", "Follow up on Friday.", 2)
    assert status["lastReviewAt"] == second.json()["lastReviewAt"]
    reviews = _reviews(call_id)
    assert [(r["by"], sorted(r["changes"])) for r in reviews] == [
        ("alice", ["humanKeywords", "humanSummary"]), ("root", ["humanNotes"])]
    assert reviews[0]["changes"]["humanSummary"] == {"from": "", "to": "Mum slept well."}
    assert sorted(e["uid"] for e in _entries("review")) == ["alice", "root"]


def test_a_review_over_the_limits_names_the_field_and_changes_nothing(as_user):
    call_id = invite(as_user)["callId"]
    path = f"/api/calls/{call_id}/review"
    for body, field in (({"humanSummary": "x" * 2001}, "humanSummary"),
                        ({"humanNotes": "x" * 5001}, "humanNotes"),
                        ({"humanKeywords": [f"k{i}" for i in range(21)]}, "humanKeywords"),
                        ({"humanKeywords": ["x" * 51]}, "humanKeywords")):
        error = error_of(as_user("alice").post(path, body), 400, "validation_error")
        assert field in error["message"], error
    error_of(as_user("alice").post(path, {}), 400, "validation_error")
    assert stored(call_id)["reviewCount"] == 0 and _reviews(call_id) == []


def test_only_participants_or_an_admin_review(as_user):
    call_id = invite(as_user)["callId"]
    error_of(as_user("mallory").post(f"/api/calls/{call_id}/review", {"humanNotes": "hi"}),
             403, "not_in_call")
    error_of(as_user("alice").post("/api/calls/nope/review", {"humanNotes": "hi"}), 404,
             "call_not_found")


# --- deletion ----------------------------------------------------------------------------

def test_deleting_a_recording_removes_its_objects_and_leaves_a_tombstone(
        client, alice, call, media, as_user, bearer):
    answer = upload(client, alice, call["callId"], media["m4a"]).json()
    recording_id = answer["recordingId"]
    before = document(recording_id)
    job_id = "job-1"
    transcript = storage_bucket().blob(f"analysis/{job_id}.json")
    transcript.upload_from_string(b'{"text": "", "segments": []}')
    firestore_client().collection("analysisJobs").document(job_id).set(
        {"recordingId": recording_id, "participants": ["alice", "bob"], "status": "completed",
         "result": {"transcriptPath": f"analysis/{job_id}.json"}})
    assert {before["storagePath"], before["originalPath"], f"analysis/{job_id}.json"} <= set(
        objects())

    error_of(client.delete(f"/api/recordings/{recording_id}", headers=bearer("mallory")), 403,
             "not_in_call")
    response = client.delete(f"/api/recordings/{recording_id}", headers=bearer("bob"))
    assert response.status_code == 200, response.content
    assert response.json()["status"] == "deleted"

    assert objects() == {}
    tomb = document(recording_id)
    assert (tomb["status"], tomb["deletedBy"], tomb["url"], tomb["storagePath"],
            tomb["originalPath"]) == ("deleted", "bob", None, None, None)
    assert tomb["deletedAt"]
    for variant in ("wav", "original"):
        gone = client.get(f"/api/recordings/{recording_id}/stream?file={variant}",
                          headers=alice)
        error_of(gone, 410, "recording_deleted")
    error_of(client.get(f"/api/recordings/{recording_id}/download", headers=alice), 410,
             "recording_deleted")
    has = as_user("alice").get(f"/api/calls/{call['callId']}/has-recording").json()
    assert has["hasRecording"] is False
    assert as_user("alice").get("/api/users/alice/has-recording").json()["hasRecording"] is False
    exists = as_user("alice").get(f"/api/recordings/check-exists?call_id={call['callId']}")
    assert exists.json()["exists"] is False
    listed = client.get("/api/admin/recordings", headers=bearer("root", admin=True)).json()
    assert listed["recordings"] == [] and listed["total"] == 0
    assert as_user("alice").get("/api/recording/list").json()["recordings"] == []
    again = client.delete(f"/api/recordings/{recording_id}", headers=bearer("alice"))
    assert again.status_code == 200 and again.json()["status"] == "deleted"
    assert [e["target"] for e in _entries("delete")] == [recording_id, recording_id]


def test_a_storage_failure_leaves_it_deleting_unserved_and_the_sweep_finishes_it(
        start_server, securetoken, client, alice, call, media):
    recording_id = upload(client, alice, call["callId"], media["mp3"]).json()["recordingId"]
    paths = {document(recording_id)["storagePath"], document(recording_id)["originalPath"]}
    dead = f"http://127.0.0.1:{free_port()}"
    base = start_server(FIREBASE_STORAGE_EMULATOR_HOST=dead, STORAGE_EMULATOR_HOST=dead,
                        STORAGE_REQUEST_TIMEOUT_SECONDS="1",
                        DISABLE_GCS_PYTHON_CLIENT_OTEL_BUCKET_METADATA="true")
    headers = {"Authorization": f"Bearer {securetoken.mint('alice')}",
               "X-Forwarded-For": "203.0.113.7"}
    response = requests.delete(f"{base}/api/recordings/{recording_id}", headers=headers,
                               timeout=60)
    assert response.status_code == 202, response.text
    assert response.json()["status"] == "deleting"
    half = document(recording_id)
    assert (half["status"], half["deleteError"]) == ("deleting", "storage_unavailable")
    assert paths <= set(objects())  # nothing was removed, and nothing is served
    error_of(client.get(f"/api/recordings/{recording_id}/stream", headers=alice), 410,
             "recording_deleted")
    entry, = _entries("delete")
    assert (entry["uid"], entry["ip"], entry["detail"]) == (
        "alice", "203.0.113.7", {"status": "deleting"})
    assert entry["requestId"] == response.headers["X-Request-ID"]

    report = sweep_run(timeout_seconds=60)  # this process reaches the live Storage
    assert report.parts["deletions"] == {"finished": 1, "stillDeleting": 0}
    assert document(recording_id)["status"] == "deleted"
    assert objects() == {}


def test_deleting_a_failed_upload_removes_the_original_kept_on_disk(
        start_server, securetoken, client, call, media):
    dead = f"http://127.0.0.1:{free_port()}"
    base = start_server(FIREBASE_STORAGE_EMULATOR_HOST=dead, STORAGE_EMULATOR_HOST=dead,
                        STORAGE_UPLOAD_TIMEOUT_SECONDS="1", STORAGE_REQUEST_TIMEOUT_SECONDS="1",
                        DISABLE_GCS_PYTHON_CLIENT_OTEL_BUCKET_METADATA="true")
    with media["ogg"].open("rb") as file:
        failed = requests.post(f"{base}/api/recordings/upload",
                               headers={"Authorization": f"Bearer {securetoken.mint('alice')}"},
                               files={"recording": ("call.ogg", file, "audio/ogg")},
                               data={"call_id": call["callId"]}, timeout=60).json()
    assert failed["status"] == "failed"
    assert leftovers() == [f"{failed['recordingId']}.ogg"]
    response = client.delete(f"/api/recordings/{failed['recordingId']}",
                             headers={"Authorization": f"Bearer {securetoken.mint('bob')}"})
    assert response.status_code == 200 and response.json()["status"] == "deleted"
    assert leftovers() == [] and objects() == {}


def test_deleting_a_users_recordings_takes_every_call_and_their_analysis_jobs(
        client, as_user, bearer, media):
    first = invite(as_user)
    as_user("alice").post("/api/call/end", {"call_id": first["callId"]})
    second = invite(as_user, caller_id="carol", receiver_id="alice")
    other = invite(as_user, caller_id="dave", receiver_id="erin")
    mine = [upload(client, bearer("alice"), first["callId"], media["m4a"]).json(),
            upload(client, bearer("alice"), second["callId"], media["ogg"]).json()]
    theirs = upload(client, bearer("dave"), other["callId"], media["wav"]).json()
    jobs = firestore_client().collection("analysisJobs")
    jobs.document("a1").set({"participants": ["alice", "bob"], "status": "queued"})
    jobs.document("d1").set({"participants": ["dave", "erin"], "status": "queued"})

    error_of(client.delete("/api/users/alice/recordings", headers=bearer("bob")), 403,
             "not_the_user")
    response = client.delete("/api/users/alice/recordings", headers=bearer("alice"))
    assert response.status_code == 200, response.content
    assert response.json() == {"success": True, "uid": "alice", "deleted": 2, "deleting": 0,
                               "skipped": 0, "analysisJobsDeleted": 1}
    assert [document(r["recordingId"])["status"] for r in mine] == ["deleted", "deleted"]
    assert document(theirs["recordingId"])["status"] == "completed"
    assert [snap.id for snap in jobs.stream()] == ["d1"]
    assert set(objects()) == {document(theirs["recordingId"])["storagePath"],
                              document(theirs["recordingId"])["originalPath"]}


# --- retention ---------------------------------------------------------------------------

def test_retention_deletes_only_recordings_older_than_the_setting(client, alice, call, media,
                                                                  settings):
    old = upload(client, alice, call["callId"], media["m4a"]).json()["recordingId"]
    new = upload(client, alice, call["callId"], media["ogg"]).json()["recordingId"]
    firestore_client().collection("recordings").document(old).update(
        {"recordedAt": iso(utc_now() - timedelta(days=31))})

    assert sweep_run(timeout_seconds=60).parts["retention"] == {
        "retentionDays": 0, "deleted": 0, "deleting": 0}
    settings.RECORDING_RETENTION_DAYS = 30
    assert sweep_run(timeout_seconds=60).parts["retention"] == {
        "retentionDays": 30, "deleted": 1, "deleting": 0}
    assert (document(old)["status"], document(old)["deletedBy"]) == ("deleted", "retention")
    assert document(new)["status"] == "completed"
    report = client.post("/api/call/timeout/sweep", data="{}", content_type="application/json",
                         headers={"X-Ops-Key": settings.OPS_API_KEY}).json()["report"]
    assert report["retention"] == {"retentionDays": 30, "deleted": 0, "deleting": 0}


# --- the access log ------------------------------------------------------------------------

def test_streams_downloads_and_retries_are_logged_with_who_where_and_expiry(
        client, alice, call, media, as_user):
    recording_id = upload(client, alice, call["callId"], media["m4a"]).json()["recordingId"]
    client.get(f"/api/recordings/{recording_id}/stream", headers={
        **alice, "CF-Connecting-IP": "198.51.100.4", "X-Request-ID": "req-stream-0001"})
    client.get(f"/api/recordings/{recording_id}/download?file=original", headers={
        **alice, "X-Forwarded-For": "192.0.2.9", "CF-Connecting-IP": "198.51.100.99"})
    client.get(f"/api/recordings/{recording_id}/stream", headers={**alice, "Range": "bytes=500-"})
    firestore_client().collection("recordings").document(recording_id).update(
        {"status": "failed", "error": "storage_unavailable"})
    as_user("root", admin=True).post(f"/api/recordings/{recording_id}/retry-upload", {})

    stream, = _entries("stream")  # a player's later range requests are not logged again
    assert (stream["uid"], stream["target"], stream["ip"], stream["requestId"]) == (
        "alice", recording_id, "198.51.100.4", "req-stream-0001")
    assert stream["expireAt"] - stream["at"] == timedelta(days=settings.AUDIT_RETENTION_DAYS)
    download, = _entries("download")
    # nginx's X-Forwarded-For wins over a CF-Connecting-IP it passed through unchecked.
    assert download["detail"] == {"file": "original"} and download["ip"] == "192.0.2.9"
    retry, = _entries("retry")
    assert (retry["uid"], retry["target"]) == ("root", recording_id)


def test_no_app_can_read_or_write_the_access_log():
    firestore_client().collection("auditLog").document("e1").set(
        {"uid": "alice", "action": "stream", "target": "r1"})
    assert _as("alice", "GET", "auditLog/e1") == 403
    assert _as("alice", "PATCH", "auditLog/e2", {"uid": "alice"}) == 403
    assert _as(None, "GET", "auditLog/e1") == 403


def test_apps_cannot_read_or_write_reviews_even_of_their_own_calls(as_user):
    call_id = invite(as_user)["callId"]
    as_user("alice").post(f"/api/calls/{call_id}/review", {"humanNotes": "private"})
    review_id = _reviews(call_id)[0]["reviewId"]
    assert _as("alice", "GET", f"calls/{call_id}") == 200  # the call itself, yes
    assert _as("alice", "GET", f"calls/{call_id}/reviews/{review_id}") == 403
    assert _as("alice", "PATCH", f"calls/{call_id}/reviews/x", {"by": "alice"}) == 403
