"""Benchmark the analysis path, one part at a time.

    .venv/bin/python -m bench.analysis --part analyzer [--minutes 10] [--workers 1]
                                       [--cache-dir DIR]

Part `analyzer`: one `python -m analyzer` (the packaged Korean Vosk model) analyses a
speech recording of --minutes (default 10): Korean sentences from espeak-ng with pauses of
0.8-2.4 s between them, 16 kHz mono s16 WAV, made once and cached in DIR (default
/tmp/memharbor-bench-analysis). A loopback server (tests/fakes/analysis_api.py) serves it
and receives the signed webhooks. Measured: wall time from POST /jobs to the `completed`
webhook and per phase (download+measure until progress 30, transcription until 95),
real-time factor (wall / audio length), CPU seconds of the analyzer's process tree (its own
utime+stime plus its reaped ffmpeg children), and memory of that tree sampled every 0.1 s
from /proc: peak RSS (sum over the processes), peak PSS, and the kernel's own peak
(VmHWM) of the analyzer process. Also how speechSec compares with the speech the file
holds. Every process it starts is stopped (by PID, its process group).

    .venv/bin/python -m bench.analysis --part streams [--streams 200] [--rounds 4]
                                       [--health-requests 300] [--repeat 1]

Part `streams`: the bench stack (bench/stack.py: emulators, real Firebase ID tokens) and,
in turn in the same run, four ways to serve `GET /api/analysis/<job>/events`: gunicorn
gthread as it was (2 workers x 8 threads), gthread with 200 threads per worker, and the
uvicorn event server (`python -m config.events`, ASGI, 1 and 2 worker processes) beside
gthread 2 x 8 (--repeat: the sequence again). For each:
--streams queued jobs written to Firestore (the shape analysis.services writes), one SSE
client per job, --rounds rounds of signed progress webhooks then a `completed` one; measured
are the streams held, PSS and threads of each server's process tree idle and with the
streams open, the latency from a webhook's 200 to the event at its client (p50/p99), the
streams the server closed after `completed`, and `GET /api/health/live` p99 to gunicorn
without and with the streams open.

Prints a Markdown block.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import datetime as dt
import json
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import wave
from datetime import datetime
from pathlib import Path

import httpx
from standardwebhooks import Webhook

from bench.stack import machine
from devstack.emulators import _http_ok, free_port, spawn, stop, wait_until
from tests.fakes.analysis_api import FakeAnalysisAPI
from tests.fakes.analysis_server import sign

REPO = Path(__file__).resolve().parents[1]
SENTENCES_KO = (
    "안녕하세요 어머니, 어젯밤에 잘 주무셨어요?",
    "오늘 아침에 시장에 가서 어머니가 좋아하시는 사과를 샀어요.",
    "의사 선생님이 혈압이 괜찮다고 하셨어요.",
    "아침 식사 후에 작은 하얀 약을 꼭 드세요.",
    "이번 주 일요일에 아이들이랑 같이 찾아갈게요.",
    "날씨가 추우니까 밖에 나가실 때 따뜻하게 입으세요.",
    "어제 동생이랑 통화했는데 다들 잘 지낸대요.",
    "점심은 드셨어요? 반찬이 부족하면 말씀하세요.",
)
PAUSES_S = (0.8, 1.6, 2.4, 1.2)
SAMPLE_RATE = 16000
PAGE_KB = os.sysconf("SC_PAGE_SIZE") // 1024
CLK_TCK = os.sysconf("SC_CLK_TCK")


# --- the recording ------------------------------------------------------------------------

def speech_recording(*, minutes: float, cache_dir: Path) -> tuple[Path, float]:
    """(the cached WAV of `minutes`, seconds of speech in it), made if missing."""
    path = cache_dir / f"korean-speech-{minutes:g}min.wav"
    meta = path.with_suffix(".json")
    if path.exists() and meta.exists():
        return path, json.loads(meta.read_text())["speech_s"]
    if shutil.which("espeak-ng") is None:
        sys.exit("bench.analysis needs espeak-ng (Debian package espeak-ng)")
    cache_dir.mkdir(parents=True, exist_ok=True)
    utterances = []
    with tempfile.TemporaryDirectory(dir=cache_dir) as tmp:
        for i, sentence in enumerate(SENTENCES_KO):
            raw, pcm = Path(tmp) / f"{i}.wav", Path(tmp) / f"{i}.pcm"
            subprocess.run(["espeak-ng", "-v", "ko", "-s", str(150 + 10 * (i % 3)),
                            "-w", str(raw), sentence], check=True)
            subprocess.run(["ffmpeg", "-nostdin", "-loglevel", "error", "-i", str(raw),
                            "-ac", "1", "-ar", str(SAMPLE_RATE), "-f", "s16le", "-y",
                            str(pcm)], check=True)
            utterances.append(pcm.read_bytes())
    total_frames = int(minutes * 60 * SAMPLE_RATE)
    written = speech_frames = i = 0
    partial = path.with_suffix(".part")
    with wave.open(str(partial), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(SAMPLE_RATE)
        while written < total_frames:
            pcm = utterances[i % len(utterances)]
            pause = b"\0\0" * int(PAUSES_S[i % len(PAUSES_S)] * SAMPLE_RATE)
            for piece, is_speech in ((pcm, True), (pause, False)):
                piece = piece[: (total_frames - written) * 2]
                out.writeframes(piece)
                written += len(piece) // 2
                speech_frames += len(piece) // 2 if is_speech else 0
            i += 1
    os.replace(partial, path)
    speech_s = speech_frames / SAMPLE_RATE
    meta.write_text(json.dumps({"speech_s": speech_s, "utterances": i}))
    return path, speech_s


# --- /proc --------------------------------------------------------------------------------

def _tree(root: int) -> list[int]:
    parents: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            ppid = int(stat[stat.rindex(")") + 2:].split()[1])
            parents.setdefault(ppid, []).append(int(entry))
    found, i = [root], 0
    while i < len(found):
        found += parents.get(found[i], [])
        i += 1
    return found


def _memory_kb(pid: int) -> tuple[int, int]:
    """(RSS, PSS) of one process in kB; (0, 0) once it is gone."""
    try:
        rss = int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * PAGE_KB
        pss = next(int(line.split()[1]) for line in
                   Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines()
                   if line.startswith("Pss:"))
    except (OSError, StopIteration, ValueError):
        return 0, 0
    return rss, pss


def _cpu_s(pid: int) -> float:
    """utime + stime + cutime + cstime of `pid` (its reaped children included)."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat[stat.rindex(")") + 2:].split()
    return sum(int(v) for v in fields[11:15]) / CLK_TCK


