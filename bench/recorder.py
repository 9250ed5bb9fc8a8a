"""Benchmark the recorder: memory (PSS) and CPU of ONE `python -m recorder` process and its
whole process tree (Playwright driver, Chromium browser, zygotes, renderers, utility
processes) with 1, 5, 10, 20 and 40 concurrent `tone:<hz>` recordings, against the idle
baseline, and how much audio each recording lost against the wall time it ran; checked
against issue 13's targets (at 20 sessions <= 800 MB and <= 50 % of 2 cores, at 40
<= 1400 MB and <= 75 %, no recording losing more than 0.1 s).

    .venv/bin/python -m bench.recorder [--sessions 1,5,10,20,40] [--settle 15] [--window 10]
        [--env RECORDER_SESSIONS_PER_CONTEXT=10 ...]
        [--baseline-root <a worktree of main> --baseline-sessions 20,40]

`--env` sets recorder settings for the run (to compare them); `--baseline-root` first runs
the recorder of another checkout (the code before a change) at `--baseline-sessions` in
the same run, for the ratios.

Per level: start N sessions (one after the other, each with its own frequency), let them
record for --settle seconds, then measure over --window seconds: PSS (`Pss:` of
`/proc/<pid>/smaps_rollup`, summed over the tree, mean of samples; RSS sums would count
shared pages once per process) and CPU (utime+stime+cutime+cstime of the tree from
`/proc/<pid>/stat`, delta over the window / wall / nproc). Then every session is stopped at
once (the stop runs the real pipeline: remux, WAV, upload to the Storage emulator,
Firestore emulator) and each stored WAV is decoded from Storage: loss = wall time between
the 201 of its start and the sending of its stop - decoded duration. The page starts recording before the 201
and stops after the stop request arrives, so this loss is a lower bound.

PSS splits shared pages over every process mapping them machine-wide, so another Chromium
running meanwhile (tests, CI) lowers ours: the block counts those ("other Chromium", 0 for
a clean run) and also gives USS (private pages only), which does not depend on them.

Prints a table and a Markdown block for BENCHMARKS.md. Stops every process it started
(the recorder's process group and Chromium's, which Playwright puts in its own group) and
removes its recordings.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import datetime as dt
import json
import os
import re
import secrets
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from bench.stack import PROJECT_ID, machine_info
from devstack.emulators import Emulators, _http_ok, free_port, spawn, stop, wait_until

ROOT = Path(__file__).resolve().parent.parent
CLK_TCK = os.sysconf("SC_CLK_TCK")
NPROC = os.cpu_count() or 1


# -- the process tree ---------------------------------------------------------------------

@dataclass(frozen=True)
class Proc:
    pid: int
    ppid: int
    pgid: int
    state: str
    start: int  # starttime in clock ticks since boot: (pid, start) names a process
    ticks: int  # utime + stime + cutime + cstime


def _read_stat(pid: int) -> Proc | None:
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    rest = text[text.rindex(")") + 2:].split()
    # rest[0] is field 3 (state): ppid 4, pgrp 5, utime 14, stime 15, cutime 16, cstime 17,
    # starttime 22.
    return Proc(pid=pid, ppid=int(rest[1]), pgid=int(rest[2]), state=rest[0],
                start=int(rest[19]),
                ticks=sum(int(v) for v in rest[11:15]))


def tree(root: int) -> list[Proc]:
    """`root` and all its descendants now."""
    procs = [p for p in (_read_stat(int(d)) for d in os.listdir("/proc") if d.isdigit()) if p]
    children: dict[int, list[Proc]] = {}
    for p in procs:
        children.setdefault(p.ppid, []).append(p)
    found = [p for p in procs if p.pid == root]
    i = 0
    while i < len(found):
        found += children.get(found[i].pid, [])
        i += 1
    return found


def memory_kb(pid: int) -> tuple[int, int]:
    """(PSS, USS = Private_Clean + Private_Dirty) of one process, in kB.

    PSS divides each shared page by the number of processes mapping it machine-wide, so
    another Chromium running on the machine (a test, a CI job) lowers ours: Chromium's
    binary text is shared with it. USS does not depend on other processes."""
    pss = uss = 0
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                pss = int(line.split()[1])
            elif line.startswith(("Private_Clean:", "Private_Dirty:")):
                uss += int(line.split()[1])
    except OSError:
        pass
    return pss, uss


def foreign_chromium(ours: set[int]) -> int:
    """Chromium processes on this machine outside the recorder's tree (they share pages
    with ours and so lower our PSS)."""
    count = 0
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) in ours:
            continue
        try:
            exe = Path(f"/proc/{entry}/cmdline").read_bytes().split(b"\0", 1)[0]
        except OSError:
            continue
        # crashpad handlers are a separate binary (ours too: they double-fork out of the
        # tree; about 3 MB PSS for the pair, not counted)
        if exe == b"/usr/lib/chromium/chromium":
            count += 1
    return count


def kind(pid: int) -> str:
    """What a process of the tree is, for the breakdown."""
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return "gone"
    args = [a.decode(errors="replace") for a in argv if a]
    if len(args) == 1:  # Chromium rewrites its argv into one space-separated string
        args = args[0].split(" ")
    joined = " ".join(args)
    if "-m recorder" in joined or (len(args) > 2 and args[1:3] == ["-m", "recorder"]):
        return "recorder"
    for arg in args:
        if arg.startswith("--type="):
            return arg.split("=", 1)[1]
    if args and "chrom" in Path(args[0]).name:
        return "browser"
    if len(args) > 1 and "chrom" in Path(args[1]).name:
        return "chromium-wrapper"
    if "playwright" in joined:
        return "playwright"
    return Path(args[0]).name if args else "?"


# -- the recorder -------------------------------------------------------------------------

@dataclass
class Recorder:
    base: str
    secret: str
    proc: subprocess.Popen
    log: Path
    seen: dict = field(default_factory=dict)  # (pid, start) -> pgid of every tree member

    def call(self, method: str, path: str, body=None, *, timeout: float = 120):
        headers = {"Content-Type": "application/json", "X-Recorder-Secret": self.secret}
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(self.base + path, data=data, method=method,
                                         headers=headers)
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                return response.status, json.loads(response.read())
        except urllib.error.HTTPError as exc:
            return exc.code, json.loads(exc.read() or b"{}")

    def tree(self) -> list[Proc]:
        procs = tree(self.proc.pid)
        for p in procs:
            self.seen[(p.pid, p.start)] = p.pgid
        return procs

    def kill_leftovers(self) -> list[int]:
        """SIGKILL the process groups (then processes) of tree members still alive after the
        recorder stopped (Chromium runs in its own group). Only processes this run saw;
        zombies (exited, waiting for a reaper) are not alive."""
        own = os.getpgrp()
        alive = {key: pgid for key, pgid in self.seen.items()
                 if (p := _read_stat(key[0])) is not None and p.start == key[1]
                 and p.state not in ("Z", "X")}
        for pgid in sorted(set(alive.values()) - {own}):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pgid, signal.SIGKILL)
        for pid, _start in alive:
            p = _read_stat(pid)
            if p is not None and p.start == _start:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(pid, signal.SIGKILL)
        return sorted(pid for pid, _ in alive)


def start_recorder(workdir: Path, emulators: Emulators, *, root: Path = ROOT,
                   extra_env: dict | None = None) -> Recorder:
    """`python -m recorder` from the checkout at `root` (another one for a baseline)."""
    port, secret = free_port(), secrets.token_urlsafe(24)
    env = {**os.environ, **emulators.env(),
           # Production-like Django settings for the pipeline (debug off, throwaway secrets).
           "MEMHARBOR_DEBUG": "0", "MEMHARBOR_SECRET_KEY": secrets.token_urlsafe(32),
           "AGORA_APP_ID": secrets.token_hex(16), "AGORA_APP_CERT": secrets.token_hex(16),
           "AUTH_MODE": "firebase", "LOG_DIR": str(workdir), "LOG_LEVEL": "WARNING",
           "RECORDER_HOST": "127.0.0.1", "RECORDER_PORT": str(port),
           "RECORDER_SECRET": secret, "RECORDINGS_DIR": str(workdir / "recordings"),
           # the page's Agora bundle from this checkout (a baseline's may have none)
           "RECORDER_AGORA_SDK_PATH": str(ROOT / "recorder" / "node_modules" / "agora-rtc-sdk-ng"
                                          / "AgoraRTC_N-production.js"),
           "PYTHONPATH": str(root)}
    for name in ("DJANGO_SETTINGS_MODULE", "RECORDER_ALLOW_NO_SECRET", "RECORDER_MAX_SECONDS"):
        env.pop(name, None)
    env.update(extra_env or {})
    log = workdir / f"recorder-{port}.log"
    # -P: the recorder package comes from PYTHONPATH (`root`), not from the current directory.
    proc = spawn([sys.executable, "-P", "-m", "recorder"], log_path=log, env=env)
    recorder = Recorder(base=f"http://127.0.0.1:{port}", secret=secret, proc=proc, log=log)
    wait_until(lambda: _http_ok(f"{recorder.base}/health"), timeout=60, what="recorder",
               proc=proc, log_path=log)
    recorder.tree()
    return recorder


# -- measuring ----------------------------------------------------------------------------

def measure(recorder: Recorder, *, window: float, every: float = 2.0) -> dict:
    """PSS (mean of samples) and CPU % of all cores of the recorder's tree over `window`."""
    first = recorder.tree()
    t0 = time.monotonic()
    samples: list[int] = []
    uss_samples: list[int] = []
    foreign = 0
    kinds: dict[int, str] = {}
    by_kind: list[dict[str, tuple[int, int]]] = []  # per sample: kind -> (count, kB)
    while True:
        procs = [p for p in recorder.tree() if p.state not in ("Z", "X")]
        mem = {p.pid: memory_kb(p.pid) for p in procs}
        per = {pid: pss for pid, (pss, _uss) in mem.items()}
        samples.append(sum(per.values()))
        uss_samples.append(sum(uss for _pss, uss in mem.values()))
        foreign = max(foreign, foreign_chromium({p.pid for p in procs}))
        sample: dict[str, tuple[int, int]] = {}
        for pid, kb in per.items():
            name = kinds.setdefault(pid, kind(pid))
            count, total = sample.get(name, (0, 0))
            sample[name] = (count + 1, total + kb)
        by_kind.append(sample)
        left = window - (time.monotonic() - t0)
        if left <= 0:
            break
        time.sleep(min(every, left))
    last = recorder.tree()
    wall = time.monotonic() - t0
    cpu_s = (sum(p.ticks for p in last) - sum(p.ticks for p in first)) / CLK_TCK
    return {"pss_mb": statistics.mean(samples) / 1024, "pss_max_mb": max(samples) / 1024,
            "cpu_pct": cpu_s / wall / NPROC * 100, "wall": wall, "procs": len(last),
            "load1": os.getloadavg()[0],  # the whole machine's, to spot other work running
            "uss_mb": statistics.mean(uss_samples) / 1024, "foreign_chromium": foreign,
            "samples_mb": [kb / 1024 for kb in samples],
            # kind -> (most processes seen at once, mean MB over the samples)
            "breakdown": {k: (max(s.get(k, (0, 0))[0] for s in by_kind),
                              statistics.mean(s.get(k, (0, 0))[1] for s in by_kind) / 1024)
                          for k in sorted({k for s in by_kind for k in s})}}


