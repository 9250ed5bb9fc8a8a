"""Benchmark: normal requests while 200 slow clients attack, through nginx and without it.

    .venv/bin/python -m bench.slow_clients [--attack-seconds 30] [--quiet-seconds 30]
        [--headers 140] [--bodies 60] [--request-timeout 5]

One run, one production-like stack (bench.stack: Firestore and Storage emulators, a fake
securetoken server, gunicorn with config/gunicorn.conf.py, 2 workers x 8 threads) and nginx
with the project's nginx.conf in front of it (devstack/nginx.py: only the upstream, the
listen port and temp paths change). A normal client on 127.0.0.2 sends, one at a time,
`GET /api/health/live` and an authenticated `GET /api/users/<uid>/has-recording` (a
Firestore query), in four phases:

  1. through nginx, quiet                     (the baseline for 2)
  2. through nginx, under attack
  3. straight to gunicorn, quiet              (the baseline for 4)
  4. straight to gunicorn, under attack (how production would fare without nginx)

The attack (devstack/slow_clients.py), from 127.0.0.1: `--headers` connections send their
headers one byte a second, `--bodies` connections declare a 1000-byte body and never send
it, for `--attack-seconds`. Each normal request has a `--request-timeout`; one that times out
or fails counts as failed, and enters the percentiles with the time it took to fail.
Prints a table and a Markdown block for BENCHMARKS.md. Bounded: about 2 x quiet + 2 x attack
seconds plus start-up; everything it starts is stopped on exit.
"""
from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import http.client
import shutil
import statistics
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from bench.stack import bench_stack, machine
from devstack.nginx import nginx_in_front_of
from devstack.slow_clients import SlowClients

NORMAL_CLIENT = "127.0.0.2"  # another limit_conn key than the attackers' 127.0.0.1
UID = "alice"
PAUSE_S = 0.05  # between two normal requests


@dataclass
class Phase:
    name: str
    latencies: dict = field(default_factory=lambda: {"live": [], "authed": []})
    failures: dict = field(default_factory=lambda: {"live": 0, "authed": 0})
    attack: dict | None = None
    recovered_after_s: float | None = None

    def summary(self, kind: str) -> dict:
        values = sorted(self.latencies[kind])
        if not values:
            return {"n": 0, "failed": self.failures[kind], "p50": None, "p99": None}
        cuts = statistics.quantiles(values, n=100, method="inclusive") if len(values) > 1 \
            else [values[0]] * 99
        return {"n": len(values), "failed": self.failures[kind],
                "p50": cuts[49] * 1000, "p99": cuts[98] * 1000}


def one_request(port: int, path: str, headers: dict, timeout: float) -> tuple[bool, float]:
    started = time.monotonic()
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout,
                                      source_address=(NORMAL_CLIENT, 0))
    try:
        conn.request("GET", path, headers=headers)
        response = conn.getresponse()
        response.read()
        ok = response.status == 200
    except OSError:
        ok = False
    finally:
        conn.close()
    return ok, time.monotonic() - started


def normal_traffic(phase: Phase, port: int, auth: dict, seconds: float, timeout: float) -> None:
    requests = {"live": ("/api/health/live", {}),
                "authed": (f"/api/users/{UID}/has-recording", auth)}
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        for kind, (path, headers) in requests.items():
            ok, took = one_request(port, path, headers, timeout)
            phase.latencies[kind].append(took)
            if not ok:
                phase.failures[kind] += 1
            time.sleep(PAUSE_S)


def under_attack(phase: Phase, port: int, auth: dict, args) -> None:
    slow = SlowClients(port, headers=args.headers, bodies=args.bodies, tag="bench-slow").open()
    stop = threading.Event()

    def ticker():
        while not stop.wait(1.0):
            slow.tick()

    thread = threading.Thread(target=ticker, daemon=True)
    thread.start()
    try:
        normal_traffic(phase, port, auth, args.attack_seconds, args.request_timeout)
    finally:
        stop.set()
        thread.join(timeout=10)
        slow.tick()
        phase.attack = attack_summary(slow)
        slow.close()


def attack_summary(slow: SlowClients) -> dict:
    out = {}
    for kind in ("headers", "body"):
        conns = [c for c in slow.connections if c.kind == kind]
        refused = [c for c in conns if c.answer.startswith((b"HTTP/1.1 429", b"HTTP/1.1 503"))]
        closed = [c.held_for for c in conns if c.held_for is not None and c not in refused]
        out[kind] = {"opened": len(conns), "refused": len(refused),
                     "closed_by_server": len(closed),
                     "held_median_s": statistics.median(closed) if closed else None}
    return out


def settle(port: int, timeout: float) -> float | None:
    """Seconds until the server answers again once the slow connections are gone (bounded)."""
    started = time.monotonic()
    while time.monotonic() - started < 60:
        if one_request(port, "/api/health/live", {}, timeout)[0]:
            return time.monotonic() - started
        time.sleep(0.5)
    return None