def _hwm_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    return 0


class TreeSampler(threading.Thread):
    """Peak RSS and PSS of a process tree, sampled every `period` seconds."""

    def __init__(self, root: int, period: float = 0.1) -> None:
        super().__init__(daemon=True)
        self.root, self.period = root, period
        self.peak_rss_kb = self.peak_pss_kb = self.samples = 0
        self._halt = threading.Event()

    def run(self) -> None:
        while not self._halt.is_set():
            rss = pss = 0
            for pid in _tree(self.root):
                r, p = _memory_kb(pid)
                rss, pss = rss + r, pss + p
            self.peak_rss_kb = max(self.peak_rss_kb, rss)
            self.peak_pss_kb = max(self.peak_pss_kb, pss)
            self.samples += 1
            self._halt.wait(self.period)

    def finish(self) -> None:
        self._halt.set()
        self.join()


# --- part: analyzer -----------------------------------------------------------------------

def part_analyzer(args: argparse.Namespace) -> str:
    wav, speech_s = speech_recording(minutes=args.minutes, cache_dir=args.cache_dir)
    audio_s = (wav.stat().st_size - 44) / (2 * SAMPLE_RATE)
    secret = "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()
    fake = FakeAnalysisAPI(secret=secret).start()
    workdir = Path(tempfile.mkdtemp(prefix="memharbor-bench-analysis-"))
    port = free_port()
    env = {**os.environ, "ANALYZER_HOST": "127.0.0.1", "ANALYZER_PORT": str(port),
           "ANALYSIS_WEBHOOK_SECRET": secret, "ANALYZER_WORK_DIR": str(workdir),
           "ANALYZER_WORKERS": str(args.workers), "PYTHONPATH": str(REPO)}
    env.pop("ANALYZER_VOSK_MODEL", None)
    log = workdir / "analyzer.log"
    proc = None
    try:
        started = time.monotonic()
        proc = spawn([sys.executable, "-m", "analyzer"], log_path=log, env=env)
        base = f"http://127.0.0.1:{port}"
        wait_until(lambda: _http_ok(f"{base}/health"), timeout=120, what="analyzer",
                   proc=proc, log_path=log)
        ready_s = time.monotonic() - started
        idle_rss_kb = sum(_memory_kb(pid)[0] for pid in _tree(proc.pid))
        cpu_before = _cpu_s(proc.pid)
        print(f"analyzer ready in {ready_s:.1f} s, {idle_rss_kb / 1024:.0f} MB RSS; "
              f"analysing {audio_s / 60:.1f} min ...", file=sys.stderr, flush=True)

        sampler = TreeSampler(proc.pid)
        sampler.start()
        body = json.dumps({"job_id": "bench-1", "audio_url": fake.add_audio("bench.wav", wav),
                           "callback_url": fake.callback_url("bench-1"),
                           "duration_ms": round(audio_s * 1000), "spec": None,
                           "language": "ko"})
        at, msg_id = datetime.now(dt.UTC), f"msg_{secrets.token_hex(8)}"
        began = time.monotonic()
        answer = httpx.post(f"{base}/jobs", content=body.encode(), headers={
            "content-type": "application/json", "webhook-id": msg_id,
            "webhook-timestamp": str(int(at.timestamp())),
            "webhook-signature": Webhook(secret).sign(msg_id, at, body)})
        answer.raise_for_status()
        arrived: dict[int, float] = {}

        def watch() -> None:  # when each progress value arrived
            while "done" not in arrived:
                for d in fake.deliveries("bench-1"):
                    if d.body and d.body["progress"] not in arrived:
                        arrived[d.body["progress"]] = time.monotonic() - began
                time.sleep(0.05)

        watcher = threading.Thread(target=watch, daemon=True)
        watcher.start()
        bodies = fake.terminal("bench-1", timeout=args.minutes * 60 * 3 + 120)
        wall_s = time.monotonic() - began
        arrived["done"] = wall_s
        watcher.join()
        sampler.finish()
        cpu_s = _cpu_s(proc.pid) - cpu_before
        hwm_kb = _hwm_kb(proc.pid)
    finally:
        stop(proc, grace=30)
        fake.stop()
        shutil.rmtree(workdir, ignore_errors=True)

    done = bodies[-1]
    if done["type"] != "completed":
        sys.exit(f"the job did not complete: {done}")
    metrics, transcript = done["result"]["metrics"], done["result"]["transcript"]
    words = sum(len(s["words"]) for s in transcript["segments"])
    measured_s = arrived.get(30, float("nan"))
    transcribed_s = arrived.get(95, wall_s) - measured_s
    lines = [
        f"### Analyzer: {audio_s / 60:.0f} min of Korean speech "
        f"({dt.date.today().isoformat()}, `python -m bench.analysis --part analyzer "
        f"--minutes {args.minutes:g} --workers {args.workers}`)",
        "",
        f"Machine: {machine()}. Model: {done['result']['transcriber']} (vosk "
        f"{_version('vosk')}), {args.workers} worker(s).",
        "",
        "| measure | value |",
        "|---|---|",
        f"| audio | {audio_s:.0f} s, 16 kHz mono s16 WAV, {wav.stat().st_size / 1e6:.1f} MB |",
        f"| start-up (model load) to /health | {ready_s:.1f} s |",
        f"| wall, POST /jobs to `completed` | {wall_s:.1f} s |",
        f"| real-time factor (wall / audio) | {wall_s / audio_s:.3f} |",
        f"| download + ffmpeg metrics (to progress 30) | {measured_s:.1f} s |",
        f"| Vosk transcription (30 to 95) | {transcribed_s:.1f} s "
        f"(RTF {transcribed_s / audio_s:.3f}) |",
        f"| CPU of the tree during the job | {cpu_s:.1f} s ({cpu_s / wall_s * 100:.0f} % of "
        f"one core) |",
        f"| RSS idle (model loaded) | {idle_rss_kb / 1024:.0f} MB |",
        f"| peak RSS of the tree (sampled every 0.1 s, {sampler.samples} samples) | "
        f"{sampler.peak_rss_kb / 1024:.0f} MB |",
        f"| peak PSS of the tree | {sampler.peak_pss_kb / 1024:.0f} MB |",
        f"| VmHWM of the analyzer process | {hwm_kb / 1024:.0f} MB |",
        f"| speechSec / speech in the file | {metrics['speechSec']:.1f} s / {speech_s:.1f} s "
        f"({(metrics['speechSec'] / speech_s - 1) * 100:+.1f} %) |",
        f"| transcript | {len(transcript['segments'])} segments, {words} words, "
        f"{len(bodies)} webhooks |",
    ]
    return "\n".join(lines)


