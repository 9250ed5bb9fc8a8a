"""Benchmark: `POST /api/token` against `GET /api/health/live` on one gunicorn, one run.

    .venv/bin/python -m bench.token [--duration 5] [--rounds 4] [--connections 16]
        [--threads 2] [--server-env NAME=VALUE ...]

Starts a production-like stack on free loopback ports (Firestore + Storage emulators, a
fake securetoken certificate server, gunicorn with `config/gunicorn.conf.py` and debug off,
Firebase auth), then drives it with `wrk` from a separate process. The two endpoints are
measured alternately (live, token, live, token, ...) and the median of each is reported,
so drift on a noisy machine touches both. Prints a table, the ratio token / live, and a
Markdown block for BENCHMARKS.md. Target (DESIGN.md): ratio >= 0.85.

Before measuring, alice invites bob and bob accepts, through the API, so alice's token
requests are for the channel of a real accepted call (with the default
TOKEN_CHANNEL_POLICY=call the server looks that call up in Firestore on every request).
The server caches verified ID tokens, so a run measures one RS256 verification per worker
and then cache hits: that is what apps do (one ID token reused for up to an hour).

Besides req/s and latency it reports CPU per request (gunicorn master + workers, and the
Firestore emulator, from /proc) and how the work split between the workers: on 2 cores
the req/s figures drift between runs, CPU per request much less.

Everything it starts is stopped on exit, Ctrl-C or error (process groups, die-with-parent).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import os
import runpy
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import urllib.error
import urllib.request
from pathlib import Path
from unittest import mock

from bench.stack import ROOT, bench_stack, machine_info
from devstack.emulators import EmulatorUnavailable, spawn, stop

UID = 12345  # the Agora uid asked for; the channel comes from a real accepted call
TARGET_RATIO = 0.85
POLICY_NOTE = {
    "call": "the default: tokens only for a participant of an active call on the channel, "
            "one Firestore query per request",
    "authenticated": "any signed-in user, no Firestore lookup",
}
MARK = "WRKJSON "

# wrk prints this from `done()`: latency percentiles in ms, throughput and error counts.
_LUA_DONE = r"""
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    '%s{"requests": %d, "duration_us": %d, "rps": %.2f, "p50_ms": %.3f, "p90_ms": %.3f, ' ..
    '"p99_ms": %.3f, "max_ms": %.3f, "non2xx": %d, "connect": %d, "read": %d, ' ..
    '"write": %d, "timeout": %d}\n',
    "%MARK%", summary.requests, summary.duration,
    summary.requests / (summary.duration / 1e6),
    latency:percentile(50) / 1000, latency:percentile(90) / 1000,
    latency:percentile(99) / 1000, latency.max / 1000,
    e.status, e.connect, e.read, e.write, e.timeout))