def decoded_seconds(path: Path | str) -> float | None:
    """Decode the whole file (or URL) to null; the last `time=` is the audio's duration."""
    result = subprocess.run(["ffmpeg", "-nostdin", "-i", str(path), "-f", "null", "-"],
                            capture_output=True, text=True, timeout=120, check=False)
    times = re.findall(r"time=(\d+):(\d+):(\d+(?:\.\d+)?)", result.stderr)
    if result.returncode != 0 or not times:
        return None
    h, m, s = times[-1]
    return int(h) * 3600 + int(m) * 60 + float(s)


# -- one level ----------------------------------------------------------------------------

_hz = iter(range(300, 20000, 37))  # a distinct tone for every session of the run


def start_sessions(recorder: Recorder, n: int, tag: str) -> list[dict]:
    started = []
    for i in range(n):
        hz = next(_hz)
        t_sent = time.monotonic()
        status, body = recorder.call("POST", "/sessions", {
            "channel": f"bench_{tag}_{i}_{hz}hz", "uid": 1000 + i, "source": f"tone:{hz}"})
        if status != 201:
            raise SystemExit(f"start {i + 1}/{n} answered {status}: {body}")
        started.append({"sid": body["sid"], "hz": hz, "t_started": time.monotonic(),
                        "start_s": time.monotonic() - t_sent})
    return started