def _version(package: str) -> str:
    from importlib.metadata import version

    return version(package)


# --- part: streams ------------------------------------------------------------------------

# (label, what serves the streams, gunicorn's environment). All three in one run, in turn.
GTHREAD_2X8 = {"GUNICORN_WORKERS": "2", "GUNICORN_THREADS": "8"}
STREAM_SETUPS = (
    ("gthread 2 x 8 (as it was)", "gunicorn", GTHREAD_2X8),
    ("gthread 2 x 200", "gunicorn", {"GUNICORN_WORKERS": "2", "GUNICORN_THREADS": "200"}),
    ("uvicorn event server, 1 worker (ASGI) + gthread 2 x 8", "events",
     {**GTHREAD_2X8, "EVENTS_WORKERS": "1"}),
    ("uvicorn event server, 2 workers (ASGI) + gthread 2 x 8", "events",
     {**GTHREAD_2X8, "EVENTS_WORKERS": "2"}),
)
STREAM_UID = "bench-carer"


def _threads(root: int) -> int:
    total = 0
    for pid in _tree(root):
        try:
            total += next(int(line.split()[1]) for line in
                          Path(f"/proc/{pid}/status").read_text().splitlines()
                          if line.startswith("Threads:"))
        except (OSError, StopIteration):
            pass
    return total


