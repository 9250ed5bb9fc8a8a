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

Prints a Markdown block. Other parts (`streams`) plug into PARTS.
"""

from __future__ import annotations

import argparse
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


PARTS = {"analyzer": part_analyzer}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--part", choices=sorted(PARTS), required=True)
    parser.add_argument("--minutes", type=float, default=10.0,
                        help="length of the recording (analyzer; default 10)")
    parser.add_argument("--workers", type=int, default=1, help="ANALYZER_WORKERS (analyzer)")
    parser.add_argument("--cache-dir", type=Path,
                        default=Path(tempfile.gettempdir()) / "memharbor-bench-analysis")
    args = parser.parse_args()
    print(PARTS[args.part](args))


if __name__ == "__main__":
    main()