def stop_sessions(recorder: Recorder, sessions: list[dict]) -> list[dict]:
    """Stop every session at once; each stop answers after the pipeline stored it."""
    def one(s: dict) -> dict:
        s["t_stop_sent"] = time.monotonic()
        status, body = recorder.call("POST", f"/sessions/{s['sid']}/stop", timeout=300)
        s["stop_answer_s"] = time.monotonic() - s["t_stop_sent"]
        if status != 200:
            raise SystemExit(f"stop of {s['sid']} answered {status}: {body}")
        return {**s, **body}

    with ThreadPoolExecutor(max_workers=max(1, len(sessions))) as pool:
        return list(pool.map(one, sessions))


def check_recordings(stopped: list[dict]) -> dict:
    """Decode each stored WAV from Storage (the recorder removes its local media once a
    recording is stored): loss = wall time recorded - decoded duration."""
    losses, details = [], []
    for s in stopped:
        url = (s.get("firebase") or {}).get("url")
        wall = s["t_stop_sent"] - s["t_started"]
        decoded = decoded_seconds(url) if url else None
        if decoded is None:
            losses.append(wall)
        else:
            losses.append(wall - decoded)
        details.append({"hz": s["hz"], "wall": wall, "decoded": decoded,
                        "wav_s": (s.get("duration") or 0) / 1000,
                        "status": s.get("status"), "format": s.get("format"),
                        "error": s.get("error"), "chunks": s.get("chunks")})
    return {"worst_loss": max(losses), "best_loss": min(losses),
            "mean_loss": statistics.mean(losses),
            "worst_packet_loss": max(d["wall"] - d["wav_s"] for d in details),
            "not_stored": sum(1 for d in details if d["status"] != "stopped"
                              or d["format"] != "wav"),
            "undecodable": sum(1 for d in details if d["decoded"] is None),
            # what the stops answered for those not stored as WAV: {status/format/error: n}
            "outcomes": dict(collections.Counter(
                f"{d['status']}/{d['format']}/{d['error']}" for d in details
                if d["status"] != "stopped" or d["format"] != "wav")),
            "details": details}


