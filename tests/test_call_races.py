"""Races through a real gunicorn (2 workers × 8 threads) against the Firestore emulator."""

from __future__ import annotations

import json
import threading
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor

PAIRS = 25
# What Google's emulator logs when a transaction waited for a lock until its 2 s timeout.
LOCK_TIMEOUT = "Operation failed: Transaction lock timeout"


def _lock_timeouts(emulators) -> int:
    return (emulators.log_dir / "firestore-emulator.log").read_text(
        errors="replace").count(LOCK_TIMEOUT)


def _request(base: str, token: str, method: str, path: str, body: dict | None = None):
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(f"{base}{path}", data=data, method=method, headers={
        "Authorization": f"Bearer {token}", "Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, json.load(response)
    except urllib.error.HTTPError as exc:
        return exc.code, json.load(exc)


def test_cancel_racing_accept_has_exactly_one_winner_every_time(start_server, securetoken,
                                                                emulators):
    base = start_server(GUNICORN_WORKERS="2")
    callers = [securetoken.mint(f"caller{i}") for i in range(PAIRS)]
    receivers = [securetoken.mint(f"receiver{i}") for i in range(PAIRS)]
    call_ids = []
    for i in range(PAIRS):
        status, body = _request(base, callers[i], "POST", "/api/call/invite", {
            "group_id": "g", "caller_id": f"caller{i}", "receiver_id": f"receiver{i}"})
        assert status == 200, body
        call_ids.append(body["callId"])

    barriers = [threading.Barrier(2) for _ in range(PAIRS)]
    lock_timeouts_before = _lock_timeouts(emulators)

    def accept(i):
        barriers[i].wait(timeout=30)
        return _request(base, receivers[i], "POST", "/api/call/answer",
                        {"call_id": call_ids[i], "action": "accept"})

    def cancel(i):
        barriers[i].wait(timeout=30)
        return _request(base, callers[i], "POST", "/api/call/cancel", {"call_id": call_ids[i]})

    with ThreadPoolExecutor(max_workers=2 * PAIRS) as pool:
        accepts = [pool.submit(accept, i) for i in range(PAIRS)]
        cancels = [pool.submit(cancel, i) for i in range(PAIRS)]
        outcomes = [(a.result(), c.result()) for a, c in zip(accepts, cancels, strict=True)]

    winners = {"accepted": 0, "cancelled": 0}
    for i, ((a_status, a_body), (c_status, c_body)) in enumerate(outcomes):
        assert a_status < 500 and c_status < 500, (a_body, c_body)
        assert sorted([a_status, c_status]) == [200, 409], (a_body, c_body)
        final = a_body["status"] if a_status == 200 else c_body["status"]
        loser = c_body if a_status == 200 else a_body
        assert loser["error"]["code"] == "invalid_transition"
        assert loser["error"]["status"] == final
        winners[final] += 1
        seen_by_caller = _request(base, callers[i], "GET", f"/api/call/status/{call_ids[i]}")
        seen_by_receiver = _request(base, receivers[i], "GET", f"/api/call/status/{call_ids[i]}")
        assert seen_by_caller[1]["status"] == seen_by_receiver[1]["status"] == final
    assert sum(winners.values()) == PAIRS
    # Neither side waited on the other's lock (with transactions both did, until the
    # emulator's lock timeout aborted one: the loser's 409 came after 2-4 s).
    assert _lock_timeouts(emulators) == lock_timeouts_before


def test_two_callers_racing_for_one_receiver_only_one_rings(start_server, securetoken):
    base = start_server(GUNICORN_WORKERS="2")
    barrier = threading.Barrier(6)

    def invite(i):
        token = securetoken.mint(f"racer{i}")
        barrier.wait(timeout=30)
        return _request(base, token, "POST", "/api/call/invite",
                        {"group_id": "g", "caller_id": f"racer{i}", "receiver_id": "grandma"})

    with ThreadPoolExecutor(max_workers=6) as pool:
        results = list(pool.map(invite, range(6)))
    statuses = sorted(status for status, _ in results)
    assert statuses == [200, 409, 409, 409, 409, 409], results
    winner = next(body["callId"] for status, body in results if status == 200)
    assert all(body["error"]["code"] == "busy" and body["error"]["callId"] == winner
               for status, body in results if status == 409)