def _pss_mb(root: int) -> float:
    return sum(_memory_kb(pid)[1] for pid in _tree(root)) / 1024


def _tree_cpu_s(root: int) -> float:
    total = 0.0
    for pid in _tree(root):
        try:
            total += _cpu_s(pid)
        except (OSError, ValueError):
            pass
    return total


def _quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


def _write_jobs(db, prefix: str, count: int) -> list[str]:
    """`count` queued jobs shaped as analysis.services.analysis_create writes them."""
    now = datetime.now(dt.UTC)
    ids = [f"{prefix}-{i:03d}" for i in range(count)]
    for start in range(0, count, 100):
        batch = db.batch()
        for job_id in ids[start:start + 100]:
            batch.set(db.collection("analysisJobs").document(job_id), {
                "jobId": job_id, "generation": 0, "recordingId": f"rec-{job_id}",
                "callId": None, "participants": [STREAM_UID, "bench-elder"],
                "status": "queued", "progress": 0, "seq": 1, "message": "Queued (bench).",
                "attempts": 0, "nextAttemptAt": now, "engine": None, "result": None,
                "error": None, "createdAt": now, "updatedAt": now, "completedAt": None,
                "requestedBy": STREAM_UID, "language": "ko"})
        batch.commit()
    return ids


async def _health(client, base: str, count: int, timeout: float) -> tuple[list[float], int]:
    """(latencies in ms, failures) of `count` sequential GET /api/health/live; gives up
    after 5 failures in a row (a starved server)."""
    latencies, failures, in_a_row = [], 0, 0
    for _ in range(count):
        began = time.perf_counter()
        try:
            answer = await client.get(f"{base}/api/health/live", timeout=timeout)
            ok = answer.status_code == 200
        except httpx.HTTPError:
            ok = False
        if ok:
            latencies.append((time.perf_counter() - began) * 1000)
            in_a_row = 0
        else:
            failures += 1
            in_a_row += 1
            if in_a_row >= 5:
                break
    return latencies, failures