def fmt(value, spec=".1f") -> str:
    return "-" if value is None else format(value, spec)


def report(phases: list[Phase], args, started: dt.datetime) -> None:
    rows = []
    for phase in phases:
        for kind in ("live", "authed"):
            s = phase.summary(kind)
            rows.append((phase.name, kind, s))
    print(f"\n{'phase':32} {'request':7} {'n':>5} {'failed':>6} {'p50 ms':>9} {'p99 ms':>9}")
    for name, kind, s in rows:
        print(f"{name:32} {kind:7} {s['n']:5} {s['failed']:6} {fmt(s['p50']):>9} {fmt(s['p99']):>9}")

    def ratio(attacked: Phase, quiet: Phase, kind: str, key: str) -> str:
        a, q = attacked.summary(kind)[key], quiet.summary(kind)[key]
        return "-" if not a or not q else f"{a / q:.1f}"

    nq, na, gq, ga = phases
    print("\n--- Markdown for BENCHMARKS.md ---")
    print(f"### Results, {started:%Y-%m-%d %H:%M} UTC\n")
    print(f"Machine: {machine()}. {args.headers} + {args.bodies} slow connections for "
          f"{args.attack_seconds:g} s, quiet phases {args.quiet_seconds:g} s, request timeout "
          f"{args.request_timeout:g} s.\n")
    print("| route | request | quiet p50 / p99 ms | attacked p50 / p99 ms | attacked failed / sent "
          "| p99 ratio attacked / quiet |")
    print("|---|---|---:|---:|---:|---:|")
    for quiet, attacked, label in ((nq, na, "through nginx"), (gq, ga, "gunicorn alone")):
        for kind in ("live", "authed"):
            q, a = quiet.summary(kind), attacked.summary(kind)
            print(f"| {label} | {kind} | {fmt(q['p50'])} / {fmt(q['p99'])} | {fmt(a['p50'])} / "
                  f"{fmt(a['p99'])} | {a['failed']} / {a['n']} | "
                  f"{ratio(attacked, quiet, kind, 'p99')} |")
    print()
    for phase in (na, ga):
        h, b = phase.attack["headers"], phase.attack["body"]

        def closed(part: dict, of: int) -> str:
            if not part["closed_by_server"]:
                return f"none of {of} closed by the server"
            return (f"{part['closed_by_server']} of {of} closed by the server, median after "
                    f"{fmt(part['held_median_s'])} s")

        print(f"- {phase.name}: header dribblers {closed(h, h['opened'])}; silent bodies "
              f"{b['refused']} refused at once, {closed(b, b['opened'] - b['refused'])}; "
              f"liveness answered {fmt(phase.recovered_after_s, '.2f')} s after the slow "
              "connections closed.")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--attack-seconds", type=float, default=30)
    parser.add_argument("--quiet-seconds", type=float, default=30)
    parser.add_argument("--headers", type=int, default=140)
    parser.add_argument("--bodies", type=int, default=60)
    parser.add_argument("--request-timeout", type=float, default=5)
    args = parser.parse_args()
    assert 0 < args.attack_seconds <= 120 and 0 < args.quiet_seconds <= 60, "bounded runs only"
    assert args.headers + args.bodies <= 1000, "bounded runs only"

    started = dt.datetime.now(dt.UTC)
    prefix = Path(tempfile.mkdtemp(prefix="memharbor-bench-nginx-"))
    prefix.chmod(0o755)  # when run as root, nginx workers run as `nobody`
    try:
        with bench_stack(GUNICORN_MAX_REQUESTS="0") as stack, \
                nginx_in_front_of(prefix, int(stack.base.rsplit(":", 1)[1])) as nginx:
            gunicorn_port = int(stack.base.rsplit(":", 1)[1])
            auth = {"Authorization": f"Bearer {stack.securetoken.mint(UID)}"}
            for port in (nginx["port"], gunicorn_port):  # warm up: token cache, Firestore
                for _ in range(20):
                    one_request(port, f"/api/users/{UID}/has-recording", auth, 10)
            phases = [Phase("through nginx, quiet"), Phase("through nginx, attacked"),
                      Phase("gunicorn alone, quiet"), Phase("gunicorn alone, attacked")]
            for port, (quiet, attacked) in ((nginx["port"], phases[:2]),
                                            (gunicorn_port, phases[2:])):
                print(f"{quiet.name} ...", flush=True)
                normal_traffic(quiet, port, auth, args.quiet_seconds, args.request_timeout)
                print(f"{attacked.name} ...", flush=True)
                under_attack(attacked, port, auth, args)
                attacked.recovered_after_s = settle(port, args.request_timeout)
            report(phases, args, started)
    finally:
        with contextlib.suppress(OSError):
            shutil.rmtree(prefix)


if __name__ == "__main__":
    main()