end
"""


def lua_script(*, method: str, body: str | None, headers: dict[str, str]) -> str:
    """A static request (no per-request Lua call) plus the JSON `done()`."""
    lines = [f"wrk.method = {json.dumps(method)}"]
    if body is not None:
        lines.append(f"wrk.body = {json.dumps(body)}")
    for name, value in headers.items():
        lines.append(f"wrk.headers[{json.dumps(name)}] = {json.dumps(value)}")
    return "\n".join(lines) + "\n" + _LUA_DONE.replace("%MARK%", MARK)


def run_wrk(url: str, script: Path, *, threads: int, connections: int, duration: float,
            log_path: Path) -> dict:
    """One wrk run in its own process group, bounded in time; its `done()` JSON."""
    log_path.write_bytes(b"")
    argv = ["wrk", f"-t{threads}", f"-c{connections}", f"-d{duration:g}s", "--timeout", "5s",
            "--latency", "-s", str(script), url]
    proc = spawn(argv, log_path=log_path)
    try:
        proc.wait(timeout=duration + 30)
    except subprocess.TimeoutExpired:
        raise RuntimeError(f"wrk did not finish within {duration + 30:.0f} s") from None
    finally:
        stop(proc, grace=2)
    output = log_path.read_text(errors="replace")
    for line in output.splitlines():
        if line.startswith(MARK):
            return json.loads(line[len(MARK):])
    raise RuntimeError(f"wrk exited with {proc.returncode} and no summary:\n{output[-2000:]}")


def machine() -> dict:
    try:
        wrk_version = subprocess.run(["wrk", "--version"], capture_output=True, text=True,
                                     timeout=5).stdout.splitlines()[0].split(" [")[0]
    except (OSError, subprocess.SubprocessError, IndexError):
        wrk_version = "wrk"
    return {**machine_info(), "wrk": wrk_version}


def api_post(base: str, path: str, body: dict, id_token: str) -> tuple[int, dict]:
    request = urllib.request.Request(
        f"{base}{path}", data=json.dumps(body).encode(), method="POST",
        headers={"Content-Type": "application/json", "Authorization": f"Bearer {id_token}"})
    try:
        with urllib.request.urlopen(request, timeout=20) as response:
            return response.status, json.load(response)
    except urllib.error.HTTPError as exc:
        return exc.code, {"raw": exc.read()[:500].decode(errors="replace")}


def accepted_call(base: str, *, caller_token: str, receiver_token: str) -> str:
    """Invite (alice -> bob in group g1) and accept, through the API: the channel name of
    a call in which alice may ask for tokens, as the apps do right after these two calls."""
    status, invited = api_post(base, "/api/call/invite", {
        "group_id": "g1", "caller_id": "alice", "receiver_id": "bob"}, caller_token)
    if status != 200:
        raise RuntimeError(f"POST /api/call/invite answered {status}: {invited}")
    status, answered = api_post(base, "/api/call/answer", {
        "call_id": invited["callId"], "action": "accept"}, receiver_token)
    if status != 200 or answered.get("status") != "accepted":
        raise RuntimeError(f"POST /api/call/answer answered {status}: {answered}")
    return invited["channelName"]


def check_token_response(base: str, body: dict, id_token: str) -> None:
    """One real request: 200 and an Agora token in the body, before measuring."""
    status, answer = api_post(base, "/api/token", body, id_token)
    if status != 200 or not str(answer.get("token", "")).startswith("007"):
        raise RuntimeError(f"POST /api/token answered {status}: {answer}")


def _cpu_fields(pid: int) -> list[str] | None:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None


def cpu_snapshot(master: int, others: dict[str, int]) -> dict:
    """CPU seconds so far: gunicorn (master, its live workers, and workers it has already
    reaped after max_requests, via the master's cutime) and each other named process."""
    tick = os.sysconf("SC_CLK_TCK")
    workers = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            fields = _cpu_fields(int(entry.name))
            if fields and fields[1] == str(master):
                workers[int(entry.name)] = (int(fields[11]) + int(fields[12])) / tick
    fields = _cpu_fields(master)
    gunicorn = sum(workers.values())
    if fields:
        gunicorn += sum(int(fields[i]) for i in (11, 12, 13, 14)) / tick
    snap = {"gunicorn": gunicorn, "workers": workers}
    for name, pid in others.items():
        fields = _cpu_fields(pid)
        snap[name] = (int(fields[11]) + int(fields[12])) / tick if fields else 0.0
    return snap


def cpu_per_request(before: dict, after: dict, requests: int) -> dict:
    """CPU ms per request for each process, and how the work split between workers (only
    when the same workers lived through the whole run)."""
    out = {name: (after[name] - before[name]) * 1000 / max(requests, 1)
           for name in after if name != "workers"}
    same = set(before["workers"]) == set(after["workers"])
    if same and after["workers"]:
        used = sorted((after["workers"][pid] - before["workers"][pid]
                       for pid in after["workers"]), reverse=True)
        total = sum(used) or 1
        out["split"] = "/".join(f"{u * 100 / total:.0f}" for u in used)
    else:
        out["split"] = "recycled"
    return out


def count_worker_boots(log_path: Path) -> int:
    try:
        return log_path.read_text(errors="replace").count("Booting worker")
    except OSError:
        return 0


def fmt_table(rows: list[tuple[str, dict]]) -> str:
    out = ["| endpoint | req/s | p50 ms | p99 ms | CPU ms/req gunicorn "
           "| CPU ms/req Firestore emulator |", "|---|---:|---:|---:|---:|---:|"]
    for name, r in rows:
        out.append(f"| `{name}` | {r['rps']:,.0f} | {r['p50_ms']:.2f} | {r['p99_ms']:.2f} "
                   f"| {r['cpu_gunicorn']:.2f} | {r['cpu_firestore']:.2f} |")
    return "\n".join(out)


def median_of(results: list[dict]) -> dict:
    out = {key: statistics.median(r[key] for r in results)
           for key in ("rps", "p50_ms", "p99_ms")}
    for key in ("gunicorn", "firestore"):
        out[f"cpu_{key}"] = statistics.median(r["cpu"][key] for r in results)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=int, default=5, help="seconds per measured run")
    parser.add_argument("--connections", type=int, default=16, help="wrk connections")
    parser.add_argument("--threads", type=int, default=2, help="wrk threads")
    parser.add_argument("--rounds", type=int, default=4,
                        help="measured runs per endpoint, alternated")
    parser.add_argument("--warmup", type=int, default=2, help="seconds of warm-up each")
    parser.add_argument("--server-env", action="append", default=[], metavar="NAME=VALUE",
                        help="extra environment for gunicorn, e.g. GUNICORN_MAX_REQUESTS=0 "
                             "(for experiments; the recorded figures use none)")
    args = parser.parse_args(argv)

    server_env = {}
    for item in args.server_env:
        name, sep, value = item.partition("=")
        if not sep or not name:
            parser.error(f"--server-env wants NAME=VALUE, not {item!r}")
        server_env[name] = value

    if not shutil.which("wrk"):
        print("wrk is missing: install it (Debian: apt-get install -y wrk) and rerun.",
              file=sys.stderr)
        return 2

    # SIGTERM (and SIGHUP) unwind like Ctrl-C, so the finally below stops everything.
    def _raise_exit(signum, _frame):
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, _raise_exit)
    signal.signal(signal.SIGHUP, _raise_exit)

    os.chdir(ROOT)
    tmp = Path(tempfile.mkdtemp(prefix="memharbor-bench-"))
    exits = contextlib.ExitStack()
    try:
        print("starting emulators, fake securetoken and gunicorn ...", flush=True)
        # Recycling after max_requests is for slow leaks over days; at benchmark load it
        # would restart each worker every few seconds and measure the restarts (see
        # BENCHMARKS.md). --server-env GUNICORN_MAX_REQUESTS=10000 puts it back.
        stack = exits.enter_context(bench_stack(**{"GUNICORN_MAX_REQUESTS": "0",
                                                   **server_env}))
        base, fake, emulators, env = stack.base, stack.securetoken, stack.emulators, stack.env
        server, gunicorn_log = stack.gunicorn, stack.gunicorn_log
        with mock.patch.dict(os.environ, env, clear=True):
            conf = runpy.run_path(str(ROOT / "config" / "gunicorn.conf.py"))
        workers, threads = conf["workers"], conf["threads"]
        max_requests = conf.get("max_requests", 0)

        id_token = fake.mint("alice", expires_in=3600)
        channel = accepted_call(base, caller_token=id_token,
                                receiver_token=fake.mint("bob", expires_in=3600))
        token_body = {"channel": channel, "uid": UID}
        token_headers = {"Content-Type": "application/json",
                         "Authorization": f"Bearer {id_token}"}
        check_token_response(base, token_body, id_token)

        endpoints = {
            "GET /api/health/live": (f"{base}/api/health/live",
                                     lua_script(method="GET", body=None, headers={})),
            "POST /api/token": (f"{base}/api/token",
                                lua_script(method="POST", body=json.dumps(token_body),
                                           headers=token_headers)),
        }
        scripts = {}
        for i, (name, (_url, text)) in enumerate(endpoints.items()):
            scripts[name] = tmp / f"endpoint{i}.lua"
            scripts[name].write_text(text)
        wrk_log = tmp / "wrk.log"

        others = {"firestore": emulators.procs[0].pid}

        def measure(name: str, duration: float) -> dict:
            before = cpu_snapshot(server.pid, others)
            result = run_wrk(endpoints[name][0], scripts[name], threads=args.threads,
                             connections=args.connections, duration=duration,
                             log_path=wrk_log)
            result["cpu"] = cpu_per_request(before, cpu_snapshot(server.pid, others),
                                            result["requests"])
            errors = {k: result[k] for k in ("non2xx", "connect", "read", "write", "timeout")
                      if result[k]}
            result["errors"] = errors
            return result

        for name in endpoints:
            warm = measure(name, args.warmup)
            print(f"warm-up  {name:22s} {warm['rps']:8.0f} req/s", flush=True)
            if warm["errors"]:
                raise RuntimeError(f"{name} failed during warm-up: {warm['errors']}")

        results: dict[str, list[dict]] = {name: [] for name in endpoints}
        for round_no in range(1, args.rounds + 1):
            for name in endpoints:
                r = measure(name, args.duration)
                results[name].append(r)
                cpu = r["cpu"]
                print(f"round {round_no}  {name:22s} {r['rps']:8.0f} req/s  "
                      f"p50 {r['p50_ms']:6.2f} ms  p99 {r['p99_ms']:6.2f} ms  "
                      f"CPU/req gunicorn {cpu['gunicorn']:.2f} ms, Firestore emulator "
                      f"{cpu['firestore']:.2f} ms, workers split {cpu['split']}  "
                      f"({r['requests']} requests"
                      f"{', errors ' + str(r['errors']) if r['errors'] else ''})", flush=True)

        failed = {name: [r["errors"] for r in rs if r["errors"]] for name, rs in results.items()}
        failed = {name: errs for name, errs in failed.items() if errs}

        live = median_of(results["GET /api/health/live"])
        tok = median_of(results["POST /api/token"])
        ratio = tok["rps"] / live["rps"]
        boots = count_worker_boots(gunicorn_log)
        info = machine()
        policy = env.get("TOKEN_CHANNEL_POLICY", "call")
        date = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
        met = "met" if ratio >= TARGET_RATIO else "NOT met"
        command = (f".venv/bin/python -m bench.token --duration {args.duration:g} "
                   f"--connections {args.connections} --threads {args.threads} "
                   f"--rounds {args.rounds}"
                   + "".join(f" --server-env {item}" for item in args.server_env))
        runs = "; ".join(
            f"{name.split()[1]} " + ", ".join(f"{r['rps']:.0f} ({r['cpu']['split']})" for r in rs)
            for name, rs in results.items())
        table = fmt_table([("GET /api/health/live", live), ("POST /api/token", tok)])

        print()
        print(table)
        print(f"\nratio token / live = {ratio:.3f}  (target >= {TARGET_RATIO}: {met})")
        print(f"gunicorn worker boots during the run: {boots} ({workers} at start, "
              f"max_requests={max_requests})")
        print("\n----- Markdown for BENCHMARKS.md -----")
        print(f"""Run {date}: `{command}`

Machine: {info['nproc']} CPUs ({info['cpu']}), {info['mem']} RAM, {info['os']};
Python {info['python']}, Django {info['django']}, gunicorn {info['gunicorn']} gthread
{workers} workers x {threads} threads (config defaults), max_requests={max_requests};
TOKEN_CHANNEL_POLICY={policy} ({POLICY_NOTE.get(policy, "")});
load: {info['wrk']} `-t{args.threads} -c{args.connections} -d{args.duration:g}s`
on the same machine. Median of {args.rounds} alternated runs per endpoint.

{table}

Ratio token / live: **{ratio:.2f}** (target >= {TARGET_RATIO}: {met}).
Each run (req/s, workers' CPU split): {runs}.
gunicorn CPU per request, live / token: {live['cpu_gunicorn'] / tok['cpu_gunicorn']:.2f};
worker boots during the run: {boots} ({workers} at start).""")
        print("----- end -----")

        if failed:
            print(f"\nFAILED: non-2xx responses or socket errors: {failed}", file=sys.stderr)
            return 1
        return 0
    except (EmulatorUnavailable, RuntimeError) as exc:
        print(f"benchmark failed: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("\ninterrupted; stopping everything", file=sys.stderr)
        return 130
    finally:
        exits.close()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
