"""Benchmark accept/cancel races: how long the winner and the loser (its 409) wait, against
the same transitions uncontended, through gunicorn against the Firestore emulator.

    .venv/bin/python -m bench.races [--races 40] [--uncontended 40]

Each race: the caller invites, then the receiver's accept and the caller's cancel leave
together (a barrier, one keep-alive connection per side). Exactly one must answer 200 and
the other 409 `invalid_transition`; anything else stops the run. The baseline in the same
run: an accept on a ringing call nobody races (the winner's work alone), and a cancel of a
call already accepted (the loser's refusal alone). Prints a Markdown block for
BENCHMARKS.md. Stops everything it started.
"""

from __future__ import annotations

import argparse
import datetime as dt
import statistics
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx

from bench.stack import bench_stack, machine


def _pct(values: list[float], q: int) -> float:
    if len(values) < 2:
        return values[0] if values else float("nan")
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1]


def _figures(values: list[float]) -> str:
    slow = sum(v > 1000 for v in values)
    return f"{_pct(values, 50):.1f} / {_pct(values, 99):.1f} / {max(values):.1f} | {slow}"


class _Side:
    """One party: its ID token and its own keep-alive connection."""

    def __init__(self, stack, uid: str, http: httpx.Client):
        self.uid, self.http = uid, http
        self.token = stack.securetoken.mint(uid)

    def post(self, path: str, body: dict) -> tuple[int, dict, float]:
        started = time.perf_counter()
        response = self.http.post(path, json=body,
                                  headers={"Authorization": f"Bearer {self.token}"})
        return response.status_code, response.json(), (time.perf_counter() - started) * 1000


def _invite(caller: _Side, receiver: _Side) -> str:
    status, body, _ = caller.post("/api/call/invite", {
        "group_id": "bench", "caller_id": caller.uid, "receiver_id": receiver.uid})
    if status != 200:
        raise SystemExit(f"invite answered {status}: {body}")
    return body["callId"]


def races(stack, *, count: int, prefix: str) -> dict:
    """`count` accept/cancel races, one after the other, each on a fresh pair of users."""
    winner_ms, loser_ms, wins = [], [], {"accepted": 0, "cancelled": 0}
    with httpx.Client(base_url=stack.base, timeout=60) as a_http, \
            httpx.Client(base_url=stack.base, timeout=60) as c_http, \
            ThreadPoolExecutor(max_workers=2) as pool:
        for i in range(count):
            caller = _Side(stack, f"{prefix}c{i}", c_http)
            receiver = _Side(stack, f"{prefix}r{i}", a_http)
            call_id = _invite(caller, receiver)
            barrier = threading.Barrier(2)

            def go(side, path, body, barrier=barrier):
                barrier.wait(timeout=30)
                return side.post(path, body)

            accept = pool.submit(go, receiver, "/api/call/answer",
                                 {"call_id": call_id, "action": "accept"})
            cancel = pool.submit(go, caller, "/api/call/cancel", {"call_id": call_id})
            outcomes = [accept.result(), cancel.result()]
            statuses = sorted(status for status, _, _ in outcomes)
            if statuses != [200, 409]:
                raise SystemExit(f"race {i}: statuses {statuses}: {outcomes}")
            (_, won, won_ms), = [o for o in outcomes if o[0] == 200]
            (_, lost, lost_ms), = [o for o in outcomes if o[0] == 409]
            if lost["error"]["code"] != "invalid_transition" or \
                    lost["error"]["status"] != won["status"]:
                raise SystemExit(f"race {i}: loser said {lost}, winner {won['status']}")
            wins[won["status"]] += 1
            winner_ms.append(won_ms)
            loser_ms.append(lost_ms)
    return {"races": count, "winner": winner_ms, "loser": loser_ms, "wins": wins}


def uncontended(stack, *, count: int, prefix: str) -> dict:
    """An accept nobody races, then a cancel of that accepted call (refused, 409)."""
    accept_ms, refuse_ms = [], []
    with httpx.Client(base_url=stack.base, timeout=60) as http:
        for i in range(count):
            caller = _Side(stack, f"{prefix}c{i}", http)
            receiver = _Side(stack, f"{prefix}r{i}", http)
            call_id = _invite(caller, receiver)
            status, body, ms = receiver.post("/api/call/answer",
                                             {"call_id": call_id, "action": "accept"})
            if status != 200:
                raise SystemExit(f"accept answered {status}: {body}")
            accept_ms.append(ms)
            status, body, ms = caller.post("/api/call/cancel", {"call_id": call_id})
            if status != 409:
                raise SystemExit(f"cancel of an accepted call answered {status}: {body}")
            refuse_ms.append(ms)
    return {"accept": accept_ms, "refuse": refuse_ms}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--races", type=int, default=40)
    parser.add_argument("--uncontended", type=int, default=40)
    args = parser.parse_args()

    with bench_stack() as stack:
        # Warm up both workers: imports, the gRPC channel, certificates.
        uncontended(stack, count=6, prefix="warm")
        races(stack, count=4, prefix="warmrace")
        base = uncontended(stack, count=args.uncontended, prefix="u")
        raced = races(stack, count=args.races, prefix="r")
        workers = stack.env.get("GUNICORN_WORKERS", "2")
        threads = stack.env.get("GUNICORN_THREADS", "8")

    refuse_p50 = _pct(base["refuse"], 50)
    accept_p50 = _pct(base["accept"], 50)
    lines = [
        f"Machine: {machine()}; gunicorn {workers} workers x {threads} threads; "
        f"Firestore emulator; {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC.",
        "",
        "| what | n | p50 / p99 / max ms | over 1 s | p50 ratio to its uncontended baseline |",
        "|---|---|---|---|---|",
        f"| uncontended accept (baseline) | {len(base['accept'])} | "
        f"{_figures(base['accept'])} | 1 |",
        f"| uncontended refused cancel, 409 (baseline) | {len(base['refuse'])} | "
        f"{_figures(base['refuse'])} | 1 |",
        f"| race winner, 200 | {raced['races']} | {_figures(raced['winner'])} | "
        f"{_pct(raced['winner'], 50) / accept_p50:.1f} x accept |",
        f"| race loser, 409 | {raced['races']} | {_figures(raced['loser'])} | "
        f"{_pct(raced['loser'], 50) / refuse_p50:.1f} x refused cancel |",
        "",
        f"Every race had exactly one winner: accepted {raced['wins']['accepted']}, "
        f"cancelled {raced['wins']['cancelled']}.",
    ]
    print("\n".join(lines))


if __name__ == "__main__":
    main()
