"""Bounded waits on a frozen dependency: a Firestore that stops answering costs a request
FIRESTORE_TIMEOUT_SECONDS and a 503 `dependency_timeout` with Retry-After, never a thread
held without limit; Storage that gives no answer ends the same way."""

from __future__ import annotations

import json
import os
import signal
import urllib.error
import urllib.request
from contextlib import contextmanager

import pytest
from django.conf import settings

from core.clock import utc_now
from devstack.emulators import Emulators
from recordings import store
from recordings.documents import recording_document
from tests.helpers import PRODUCTION, boot_settings, storage_down

TIMEOUT = 2  # FIRESTORE_TIMEOUT_SECONDS of the servers started here
# The client gives up long after the server should have: a hung request fails the test.
CLIENT_TIMEOUT = TIMEOUT * 4


@pytest.fixture(scope="module")
def own_emulators(tmp_path_factory):
    """Emulators of this module alone: freezing them cannot stall any other test."""
    stack = Emulators(project_id=settings.FIREBASE_PROJECT_ID,
                      bucket=settings.FIREBASE_STORAGE_BUCKET,
                      log_dir=tmp_path_factory.mktemp("frozen-emulator-logs")).start()
    try:
        yield stack
    finally:
        os.kill(stack.procs[0].pid, signal.SIGCONT)  # a stopped JVM ignores SIGTERM
        stack.stop()


@contextmanager
def frozen(stack: Emulators):
    """The Firestore emulator's JVM stopped (SIGSTOP): connections open, nothing answered."""
    java = stack.procs[0]
    os.kill(java.pid, signal.SIGSTOP)
    try:
        yield
    finally:
        os.kill(java.pid, signal.SIGCONT)


def _request(method: str, url: str, body: dict | None = None, headers: dict | None = None):
    """(status, JSON body, headers); raises if the server has not answered in CLIENT_TIMEOUT."""
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, method=method, headers={
        "Content-Type": "application/json", **(headers or {})})
    try:
        with urllib.request.urlopen(request, timeout=CLIENT_TIMEOUT) as response:
            return response.status, json.loads(response.read()), response.headers
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read()), exc.headers


def _until_ok(method: str, url: str, body: dict | None, headers: dict, expected: int):
    """`expected` within a few tries: an emulator warming up (or working off what queued
    while it was frozen) can miss a short deadline, which answers 503 — a client retries."""
    for _ in range(10):
        answer = _request(method, url, body, headers)
        if answer[0] == expected:
            return answer
    raise AssertionError(f"{method} {url} never answered {expected}: {answer[:2]}")


def _assert_dependency_timeout(answer) -> None:
    status, body, headers = answer
    assert (status, body["success"], body["error"]["code"]) == (
        503, False, "dependency_timeout"), body
    assert body["error"]["message"]
    assert int(headers["Retry-After"]) >= 1


def test_a_frozen_firestore_answers_503_dependency_timeout_and_live_stays_up(
        own_emulators, start_server, bearer):
    base = start_server(**own_emulators.env(), FIRESTORE_TIMEOUT_SECONDS=str(TIMEOUT))
    alice = bearer("alice")
    _until_ok("GET", f"{base}/api/call/status/warm-up", None, alice, 404)
    _, call, _ = _until_ok("POST", f"{base}/api/call/invite", {
        "group_id": "g1", "caller_id": "alice", "receiver_id": "bob"}, alice, 200)
    status_url = f"{base}/api/call/status/{call['callId']}"

    with frozen(own_emulators):
        _assert_dependency_timeout(_request("GET", status_url, headers=alice))  # a read
        _assert_dependency_timeout(_request(  # a transaction
            "POST", f"{base}/api/call/cancel", {"call_id": call["callId"]}, alice))
        live = _request("GET", f"{base}/api/health/live")
        assert live[0] == 200, live[1]

    _, body, _ = _until_ok("GET", status_url, None, alice, 200)
    assert body["callId"] == call["callId"]


def test_storage_that_never_answers_is_503_dependency_timeout(start_server, bearer):
    now = utc_now()
    call = {"callerId": "alice", "receiverId": "bob", "groupId": "g"}
    store.recording_move("rec-1", "process", create=recording_document(
        recording_id="rec-1", source="recorder", status="processing", call=call,
        call_id="call-1", channel="g_alice_bob_1", filename="rec-1.wav", fmt="wav",
        recorded_at=now, now=now))
    store.recording_move("rec-1", "store", {"storagePath": "recordings/rec-1.wav",
                                            "fileSize": 44, "duration": 0})
    base = start_server(**storage_down(), STORAGE_REQUEST_TIMEOUT_SECONDS=str(TIMEOUT))
    _assert_dependency_timeout(_request("GET", f"{base}/api/recordings/rec-1/stream",
                                        headers=bearer("alice")))


@pytest.mark.pure
@pytest.mark.parametrize("name", ["FIRESTORE_TIMEOUT_SECONDS", "RECORDER_STOP_WAIT_SECONDS"])
@pytest.mark.parametrize("value", ["0", "-1"])
def test_a_wait_that_is_not_positive_stops_start_up_naming_it(tmp_path, name, value):
    result = boot_settings(tmp_path, **{**PRODUCTION, name: value})
    assert result.returncode != 0
    assert f"{name} must be a positive number" in result.stderr