class _Listener:
    """One SSE client: when its stream started and when each event id arrived."""

    def __init__(self, job_id: str) -> None:
        self.job_id = job_id
        self.opened: float | None = None
        self.arrived: dict[int, float] = {}
        self.closed_by_server = False

    async def run(self, client, url: str, headers: dict) -> None:
        try:
            async with client.stream("GET", url, headers=headers) as response:
                event_id = None
                async for line in response.aiter_lines():
                    if self.opened is None:
                        self.opened = time.monotonic()
                    if line.startswith("id:"):
                        event_id = int(line[3:])
                    elif line == "" and event_id is not None:
                        self.arrived.setdefault(event_id, time.monotonic())
                        event_id = None
                self.closed_by_server = True
        except (httpx.HTTPError, asyncio.CancelledError):
            pass

    def arrival(self, seq: int) -> float | None:
        later = [at for got, at in self.arrived.items() if got >= seq]
        return min(later) if later else None


async def _webhook_round(client, base: str, secret: str, jobs: list[str], body: dict,
                         concurrency: int, timeout: float) -> dict[str, tuple[float, int]]:
    """Signed webhooks for every job: {job: (when its 200 arrived, the job's new seq)}.
    Stops early when the server answers none of the first `concurrency` (starved)."""
    done: dict[str, tuple[float, int]] = {}
    failures = 0
    gate = asyncio.Semaphore(concurrency)

    async def one(job_id: str) -> None:
        nonlocal failures
        async with gate:
            if failures >= concurrency and not done:
                return
            raw = json.dumps(body)
            try:
                answer = await client.post(
                    f"{base}/api/webhooks/analysis", params={"job_id": job_id},
                    content=raw.encode(), headers=sign(raw, [secret]), timeout=timeout)
            except httpx.HTTPError:
                failures += 1
                return
            if answer.status_code == 200:
                done[job_id] = (time.monotonic(), int(answer.json()["seq"]))
            else:
                failures += 1

    await asyncio.gather(*(one(job_id) for job_id in jobs))
    return done


