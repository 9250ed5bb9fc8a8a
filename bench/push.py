"""Benchmark invites that ring phones: invites through gunicorn with the fake APNs (HTTP/2 +
TLS on loopback) and the fake FCM, in one run, to receivers with one iPhone and to receivers
with three devices (two iOS, one Android, rung at once) — invites/s, latency, and APNs
connections and provider JWTs per worker (target: one of each, whatever the devices).

    .venv/bin/python -m bench.push [--invites 1000] [--concurrency 16]

`--invites` is per kind of receiver. Prints a table and a Markdown block for BENCHMARKS.md.
Stops everything it started.
"""

from __future__ import annotations

import argparse
import datetime as dt
import itertools
import json
import os
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
from tests.fakes.fcm import FakeFCM

# receiver kind -> its devices: (deviceId, platform)
KINDS = {"1 device (iOS)": [("iphone", "ios")],
         "3 devices (2 iOS, 1 Android)": [("iphone", "ios"), ("ipad", "ios"),
                                          ("pixel", "android")]}


def _seed(db, prefix: str, devices, count: int) -> None:
    batch, pending = db.batch(), 0
    now = dt.datetime.now(dt.UTC)
    for i in range(count):
        user = db.collection("users").document(f"{prefix}elder{i}")
        for n, (device_id, platform) in enumerate(devices):
            token = f"{prefix}-{n}-{i}".encode().hex().ljust(64, "0")
            fields = ({"voipToken": token, "apnsToken": token[::-1]} if platform == "ios"
                      else {"fcmToken": f"fcm-{prefix}-{n}-{i}"})
            batch.set(user.collection("devices").document(device_id),
                      {"platform": platform, "updatedAt": now - dt.timedelta(seconds=n),
                       **fields})
            pending += 1
            if pending == 400:
                batch.commit()
                batch, pending = db.batch(), 0
    batch.commit()


def _run(stack, prefix: str, count: int, concurrency: int, expected_devices: int) -> dict:
    tokens = [stack.securetoken.mint(f"{prefix}carer{i}") for i in range(count)]
    latencies, failures, lock = [], [], threading.Lock()
    numbers = itertools.count()

    def worker() -> None:
        with httpx.Client(base_url=stack.base, timeout=30) as http:
            while (i := next(numbers)) < count:
                started = time.perf_counter()
                response = http.post("/api/call/invite", headers={
                    "Authorization": f"Bearer {tokens[i]}"}, json={
                    "group_id": "bench", "caller_id": f"{prefix}carer{i}",
                    "receiver_id": f"{prefix}elder{i}"})
                elapsed = (time.perf_counter() - started) * 1000
                with lock:
                    latencies.append(elapsed)
                    if response.status_code != 200 or not response.json()["pushSent"]:
                        failures.append(response.text[:200])

    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=concurrency) as pool:
        for _ in range(concurrency):
            pool.submit(worker)
    seconds = time.perf_counter() - started
    q = statistics.quantiles(latencies, n=100, method="inclusive")
    return {"invites": len(latencies), "rate": len(latencies) / seconds, "p50": q[49],
            "p99": q[98], "failures": failures, "devices": expected_devices}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--invites", type=int, default=1000, help="per kind of receiver")
    parser.add_argument("--concurrency", type=int, default=16)
    args = parser.parse_args()

    key = ec.generate_private_key(ec.SECP256R1())
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption()).decode()
    apns = FakeAPNs(team_id="TEAM123456", key_id="KEY1234567", bundle_id="org.memharbor.app",
                    voip_types={"incoming_call"},
                    public_key_pem=key.public_key().public_bytes(
                        serialization.Encoding.PEM,
                        serialization.PublicFormat.SubjectPublicKeyInfo)).start()
    fcm = FakeFCM(project_id=PROJECT_ID).start()
    results = {}
    try:
        env = {"APNS_TEAM_ID": apns.team_id, "APNS_KEY_ID": apns.key_id,
               "APNS_BUNDLE_ID": apns.bundle_id, "APNS_KEY_CONTENT": pem.replace("\n", "\\n"),
               "APNS_BASE_URL": apns.base_url, "APNS_CA_FILE": apns.ca_file,
               "FCM_SERVICE_ACCOUNT_JSON": json.dumps(fcm.service_account_info()),
               "FCM_BASE_URL": fcm.base_url, "FCM_PROJECT_ID": PROJECT_ID}
        with bench_stack(**env) as stack:
            os.environ["FIRESTORE_EMULATOR_HOST"] = stack.emulators.firestore_host
            db = firestore.Client(project=PROJECT_ID, credentials=AnonymousCredentials())
            for n, devices in enumerate(KINDS.values()):
                _seed(db, f"k{n}", devices, args.invites)
            # a few invites first, so neither kind pays for the connections and tokens
            _seed(db, "warm", KINDS["3 devices (2 iOS, 1 Android)"], 64)
            _run(stack, "warm", 64, args.concurrency, 3)
            for n, (kind, devices) in enumerate(KINDS.items()):
                results[kind] = _run(stack, f"k{n}", args.invites, args.concurrency,
                                     len(devices))
            workers = stack.env.get("GUNICORN_WORKERS", "2")
            threads = stack.env.get("GUNICORN_THREADS", "8")
    finally:
        apns.stop()
        fcm.stop()

    jwts_by_connection = defaultdict(set)
    for record in apns.requests:
        jwts_by_connection[record.connection].add(record.jwt)
    apns_ok = sum(1 for r in apns.requests if r.status == 200)
    fcm_ok = sum(1 for m in fcm.messages if m.status == 200)
    rows = "\n".join(
        f"| {kind} | {r['invites']} | {args.concurrency} | {r['rate']:.1f} | {r['p50']:.1f} | "
        f"{r['p99']:.1f} | {len(r['failures'])} |" for kind, r in results.items())
    single, multi = results.values()
    print(f"""Run {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC: `.venv/bin/python -m bench.push --invites {args.invites} --concurrency {args.concurrency}`
Machine: {machine()}; gunicorn {workers} workers x {threads} threads; Firestore emulator,
fake APNs and fake FCM on the same machine.

| receivers | invites | concurrency | invites/s | p50 ms | p99 ms | failed invites |
|---|---|---|---|---|---|---|
{rows}

3 devices vs 1: {multi['rate'] / single['rate']:.2f}x the invites/s, {multi['p99'] / single['p99']:.2f}x the p99.
Pushes answered 200 (incl. 64 warm-up invites): APNs {apns_ok}, FCM {fcm_ok}; APNs
violations: {len(apns.violations)}.
APNs connections: {apns.connections} for {workers} workers; distinct provider JWTs: {len(apns.jwts)};
JWTs per connection: {sorted(len(v) for v in jwts_by_connection.values())}.""")
    failures = [f for r in results.values() for f in r["failures"]]
    if failures:
        raise SystemExit(f"{len(failures)} invites failed, e.g. {failures[0]}")


if __name__ == "__main__":
    main()