def run_level(recorder: Recorder, n: int, *, settle: float, window: float) -> dict:
    t0 = time.monotonic()
    sessions = start_sessions(recorder, n, tag=f"n{n}")
    start_wall = time.monotonic() - t0
    health = recorder.call("GET", "/health")[1]
    time.sleep(settle)
    stats = measure(recorder, window=window)
    t1 = time.monotonic()
    stopped = stop_sessions(recorder, sessions)
    stop_wall = time.monotonic() - t1
    checked = check_recordings(stopped)
    left = recorder.call("GET", "/sessions")[1]["sessions"]
    if left:
        raise SystemExit(f"{len(left)} sessions still active after stopping all")
    return {"n": n, **stats, **checked, "contexts": health.get("contexts"),
            "start_all_s": start_wall,
            "start_max_s": max(s["start_s"] for s in sessions),
            "stop_all_s": stop_wall}


# -- main ---------------------------------------------------------------------------------

def chromium_version() -> str:
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        out = subprocess.run(["chromium", "--version"], capture_output=True, text=True,
                             timeout=30).stdout.strip()
        if out:
            return out.splitlines()[-1]
    return "unknown"


# Issue 13's targets for one node: level -> (max PSS MB, max CPU % of 2 cores); and no
# recording may lose more than MAX_LOSS_S at any level.
TARGETS = {20: (800, 50), 40: (1400, 75)}
MAX_LOSS_S = 0.1