async def _measure_setup(*, label: str, api_base: str, stream_base: str, roots: dict,
                         db, secret: str, token: str, streams: int, rounds: int,
                         health_n: int, prefix: str) -> dict:
    jobs = _write_jobs(db, prefix, streams)
    headers = {"Authorization": f"Bearer {token}"}
    row: dict = {"label": label, "load": os.getloadavg()[0]}
    async with httpx.AsyncClient(limits=httpx.Limits(max_connections=64)) as http:
        for _ in range(20):  # warm: every worker's Firestore channel, the token cache
            await http.get(f"{api_base}/api/analysis/{jobs[0]}", headers=headers, timeout=10)
        row["idle"] = {name: (_pss_mb(pid), _threads(pid)) for name, pid in roots.items()}
        row["health_base"], row["health_base_fail"] = await _health(http, api_base, health_n,
                                                                    timeout=2)
        listeners = [_Listener(job_id) for job_id in jobs]
        sse = httpx.AsyncClient(limits=httpx.Limits(max_connections=streams + 10),
                                timeout=httpx.Timeout(10, read=None))
        began = time.monotonic()
        tasks = [asyncio.create_task(listener.run(
            sse, f"{stream_base}/api/analysis/{listener.job_id}/events", headers))
            for listener in listeners]
        deadline = began + 20
        while time.monotonic() < deadline and not all(1 in lst.arrived for lst in listeners):
            await asyncio.sleep(0.1)
        row["opened"] = sum(1 in lst.arrived for lst in listeners)
        row["open_s"] = time.monotonic() - began
        await asyncio.sleep(3)  # settle: every stream is polling
        row["open"] = {name: (_pss_mb(pid), _threads(pid)) for name, pid in roots.items()}
        cpu_before, window_began = sum(_tree_cpu_s(pid) for pid in roots.values()), time.monotonic()
        await asyncio.sleep(5)  # what keeping the streams open costs, nothing else happening
        row["idle_cpu"] = ((sum(_tree_cpu_s(pid) for pid in roots.values()) - cpu_before)
                           / (time.monotonic() - window_began))
        row["health_open"], row["health_open_fail"] = await _health(http, api_base, health_n,
                                                                    timeout=2)
        latencies: list[float] = []
        delivered = sent = answered = 0
        for r in range(1, rounds + 2):
            final = r == rounds + 1
            body = ({"type": "completed", "progress": 100, "result": {"summary": "bench"}}
                    if final else {"type": "progress", "progress": 100 * r // (rounds + 1),
                                   "message": f"round {r}"})
            answers = await _webhook_round(http, api_base, secret, jobs, body,
                                           concurrency=16, timeout=3)
            sent += len(jobs)
            answered += len(answers)
            if not answers:
                break
            by_job = {lst.job_id: lst for lst in listeners}
            wait_until_s = time.monotonic() + 10
            while time.monotonic() < wait_until_s and not all(
                    by_job[j].arrival(seq) is not None for j, (_, seq) in answers.items()):
                await asyncio.sleep(0.05)
            for job_id, (at, seq) in answers.items():
                got = by_job[job_id].arrival(seq)
                if got is not None:
                    delivered += 1
                    latencies.append((got - at) * 1000)
        wait_until_s = time.monotonic() + 10
        while time.monotonic() < wait_until_s and not all(t.done() for t in tasks):
            await asyncio.sleep(0.1)
        row["closed_by_server"] = sum(lst.closed_by_server for lst in listeners)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await sse.aclose()
    row.update(latencies=latencies, sent=sent, answered=answered, delivered=delivered)
    return row


def _ms(values: list[float], q: float) -> str:
    return f"{_quantile(values, q):.0f}" if values else "–"


def part_streams(args: argparse.Namespace) -> str:
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import firestore

    from bench.stack import PROJECT_ID, bench_stack

    secret = "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()
    rows = []
    with bench_stack(ANALYSIS_WEBHOOK_SECRET=secret,
                     GUNICORN_WORKERS="2", GUNICORN_THREADS="8") as stack:
        os.environ["FIRESTORE_EMULATOR_HOST"] = stack.env["FIRESTORE_EMULATOR_HOST"]
        db = firestore.Client(project=PROJECT_ID, credentials=AnonymousCredentials())
        token = stack.securetoken.mint(STREAM_UID)
        setups = [setup for _ in range(args.repeat) for setup in STREAM_SETUPS]
        for n, (label, served_by, gunicorn_env) in enumerate(setups):
            procs, roots = [], {}
            try:
                gport = free_port()
                env = {**stack.env, **gunicorn_env, "GUNICORN_BIND": f"127.0.0.1:{gport}"}
                gunicorn = spawn([sys.executable, "-m", "gunicorn", "-c",
                                  "config/gunicorn.conf.py", "config.wsgi:application"],
                                 log_path=stack.workdir / f"gunicorn-{n}.log", env=env)
                procs.append(gunicorn)
                api_base = stream_base = f"http://127.0.0.1:{gport}"
                wait_until(lambda url=f"{api_base}/api/health": _http_ok(url), timeout=60,
                           what="gunicorn", proc=gunicorn)
                roots["gunicorn"] = gunicorn.pid
                if served_by == "events":
                    eport = free_port()
                    events = spawn([sys.executable, "-m", "config.events"],
                                   log_path=stack.workdir / f"events-{n}.log",
                                   env={**env, "EVENTS_BIND": f"127.0.0.1:{eport}"})
                    procs.append(events)
                    stream_base = f"http://127.0.0.1:{eport}"
                    wait_until(lambda url=f"{stream_base}/api/health": _http_ok(url),
                               timeout=60,
                               what="the event server", proc=events)
                    roots["events"] = events.pid
                print(f"measuring {label} ...", file=sys.stderr, flush=True)
                rows.append(asyncio.run(_measure_setup(
                    label=label, api_base=api_base, stream_base=stream_base, roots=roots,
                    db=db, secret=secret, token=token, streams=args.streams,
                    rounds=args.rounds, health_n=args.health_requests, prefix=f"s{n}")))
            finally:
                for proc in reversed(procs):
                    stop(proc, grace=5)
    return _streams_report(rows, args)


