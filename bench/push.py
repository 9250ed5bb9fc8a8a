"""Benchmark invites that ring iPhones: N invites through gunicorn with the fake APNs
(HTTP/2 + TLS on loopback) — invites/s, latency, and APNs connections and provider JWTs
per worker (target: one of each).

    .venv/bin/python -m bench.push [--invites 1000] [--concurrency 16]

Prints a table and a Markdown block for BENCHMARKS.md. Stops everything it started.
"""

from __future__ import annotations

import argparse
import datetime as dt
import itertools
import statistics
import threading
import time
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor

import httpx
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from google.auth.credentials import AnonymousCredentials
from google.cloud import firestore

from bench.stack import PROJECT_ID, bench_stack, machine
from tests.fakes.apns import FakeAPNs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--invites", type=int, default=1000)
    parser.add_argument("--concurrency", type=int, default=16)
    args = parser.parse_args()

    key = ec.generate_private_key(ec.SECP256R1())
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption()).decode()
    apns = FakeAPNs(team_id="TEAM123456", key_id="KEY1234567", bundle_id="org.memharbor.app",
                    public_key_pem=key.public_key().public_bytes(
                        serialization.Encoding.PEM,
                        serialization.PublicFormat.SubjectPublicKeyInfo)).start()
    try:
        env = {"APNS_TEAM_ID": apns.team_id, "APNS_KEY_ID": apns.key_id,
               "APNS_BUNDLE_ID": apns.bundle_id, "APNS_KEY_CONTENT": pem.replace("\n", "\\n"),
               "APNS_BASE_URL": apns.base_url, "APNS_CA_FILE": apns.ca_file}
        with bench_stack(**env) as stack:
            import os

            os.environ["FIRESTORE_EMULATOR_HOST"] = stack.emulators.firestore_host
            db = firestore.Client(project=PROJECT_ID, credentials=AnonymousCredentials())
            batch = db.batch()
            for i in range(args.invites):
                batch.set(db.collection("users").document(f"elder{i}"),
                          {"platform": "ios", "voipToken": f"{i:064x}"})
                if i % 400 == 399:
                    batch.commit()
                    batch = db.batch()
            batch.commit()
            tokens = [stack.securetoken.mint(f"carer{i}") for i in range(args.invites)]
            latencies, failures, lock = [], [], threading.Lock()
            numbers = itertools.count()

            def worker() -> None:
                with httpx.Client(base_url=stack.base, timeout=30) as http:
                    while (i := next(numbers)) < args.invites:
                        started = time.perf_counter()
                        response = http.post("/api/call/invite", headers={
                            "Authorization": f"Bearer {tokens[i]}"}, json={
                            "group_id": "bench", "caller_id": f"carer{i}",
                            "receiver_id": f"elder{i}"})
                        elapsed = (time.perf_counter() - started) * 1000
                        with lock:
                            latencies.append(elapsed)
                            if response.status_code != 200 or not response.json()["pushSent"]:
                                failures.append(response.text[:200])

            started = time.perf_counter()
            with ThreadPoolExecutor(max_workers=args.concurrency) as pool:
                for _ in range(args.concurrency):
                    pool.submit(worker)
            seconds = time.perf_counter() - started
            workers = stack.env.get("GUNICORN_WORKERS", "2")
            threads = stack.env.get("GUNICORN_THREADS", "8")
    finally:
        apns.stop()

    jwts_by_connection = defaultdict(set)
    for record in apns.requests:
        jwts_by_connection[record.connection].add(record.jwt)
    pushed = sum(1 for r in apns.requests if r.status == 200)
    q = statistics.quantiles(latencies, n=100, method="inclusive")
    print(f"""Run {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC: `.venv/bin/python -m bench.push --invites {args.invites} --concurrency {args.concurrency}`
Machine: {machine()}; gunicorn {workers} workers x {threads} threads; Firestore emulator
and fake APNs on the same machine.

| invites | concurrency | invites/s | p50 ms | p99 ms | pushes answered 200 | failed invites |
|---|---|---|---|---|---|---|
| {len(latencies)} | {args.concurrency} | {len(latencies) / seconds:.1f} | {q[49]:.1f} | {q[98]:.1f} | {pushed} | {len(failures)} |

APNs connections: {apns.connections} for {workers} workers; distinct provider JWTs: {len(apns.jwts)};
JWTs per connection: {sorted(len(v) for v in jwts_by_connection.values())}.""")
    if failures:
        raise SystemExit(f"{len(failures)} invites failed, e.g. {failures[0]}")


if __name__ == "__main__":
    main()