def run_config(label: str, recorder: Recorder, levels: list[int], *, settle: float,
               window: float, began: float) -> tuple[dict, list[dict]]:
    """Warm up, measure idle, then each level on one recorder."""
    print(f"[{label}] recorder up ({time.monotonic() - began:.1f} s); warming up",
          file=sys.stderr, flush=True)
    # Warm-up: the browser is up and the pipeline (Firebase clients) is loaded.
    warm = start_sessions(recorder, 1, tag=f"warmup{label}")
    time.sleep(3)
    warmed = stop_sessions(recorder, warm)[0]
    if warmed.get("status") != "stopped":
        raise SystemExit(f"the warm-up recording was not stored: {warmed}")
    time.sleep(2)
    idle = measure(recorder, window=window)
    idle.update(n=0)
    print(f"[{label}] idle: {idle['pss_mb']:.0f} MB PSS, {idle['cpu_pct']:.1f} % CPU; "
          + ", ".join(f"{k} {c}x {mb:.0f}" for k, (c, mb) in idle["breakdown"].items()),
          file=sys.stderr, flush=True)
    results = []
    for n in levels:
        result = run_level(recorder, n, settle=settle, window=window)
        results.append(result)
        print(f"[{label}] {n} sessions: {result['pss_mb']:.0f} MB PSS (samples "
              f"{' '.join(f'{x:.0f}' for x in result['samples_mb'])}), "
              f"{result['cpu_pct']:.1f} % CPU, worst loss {result['worst_loss']:.2f} s, "
              f"load {result['load1']:.2f} ({time.monotonic() - began:.0f} s elapsed); "
              + ", ".join(f"{k} {c}x {mb:.0f}" for k, (c, mb) in result["breakdown"].items()),
              file=sys.stderr, flush=True)
    return idle, results


def shut(recorder: Recorder | None) -> list[int]:
    """SIGTERM to the recorder only, as Docker does: it stops its sessions and closes
    Chromium itself. Then its process group, then whatever the tree left behind."""
    if recorder is None:
        return []
    with contextlib.suppress(ProcessLookupError):
        recorder.proc.send_signal(signal.SIGTERM)
    with contextlib.suppress(subprocess.TimeoutExpired):
        recorder.proc.wait(timeout=60)
    stop(recorder.proc, grace=10)
    time.sleep(0.5)
    return recorder.kill_leftovers()


def verdicts(results: list[dict]) -> list[str]:
    """The targets, checked level by level, and the first level where one breaks."""
    lines, first = [], None
    for r in results:
        broken = []
        if r["worst_loss"] > MAX_LOSS_S:
            broken.append(f"loss {r['worst_loss']:.2f} s > {MAX_LOSS_S} s")
        if r["n"] in TARGETS:
            pss, cpu = TARGETS[r["n"]]
            if r["pss_mb"] > pss:
                broken.append(f"PSS {r['pss_mb']:.0f} MB > {pss} MB")
            if r["cpu_pct"] > cpu:
                broken.append(f"CPU {r['cpu_pct']:.1f} % > {cpu} %")
        if broken and first is None:
            first = r["n"]
        lines.append(f"- {r['n']} sessions: " + ("; ".join(broken) if broken else "within "
                     + (f"<= {TARGETS[r['n']][0]} MB, <= {TARGETS[r['n']][1]} % and "
                        if r["n"] in TARGETS else "") + f"loss <= {MAX_LOSS_S} s"))
    lines.append(f"- first level where a target breaks: {first if first else 'none'}")
    return lines


