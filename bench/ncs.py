"""Benchmark Agora channel events: a stream of signed NCS callbacks (joins, leaves,
duplicates) for many concurrent calls through gunicorn, against the Firestore emulator's
raw rate for the same work done directly, in the same run.

    .venv/bin/python -m bench.ncs [--calls 200] [--concurrency 16] [--raw-seconds 10]

Per call: both parties join, one join is delivered twice (the same noticeId), both leave:
5 callbacks, 4 applied and 1 duplicate. What one applied event costs in Firestore, from
the code path (calls/channel_events.py): 1 point read of `channels/{name}`, then
`calls.store.call_apply` reading the call and `agoraNotices/{noticeId}` and committing one
batch that writes both, the call under an update-time precondition (3 reads, 2 writes,
1 commit). The raw baseline does exactly that with the Firestore client
directly, so the ratio is what Django, gunicorn, the signature check and the rule table
add. Prints a Markdown block for BENCHMARKS.md; stops everything it started.
"""

from __future__ import annotations

import argparse
import hashlib
import hmac
import json
import os
import secrets
import statistics
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
from google.auth.credentials import AnonymousCredentials
from google.cloud import firestore

from bench.stack import PROJECT_ID, bench_stack, machine

SECRET = secrets.token_hex(16)


def _pct(values: list[float], q: int) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1]


def _calls(stack, count: int) -> list[dict]:
    """`count` accepted calls, each party holding an Agora uid."""
    def one(i: int) -> dict:
        caller, receiver = f"nc{i}", f"nr{i}"
        tokens = {u: stack.securetoken.mint(u) for u in (caller, receiver)}
        with httpx.Client(base_url=stack.base, timeout=30) as http:
            def post(user, path, body):
                response = http.post(path, json=body,
                                     headers={"Authorization": f"Bearer {tokens[user]}"})
                response.raise_for_status()
                return response.json()
            call = post(caller, "/api/call/invite", {"group_id": "bench", "caller_id": caller,
                                                     "receiver_id": receiver})
            post(receiver, "/api/call/answer", {"call_id": call["callId"], "action": "accept"})
            post(caller, "/api/token", {"channel": call["channelName"], "uid": 10})
            post(receiver, "/api/token", {"channel": call["channelName"], "uid": 20})
        return call

    with ThreadPoolExecutor(max_workers=8) as pool:
        return list(pool.map(one, range(count)))


def _event(event_type: int, channel: str, uid: int, seq: int, notice: str) -> bytes:
    return json.dumps({"noticeId": notice, "productId": 1, "eventType": event_type,
                       "notifyMs": int(time.time() * 1000),
                       "payload": {"channelName": channel, "uid": uid, "clientSeq": seq,
                                   "platform": 1, "ts": int(time.time())}}).encode()


def _stream(calls: list[dict]) -> list[bytes]:
    """Round-robin over the calls, so every call has events in flight at once."""
    per_call = []
    for call in calls:
        ch, tag = call["channelName"], call["callId"][:8]
        join = _event(103, ch, 10, 1, f"{tag}-j10")
        per_call.append([join, _event(103, ch, 20, 1, f"{tag}-j20"), join,
                         _event(104, ch, 20, 2, f"{tag}-l20"), _event(104, ch, 10, 2, f"{tag}-l10")])
    return [events[i] for i in range(5) for events in per_call]


def drive(stack, bodies: list[bytes], *, concurrency: int) -> dict:
    latencies, results, lock = [], {}, threading.Lock()
    queue = iter(bodies)

    def worker() -> None:
        with httpx.Client(base_url=stack.base, timeout=30) as http:
            while True:
                with lock:
                    body = next(queue, None)
                if body is None:
                    return
                signature = hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
                started = time.perf_counter()
                response = http.post("/api/webhooks/agora", content=body, headers={
                    "Content-Type": "application/json", "Agora-Signature-V2": signature})
                ms = (time.perf_counter() - started) * 1000
                key = (response.status_code, response.json().get("result"),
                       response.json().get("reason"))
                with lock:
                    latencies.append(ms)
                    results[key] = results.get(key, 0) + 1

    began = time.perf_counter()
    threads = [threading.Thread(target=worker) for _ in range(concurrency)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    wall = time.perf_counter() - began
    return {"events": len(bodies), "per_s": len(bodies) / wall, "p50": _pct(latencies, 50),
            "p99": _pct(latencies, 99), "max": max(latencies), "results": results}


def raw_rate(stack, *, seconds: float, concurrency: int) -> dict:
    """The same Firestore work per event, done directly: read a channel entry, a call
    and a notice, then one batch writing both (the call only if unchanged since read)."""
    os.environ["FIRESTORE_EMULATOR_HOST"] = stack.env["FIRESTORE_EMULATOR_HOST"]
    db = firestore.Client(project=PROJECT_ID, credentials=AnonymousCredentials())
    calls, channels = db.collection("bench_calls"), db.collection("bench_channels")
    for i in range(concurrency):
        calls.document(f"c{i}").set({"status": "accepted", "presence": {}})
        channels.document(f"ch{i}").set({"callId": f"c{i}"})
    done, stop_at, lock = [0], time.monotonic() + seconds, threading.Lock()

    def worker(i: int) -> None:
        n = 0
        while time.monotonic() < stop_at:
            channels.document(f"ch{i}").get()
            ref, notice = calls.document(f"c{i}"), db.collection("bench_notices").document(
                f"{i}-{n}")

            snap = ref.get()
            notice.get()
            batch = db.batch()
            batch.update(ref, {"presence.u": {"inChannel": n % 2 == 0}},
                         option=db.write_option(last_update_time=snap.update_time))
            batch.create(notice, {"at": n})
            batch.commit()
            n += 1
        with lock:
            done[0] += n

    began = time.perf_counter()
    with ThreadPoolExecutor(max_workers=concurrency) as pool:
        list(pool.map(worker, range(concurrency)))
    return {"per_s": done[0] / (time.perf_counter() - began)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=200)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--raw-seconds", type=float, default=10)
    args = parser.parse_args()
    with bench_stack(AGORA_NCS_SECRET=SECRET) as stack:
        calls = _calls(stack, args.calls)
        run = drive(stack, _stream(calls), concurrency=args.concurrency)
        raw = raw_rate(stack, seconds=args.raw_seconds, concurrency=args.concurrency)
    applied = sum(n for (s, r, _), n in run["results"].items() if r == "applied")
    print(f"\n### Channel events, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}\n")
    print(f"Machine: {machine()}. Command: `.venv/bin/python -m bench.ncs --calls {args.calls} "
          f"--concurrency {args.concurrency}`.\n")
    print("| what | events | events/s | p50 ms | p99 ms | max ms |")
    print("|---|---:|---:|---:|---:|---:|")
    print(f"| signed callbacks through gunicorn | {run['events']} | {run['per_s']:.0f} | "
          f"{run['p50']:.1f} | {run['p99']:.1f} | {run['max']:.1f} |")
    print(f"| the same Firestore work, direct | - | {raw['per_s']:.0f} | - | - | - |")
    print(f"\nRatio gunicorn / raw: **{run['per_s'] / raw['per_s']:.2f}**. "
          f"Answers: {sorted(run['results'].items())} ({applied} applied).")


if __name__ == "__main__":
    main()
