"""Benchmark the call flow: invite -> accept -> end round trips with N concurrent
callers through gunicorn against the Firestore emulator, and the ring-timeout sweep.

    .venv/bin/python -m bench.calls [--concurrency 1,8,32] [--round-trips 240]
                                    [--sweep-total 10000] [--sweep-expired 2500]

Prints a table and a Markdown block for BENCHMARKS.md. Stops everything it started.
"""

from __future__ import annotations

import argparse
import datetime as dt
import itertools
import statistics
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
from google.auth.credentials import AnonymousCredentials
from google.cloud import firestore

from bench.stack import PROJECT_ID, bench_stack, machine


def _pct(values: list[float], q: int) -> float:
    if len(values) < 2:
        return values[0] if values else float("nan")
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1]


def round_trips(stack, *, concurrency: int, total: int) -> dict:
    """`total` invite/accept/end round trips spread over `concurrency` caller threads."""
    latencies = {"invite": [], "accept": [], "end": [], "round trip": []}
    lock = threading.Lock()
    left = itertools.count()
    tokens = [(stack.securetoken.mint(f"bc{concurrency}x{i}"),
               stack.securetoken.mint(f"br{concurrency}x{i}")) for i in range(concurrency)]

    def worker(i: int) -> None:
        caller, receiver = tokens[i]
        with httpx.Client(base_url=stack.base, timeout=30) as http:
            def post(token, path, body):
                started = time.perf_counter()
                response = http.post(path, json=body,
                                     headers={"Authorization": f"Bearer {token}"})
                response.raise_for_status()
                return response.json(), (time.perf_counter() - started) * 1000

            while next(left) < total:
                t0 = time.perf_counter()
                call, ms_invite = post(caller, "/api/call/invite", {
                    "group_id": "bench", "caller_id": f"bc{concurrency}x{i}",
                    "receiver_id": f"br{concurrency}x{i}"})
                _, ms_accept = post(receiver, "/api/call/answer",
                                    {"call_id": call["callId"], "action": "accept"})
                _, ms_end = post(caller, "/api/call/end", {"call_id": call["callId"]})
                with lock:
                    latencies["invite"].append(ms_invite)
                    latencies["accept"].append(ms_accept)
                    latencies["end"].append(ms_end)
                    latencies["round trip"].append((time.perf_counter() - t0) * 1000)

    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=concurrency) as pool:
        list(pool.map(worker, range(concurrency)))
    elapsed = time.perf_counter() - started
    done = len(latencies["round trip"])
    return {"concurrency": concurrency, "round_trips": done, "seconds": elapsed,
            "per_second": done / elapsed,
            **{name: (_pct(v, 50), _pct(v, 99)) for name, v in latencies.items()}}


def sweep(stack, *, total: int, expired: int) -> dict:
    """Seed `total` ringing calls (`expired` of them past the timeout), time one sweep."""
    db = firestore.Client(project=PROJECT_ID, credentials=AnonymousCredentials())
    now = dt.datetime.now(dt.UTC)
    batch, written = db.batch(), 0
    for i in range(total):
        created = now - dt.timedelta(seconds=600 if i < expired else 5)
        call_id = f"sweep-{i:06d}"
        batch.set(db.collection("calls").document(call_id), {
            "callId": call_id, "channelName": f"g_c{i}_r{i}_1", "groupId": "g",
            "callerId": f"c{i}", "receiverId": f"r{i}", "callerName": "c", "status": "pending",
            "createdAt": created, "updatedAt": created, "answeredAt": None, "endedAt": None,
            "durationSec": 0})
        written += 1
        if written % 500 == 0:
            batch.commit()
            batch = db.batch()
    batch.commit()
    started = time.perf_counter()
    response = httpx.post(f"{stack.base}/api/call/timeout/sweep", json={"timeout_seconds": 60},
                          headers={"X-Ops-Key": stack.ops_key}, timeout=600)
    elapsed = time.perf_counter() - started
    response.raise_for_status()
    updated = response.json()["updatedCount"]
    if updated != expired:
        raise SystemExit(f"sweep moved {updated} calls, expected {expired}")
    return {"total": total, "expired": expired, "seconds": elapsed,
            "per_second": expired / elapsed}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--concurrency", default="1,8,32")
    parser.add_argument("--round-trips", type=int, default=240)
    parser.add_argument("--sweep-total", type=int, default=10000)
    parser.add_argument("--sweep-expired", type=int, default=2500)
    args = parser.parse_args()
    levels = [int(x) for x in args.concurrency.split(",")]

    with bench_stack() as stack:
        import os

        os.environ["FIRESTORE_EMULATOR_HOST"] = stack.emulators.firestore_host
        # Warm up: first requests import code, open the gRPC channel, fetch certificates.
        round_trips(stack, concurrency=2, total=10)
        results = [round_trips(stack, concurrency=c, total=args.round_trips) for c in levels]
        swept = sweep(stack, total=args.sweep_total, expired=args.sweep_expired)
        workers = stack.env.get("GUNICORN_WORKERS", "2")
        threads = stack.env.get("GUNICORN_THREADS", "8")

    lines = [
        f"Machine: {machine()}; gunicorn {workers} workers x {threads} threads; "
        f"Firestore emulator; {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC.",
        "",
        "| callers | round trips | round trips/s | invite p50/p99 ms | accept p50/p99 ms "
        "| end p50/p99 ms | round trip p50/p99 ms |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in results:
        cells = " | ".join(f"{r[k][0]:.1f} / {r[k][1]:.1f}"
                           for k in ("invite", "accept", "end", "round trip"))
        lines.append(f"| {r['concurrency']} | {r['round_trips']} | {r['per_second']:.1f} "
                     f"| {cells} |")
    lines += ["", f"Sweep: {swept['expired']} expired among {swept['total']} ringing calls "
                  f"moved to missed in {swept['seconds']:.2f} s ({swept['per_second']:.0f} "
                  "calls/s), one HTTP request."]
    print("\n".join(lines))


if __name__ == "__main__":
    main()