def table(idle: dict, results: list[dict]) -> list[str]:
    per_session = lambda r: (r["pss_mb"] - idle["pss_mb"]) / r["n"]  # noqa: E731
    rows = [
        "| sessions | PSS total MB | PSS per session above idle MB | CPU % of "
        f"{NPROC} cores | worst recording loss s | renderers | contexts |",
        "|---|---|---|---|---|---|---|",
        f"| 0 (idle) | {idle['pss_mb']:.0f} | - | {idle['cpu_pct']:.1f} | - "
        f"| {idle['breakdown'].get('renderer', (0, 0))[0]} | 0 |",
    ]
    for r in results:
        rows.append(f"| {r['n']} | {r['pss_mb']:.0f} | {per_session(r):.1f} "
                    f"| {r['cpu_pct']:.1f} | {r['worst_loss']:.2f} "
                    f"| {r['breakdown'].get('renderer', (0, 0))[0]} | {r['contexts']} |")
    return rows


def details(idle: dict, results: list[dict]) -> list[str]:
    lines = [
        "| sessions | USS MB | PSS max MB | loss min / mean / worst s "
        "| worst wall - WAV duration (pipeline's) s | stored as WAV | start slowest s "
        "| stop all (pipeline incl.) s | load avg 1 min | other Chromium |",
        "|---|---|---|---|---|---|---|---|---|---|",
        f"| 0 | {idle['uss_mb']:.0f} | {idle['pss_max_mb']:.0f} | - | - | - | - | - "
        f"| {idle['load1']:.2f} | {idle['foreign_chromium']} |",
    ]
    for r in results:
        lines.append(f"| {r['n']} | {r['uss_mb']:.0f} | {r['pss_max_mb']:.0f} "
                     f"| {r['best_loss']:.2f} / "
                     f"{r['mean_loss']:.2f} / {r['worst_loss']:.2f} "
                     f"| {r['worst_packet_loss']:.2f} | {r['n'] - r['not_stored']}/{r['n']} "
                     f"| {r['start_max_s']:.2f} | {r['stop_all_s']:.1f} | {r['load1']:.2f} "
                     f"| {r['foreign_chromium']} |")
    lines += [f"- {r['n']} sessions not stored as WAV: {r['outcomes']}" for r in results
              if r["outcomes"]]
    lines += ["", "PSS by process kind (most processes at once, mean MB over the window):",
              ""]
    for r in [idle, *results]:
        parts = ", ".join(f"{k} {c}x {mb:.0f}" for k, (c, mb) in r["breakdown"].items())
        lines.append(f"- {r['n']} sessions: {parts}")
    return lines