def _streams_report(rows: list[dict], args: argparse.Namespace) -> str:
    def memory(snapshot: dict) -> str:
        return " + ".join(f"{name} {mb:.0f} MB / {threads} thr"
                          for name, (mb, threads) in snapshot.items())

    lines = [
        f"### {args.streams} event streams ({dt.date.today().isoformat()}, `python -m "
        f"bench.analysis --part streams --streams {args.streams} --rounds {args.rounds} "
        f"--health-requests {args.health_requests} --repeat {args.repeat}`)",
        "",
        f"Machine: {machine()}. Firestore emulator; gunicorn {_version('gunicorn')}, "
        f"uvicorn {_version('uvicorn')}; ANALYSIS_STREAM_POLL_SECONDS 1 (default). Each setup "
        f"in turn in the same run: {args.streams} jobs, one SSE client each (httpx, one "
        f"asyncio loop), {args.rounds} progress rounds + 1 `completed` round of signed "
        "webhooks to gunicorn (16 at a time); latency = event at the client minus the "
        "webhook's 200; health = sequential `GET /api/health/live` to gunicorn "
        f"({args.health_requests}, 2 s timeout, given up after 5 failures in a row). "
        "Memory: PSS of each process tree, threads of each tree; CPU: of the servers' trees "
        "over 5 s with the streams open and nothing else happening; load avg: the machine's "
        "1-minute load when the setup began (other work shares this machine).",
        "",
        "| setup | load avg | streams held (of "
        f"{args.streams}) | memory idle | memory with the streams | CPU with the streams "
        "open, idle | change→event p50 / p99 (ms) | events delivered / webhooks answered / "
        "sent | closed after `completed` | health p99 without / with (ms) | ratio |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        base, with_streams = row["health_base"], row["health_open"]
        fail = (f" ({row['health_open_fail']} failed)" if row["health_open_fail"] else "")
        ratio = (f"{_quantile(with_streams, 0.99) / _quantile(base, 0.99):.2f}x"
                 if with_streams and base and not row["health_open_fail"] else "starved")
        lines.append(
            f"| {row['label']} | {row['load']:.1f} | {row['opened']} in {row['open_s']:.1f} s | "
            f"{memory(row['idle'])} | {memory(row['open'])} | "
            f"{row['idle_cpu'] * 100:.0f} % of a core | "
            f"{_ms(row['latencies'], 0.5)} / {_ms(row['latencies'], 0.99)} | "
            f"{row['delivered']} / {row['answered']} / {row['sent']} | "
            f"{row['closed_by_server']} | {_ms(base, 0.99)} / {_ms(with_streams, 0.99)}{fail} "
            f"| {ratio} |")
    return "\n".join(lines)


PARTS = {"analyzer": part_analyzer, "streams": part_streams}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--part", choices=sorted(PARTS), required=True)
    parser.add_argument("--minutes", type=float, default=10.0,
                        help="length of the recording (analyzer; default 10)")
    parser.add_argument("--workers", type=int, default=1, help="ANALYZER_WORKERS (analyzer)")
    parser.add_argument("--streams", type=int, default=200,
                        help="concurrent event streams, one job each (streams; default 200)")
    parser.add_argument("--rounds", type=int, default=4,
                        help="progress webhook rounds before the completed one (streams)")
    parser.add_argument("--health-requests", type=int, default=300,
                        help="GET /api/health/live per measurement (streams)")
    parser.add_argument("--repeat", type=int, default=1,
                        help="run the setups' sequence this many times (streams)")
    parser.add_argument("--cache-dir", type=Path,
                        default=Path(tempfile.gettempdir()) / "memharbor-bench-analysis")
    args = parser.parse_args()
    print(PARTS[args.part](args))


if __name__ == "__main__":
    main()