def _env_pairs(values: list[str]) -> dict:
    pairs = {}
    for value in values:
        name, sep, setting = value.partition("=")
        if not sep:
            raise SystemExit(f"--env/--baseline-env take NAME=VALUE, not {value!r}")
        pairs[name] = setting
    return pairs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sessions", default="1,5,10,20,40", help="levels, comma-separated")
    parser.add_argument("--settle", type=float, default=15.0,
                        help="seconds of steady recording before the window (default 15)")
    parser.add_argument("--window", type=float, default=10.0,
                        help="measurement window in seconds (default 10)")
    parser.add_argument("--env", action="append", default=[], metavar="NAME=VALUE",
                        help="a recorder setting for this run (repeatable)")
    parser.add_argument("--baseline-root", type=Path,
                        help="first measure the recorder of this other checkout (e.g. a "
                             "worktree of main) at --baseline-sessions, for the ratios")
    parser.add_argument("--baseline-sessions", default="20,40")
    parser.add_argument("--baseline-env", action="append", default=[], metavar="NAME=VALUE")
    parser.add_argument("--keep", action="store_true", help="keep the work directory")
    args = parser.parse_args()
    levels = [int(x) for x in args.sessions.split(",") if x.strip()]
    base_levels = [int(x) for x in args.baseline_sessions.split(",") if x.strip()]
    for tool in ("chromium", "ffmpeg", "ffprobe"):
        if shutil.which(tool) is None:
            raise SystemExit(f"bench.recorder needs {tool} (apt-get install chromium ffmpeg)")
    extra = {"RECORDER_MAX_SESSIONS": str(max(levels)), **_env_pairs(args.env)}
    base_extra = {"RECORDER_MAX_SESSIONS": str(max(base_levels or [1])),
                  **_env_pairs(args.baseline_env)}

    began = time.monotonic()
    began_utc = dt.datetime.now(dt.UTC)
    load_before = os.getloadavg()
    workdir = Path(tempfile.mkdtemp(prefix="memharbor-bench-recorder-"))
    emulators = Emulators(project_id=PROJECT_ID, bucket=f"{PROJECT_ID}.appspot.com",
                          log_dir=workdir)
    recorder = None
    baseline: tuple[dict, list[dict]] | None = None
    leftovers: list[int] = []
    try:
        emulators.start()
        if args.baseline_root:
            recorder = start_recorder(workdir / "baseline", emulators,
                                      root=args.baseline_root.resolve(), extra_env=base_extra)
            baseline = run_config("baseline", recorder, base_levels, settle=args.settle,
                                  window=args.window, began=began)
            leftovers += shut(recorder)
            recorder = None
        recorder = start_recorder(workdir, emulators, extra_env=extra)
        idle, results = run_config("this", recorder, levels, settle=args.settle,
                                   window=args.window, began=began)
    finally:
        leftovers += shut(recorder)
        emulators.stop()
        if leftovers:
            print(f"killed leftover processes: {leftovers}", file=sys.stderr)
        if args.keep:
            print(f"work directory kept: {workdir}", file=sys.stderr)
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    total = time.monotonic() - began

    info = machine_info()
    command = (f"Command: `.venv/bin/python -m bench.recorder --sessions {args.sessions} "
               f"--settle {args.settle:g} --window {args.window:g}"
               + "".join(f" --env {e}" for e in args.env)
               + (f" --baseline-root <worktree of the baseline> --baseline-sessions "
                  f"{args.baseline_sessions}" if args.baseline_root else "")
               + "".join(f" --baseline-env {e}" for e in args.baseline_env) + "`")
    lines = [
        command,
        "",
        f"Machine: {info['nproc']} cores ({info['cpu']}), {info['mem']} RAM, Python "
        f"{info['python']}, {chromium_version()}; {began_utc:%Y-%m-%d %H:%M} UTC; "
        f"run took {total:.0f} s; load average before {load_before[0]:.2f} / "
        f"{load_before[1]:.2f} / {load_before[2]:.2f} (1 / 5 / 15 min).",
        f"Recorder settings: {', '.join(f'{k}={v}' for k, v in extra.items())}.",
        "",
        *table(idle, results),
        "",
        "PSS: mean of samples every 2 s over the window, summed over the recorder and every "
        "descendant (Playwright driver, Chromium browser, zygotes, renderers, utility "
        "processes). CPU: utime+stime (+ reaped children) of the same tree over the window / "
        f"wall / {NPROC} (the tree's own CPU time, not the machine's). Loss: wall time from "
        "the start's 201 to the stop request minus the decoded duration of the stored WAV (a lower "
        "bound; worst session of the level).",
        "",
        "Targets (issue 13):",
        "",
        *verdicts(results),
    ]
    if baseline is not None:
        base_idle, base_results = baseline
        by_n = {r["n"]: r for r in results}
        lines += ["", "Baseline (the other checkout, same run, settings "
                  f"{', '.join(f'{k}={v}' for k, v in base_extra.items())}):", "",
                  *table(base_idle, base_results), "",
                  "| sessions | PSS this / baseline | CPU this / baseline |", "|---|---|---|"]
        for r in base_results:
            if r["n"] in by_n:
                lines.append(f"| {r['n']} | {by_n[r['n']]['pss_mb'] / r['pss_mb']:.2f} "
                             f"| {by_n[r['n']]['cpu_pct'] / max(r['cpu_pct'], 0.01):.2f} |")
        lines += ["", "Baseline details:", "", *details(base_idle, base_results)]
    lines += ["",
              "USS (private pages only, not shared with anything) and the checks behind the "
              "table; \"other Chromium\" counts Chromium processes outside our tree during the "
              "window (their shared pages lower our PSS; 0 means a clean measurement).", "",
              *details(idle, results)]
    print("\n".join(lines))


if __name__ == "__main__":
    main()
