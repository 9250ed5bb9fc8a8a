"""Benchmark recording uploads: N concurrent multipart uploads of distinct audio files to
`POST /api/recordings/upload` through gunicorn (streamed to disk, probed, converted to
WAV, put in Storage), with the gunicorn workers' memory sampled from /proc, for small
files (the baseline) and large files in the same run. Target: memory flat in file size.

    .venv/bin/python -m bench.uploads [--size-mb 50] [--baseline-mb 5] [--concurrency 10]
                                      [--runs 2] [--cache-dir /tmp/memharbor-bench-uploads]

The audio files (44.1 kHz stereo 16-bit WAV tones, a different frequency per file) are
made once with ffmpeg and kept in the cache directory. Every upload is for a call of its
own, so cached files never count as duplicates. Prints a table and a Markdown block for
BENCHMARKS.md. Stops everything it started and removes everything it made but the cache.
"""

from __future__ import annotations

import argparse
import datetime as dt
import io
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from bench.stack import bench_stack, machine

RATE, CHANNELS, SAMPLE_BYTES = 44100, 2, 2
WAV_HEADER = 44
MIB = 1024 * 1024
SAMPLE_EVERY_S = 0.05
UPLOAD_TIMEOUT = httpx.Timeout(connect=10, read=600, write=600, pool=10)


# --- the audio files ---------------------------------------------------------------------

def audio_files(cache: Path, *, size_mb: int, count: int) -> list[Path]:
    """`count` WAVs of about `size_mb` MiB each, distinct bytes, made once and cached."""
    cache.mkdir(parents=True, exist_ok=True)
    frames = (size_mb * MIB - WAV_HEADER) // (CHANNELS * SAMPLE_BYTES)
    files = []
    for i in range(count):
        path = cache / f"tone-{size_mb}mb-{i:02d}.wav"
        want = WAV_HEADER + frames * CHANNELS * SAMPLE_BYTES
        if not (path.exists() and path.stat().st_size == want):
            making = path.with_name(f".{path.name}.{os.getpid()}")
            hz = 200 + 37 * i + size_mb  # distinct per file and per size
            subprocess.run(
                ["ffmpeg", "-nostdin", "-hide_banner", "-loglevel", "error",
                 "-f", "lavfi", "-i", f"sine=frequency={hz}:sample_rate={RATE}",
                 "-af", f"atrim=end_sample={frames}", "-ac", str(CHANNELS),
                 "-c:a", "pcm_s16le", "-map_metadata", "-1", "-fflags", "+bitexact",
                 "-flags:a", "+bitexact", "-f", "wav", "-y", str(making)],
                check=True, timeout=300)
            if making.stat().st_size != want:
                making.unlink()
                raise SystemExit(f"ffmpeg made {making.name} of an unexpected size")
            making.replace(path)
        files.append(path)
    return files


# --- memory of the gunicorn workers and their children, from /proc -----------------------

def _status_kb(pid: int) -> dict[str, int]:
    values = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(("VmRSS:", "VmHWM:")):
            values[line.split(":")[0]] = int(line.split()[1])
    return values


def _pss_kb(pid: int) -> int | None:
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                return int(line.split()[1])
    except OSError:
        pass
    return None


def _process_tree() -> dict[int, list[int]]:
    """Parent pid -> child pids, for every process visible in /proc."""
    children: dict[int, list[int]] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry.name}/stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry.name))
    return children


def _descendants(tree: dict[int, list[int]], pid: int) -> list[int]:
    found, todo = [], list(tree.get(pid, []))
    while todo:
        child = todo.pop()
        found.append(child)
        todo.extend(tree.get(child, []))
    return found


def cpu_seconds(pid: int, *, children: bool = False) -> float:
    """User + system CPU of `pid` (with `children`: of its exited, reaped children)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    first = 13 if children else 11  # cutime, cstime / utime, stime (after the comm)
    return (int(fields[first]) + int(fields[first + 1])) / os.sysconf("SC_CLK_TCK")


def cpu_split(stack) -> dict[str, float]:
    """CPU seconds so far, per part: the workers, what they ran (ffprobe, ffmpeg),
    the Storage and Firestore emulators, and this client."""
    workers = gunicorn_workers(stack.gunicorn.pid)
    parts = {"workers": sum(cpu_seconds(w) for w in workers),
             "ffmpeg": sum(cpu_seconds(w, children=True) for w in workers),
             "storage": 0.0, "firestore": 0.0, "client": cpu_seconds(os.getpid())}
    for proc in stack.emulators.procs:
        name = "firestore" if "java" in str(proc.args[0]) else "storage"
        parts[name] += cpu_seconds(proc.pid)
    return parts


def gunicorn_workers(master: int) -> list[int]:
    return sorted(_process_tree().get(master, []))


def reset_peak_rss(pids: list[int]) -> None:
    """Reset each process's VmHWM to its current RSS (Linux: write 5 to clear_refs)."""
    for pid in pids:
        try:
            Path(f"/proc/{pid}/clear_refs").write_text("5")
        except OSError:
            pass


@dataclass
class MemoryPeaks:
    samples: int = 0
    workers_rss: int = 0  # KiB, the workers' RSS summed, the highest sample
    workers_pss: int = 0
    worker_rss: int = 0  # KiB, the largest single worker, the highest sample
    children_rss: int = 0  # KiB, the workers' descendants (ffprobe, ffmpeg) summed
    children_pss: int = 0
    total_pss: int = 0  # workers + children, the same sample
    most_children: int = 0
    first: dict = field(default_factory=dict)  # the first sample: memory at the start


class MemorySampler:
    """Samples the workers of the gunicorn `master` and their children every 50 ms."""

    def __init__(self, master: int) -> None:
        self.master = master
        self.peaks = MemoryPeaks()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> MemorySampler:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def sample(self) -> dict | None:
        tree = _process_tree()
        workers = tree.get(self.master, [])
        rss, pss, largest, kids_rss, kids_pss, kids = 0, 0, 0, 0, 0, 0
        try:
            for worker in workers:
                worker_rss = _status_kb(worker).get("VmRSS", 0)
                rss += worker_rss
                pss += _pss_kb(worker) or worker_rss
                largest = max(largest, worker_rss)
                for child in _descendants(tree, worker):
                    try:
                        child_rss = _status_kb(child).get("VmRSS", 0)
                    except OSError:
                        continue  # it exited between the scan and now
                    kids_rss += child_rss
                    kids_pss += _pss_kb(child) or child_rss
                    kids += 1
        except OSError:
            return None  # a worker went away (recycled); the next sample sees the new one
        return {"workers": len(workers), "workers_rss": rss, "workers_pss": pss,
                "worker_rss": largest, "children_rss": kids_rss, "children_pss": kids_pss,
                "children": kids}

    def _run(self) -> None:
        p = self.peaks
        while not self._stop.is_set():
            s = self.sample()
            if s is not None:
                if not p.first:
                    p.first = s
                p.samples += 1
                p.workers_rss = max(p.workers_rss, s["workers_rss"])
                p.workers_pss = max(p.workers_pss, s["workers_pss"])
                p.worker_rss = max(p.worker_rss, s["worker_rss"])
                p.children_rss = max(p.children_rss, s["children_rss"])
                p.children_pss = max(p.children_pss, s["children_pss"])
                p.total_pss = max(p.total_pss, s["workers_pss"] + s["children_pss"])
                p.most_children = max(p.most_children, s["children"])
            self._stop.wait(SAMPLE_EVERY_S)


# --- the uploads -------------------------------------------------------------------------

class TimedFile(io.FileIO):
    """A file that notes when the client read its last byte (the body is sent then)."""

    eof_at: float | None = None

    def read(self, size: int = -1) -> bytes:
        chunk = super().read(size)
        if not chunk and self.eof_at is None:
            self.eof_at = time.perf_counter()
        return chunk


def new_call(stack, http: httpx.Client, caller: str, receiver: str) -> str:
    response = http.post("/api/call/invite", json={
        "group_id": "bench", "caller_id": caller, "receiver_id": receiver},
        headers={"Authorization": f"Bearer {stack.securetoken.mint(caller)}"})
    response.raise_for_status()
    return response.json()["callId"]


def prepare_uploads(stack, files: list[Path], *, tag: str) -> list[tuple[Path, str, str]]:
    """A call of its own for each file: (file, call id, the caller's ID token)."""
    jobs = []
    with httpx.Client(base_url=stack.base, timeout=30) as http:
        for i, path in enumerate(files):
            caller = f"{tag}c{i}"
            call_id = new_call(stack, http, caller, f"{tag}r{i}")
            jobs.append((path, call_id, stack.securetoken.mint(caller)))
    return jobs


def upload_batch(stack, jobs: list[tuple[Path, str, str]]) -> dict:
    """Upload every file at once, from one thread (and connection) per file."""
    start = threading.Barrier(len(jobs) + 1)
    results: list[dict] = [{} for _ in jobs]

    def one(i: int) -> None:
        path, call_id, token = jobs[i]
        with httpx.Client(base_url=stack.base, timeout=UPLOAD_TIMEOUT) as http, \
                TimedFile(path, "rb") as body:
            start.wait()
            began = time.perf_counter()
            try:
                response = http.post(
                    "/api/recordings/upload",
                    headers={"Authorization": f"Bearer {token}"},
                    files={"recording": (path.name, body, "audio/wav")},
                    data={"call_id": call_id, "original_filename": path.name,
                          "duration": str(round((path.stat().st_size - WAV_HEADER)
                                                / (RATE * CHANNELS * SAMPLE_BYTES)))})
                status, text = response.status_code, response.text
            except httpx.HTTPError as exc:
                status, text = None, f"{type(exc).__name__}: {exc}"
            ended = time.perf_counter()
        results[i] = {"status": status, "body": text, "bytes": path.stat().st_size,
                      "began": began, "ended": ended, "seconds": ended - began,
                      "sent_s": (body.eof_at - began) if body.eof_at else None}

    with ThreadPoolExecutor(max_workers=len(jobs)) as pool:
        running = [pool.submit(one, i) for i in range(len(jobs))]
        start.wait()
        for future in running:
            future.result()
    began = min(r["began"] for r in results)
    wall = max(r["ended"] for r in results) - began
    total = sum(r["bytes"] for r in results)
    seconds = [r["seconds"] for r in results]
    sent = [r["sent_s"] for r in results if r["sent_s"] is not None]
    return {"uploads": len(results), "bytes": total, "wall": wall, "mb_s": total / MIB / wall,
            "p50": statistics.median(seconds), "max": max(seconds),
            "sent_p50": statistics.median(sent) if sent else float("nan"),
            "created": sum(r["status"] == 201 for r in results),
            "failures": [r for r in results if r["status"] != 201]}


def measured_batch(stack, files: list[Path], *, tag: str) -> dict:
    workers = gunicorn_workers(stack.gunicorn.pid)
    jobs = prepare_uploads(stack, files, tag=tag)
    reset_peak_rss(workers)
    cpu_before = cpu_split(stack)
    with MemorySampler(stack.gunicorn.pid) as sampler:
        batch = upload_batch(stack, jobs)
    cpu = {k: v - cpu_before[k] for k, v in cpu_split(stack).items()}
    hwm = []
    for worker in gunicorn_workers(stack.gunicorn.pid):
        try:
            hwm.append(_status_kb(worker)["VmHWM"])
        except (OSError, KeyError):
            pass
    return {**batch, "memory": sampler.peaks, "hwm": hwm, "cpu": cpu,
            "file_mb": files[0].stat().st_size / MIB}


def idle_memory(stack, seconds: float = 1.0) -> dict:
    with MemorySampler(stack.gunicorn.pid) as sampler:
        time.sleep(seconds)
    return sampler.peaks.first or sampler.sample() or {}


def left_on_disk(recordings: Path) -> int:
    return sum(1 for p in recordings.rglob("*") if p.is_file())


def gunicorn_log_tail(stack, lines: int = 60) -> str:
    try:
        return "\n".join(stack.gunicorn_log.read_text(errors="replace").splitlines()[-lines:])
    except OSError as exc:
        return f"(no gunicorn log: {exc})"


# --- the report --------------------------------------------------------------------------

def _mb(kib: int) -> str:
    return f"{kib / 1024:.0f}"


def markdown(args, env: dict, idle: dict, batches: list[dict], ratios: list[dict]) -> str:
    command = ".venv/bin/python -m bench.uploads"
    extra = [f"--{k.replace('_', '-')} {v}" for k, v in
             (("size_mb", args.size_mb), ("baseline_mb", args.baseline_mb),
              ("concurrency", args.concurrency), ("runs", args.runs))
             if v != DEFAULTS[k]]
    lines = [
        f"**Command:** `{' '.join([command, *extra])}`",
        "",
        f"**Run {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC**, {machine()}; "
        f"gunicorn {env['GUNICORN_WORKERS']} workers x {env['GUNICORN_THREADS']} threads; "
        f"Firestore emulator and fake-gcs-server (memory backend) on the same machine.",
        "",
        f"Idle workers before the first batch (after a 2-upload warm-up): RSS "
        f"{_mb(idle['workers_rss'])} MB summed over {idle['workers']} workers "
        f"(PSS {_mb(idle['workers_pss'])} MB).",
        "",
        "| batch | uploads | MB each | MB sent | wall s | MB/s | latency p50 / max s "
        "| body sent p50 s | 201s |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for b in batches:
        lines.append(
            f"| {b['label']} | {b['uploads']} | {b['file_mb']:.1f} | {b['bytes'] / MIB:.0f} "
            f"| {b['wall']:.2f} | {b['mb_s']:.1f} | {b['p50']:.2f} / {b['max']:.2f} "
            f"| {b['sent_p50']:.2f} | {b['created']}/{b['uploads']} |")
    lines += [
        "",
        "| batch | workers RSS at start MB | peak workers RSS MB (sum) | peak workers PSS MB "
        "| largest worker VmHWM MB | peak children RSS / PSS MB (sum) | most children "
        "| peak workers+children PSS MB |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for b in batches:
        m = b["memory"]
        start = m.first.get("workers_rss", 0)
        lines.append(
            f"| {b['label']} | {_mb(start)} | {_mb(m.workers_rss)} | {_mb(m.workers_pss)} "
            f"| {_mb(max(b['hwm'], default=0))} | {_mb(m.children_rss)} / {_mb(m.children_pss)} "
            f"| {m.most_children} | {_mb(m.total_pss)} |")
    lines += [
        "",
        "| batch | CPU s: workers | ffprobe + ffmpeg | Storage emulator | Firestore emulator "
        "| client | total / (wall x cores) |",
        "|---|---|---|---|---|---|---|",
    ]
    cores = os.cpu_count() or 1
    for b in batches:
        c = b["cpu"]
        lines.append(
            f"| {b['label']} | {c['workers']:.1f} | {c['ffmpeg']:.1f} | {c['storage']:.1f} "
            f"| {c['firestore']:.1f} | {c['client']:.1f} "
            f"| {sum(c.values()) / (b['wall'] * cores):.0%} |")
    lines.append("")
    for r in ratios:
        lines.append(
            f"Run {r['run']}: peak workers RSS {args.size_mb} MB / {args.baseline_mb} MB = "
            f"**{r['rss']:.2f}x** (PSS {r['pss']:.2f}x; above idle {r['above_big']:.0f} MB vs "
            f"{r['above_small']:.0f} MB); peak children PSS {r['children']:.2f}x; "
            f"throughput {r['mb_s']:.2f}x.")
    return "\n".join(lines)


DEFAULTS = {"size_mb": 50, "baseline_mb": 5, "concurrency": 10, "runs": 2}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size-mb", type=int, default=DEFAULTS["size_mb"])
    parser.add_argument("--baseline-mb", type=int, default=DEFAULTS["baseline_mb"])
    parser.add_argument("--concurrency", type=int, default=DEFAULTS["concurrency"])
    parser.add_argument("--runs", type=int, default=DEFAULTS["runs"])
    parser.add_argument("--cache-dir", type=Path,
                        default=Path(tempfile.gettempdir()) / "memharbor-bench-uploads")
    args = parser.parse_args()

    print("making/checking the audio files ...", file=sys.stderr)
    small = audio_files(args.cache_dir, size_mb=args.baseline_mb, count=args.concurrency)
    large = audio_files(args.cache_dir, size_mb=args.size_mb, count=args.concurrency)

    env = {"GUNICORN_WORKERS": "2", "GUNICORN_THREADS": str(max(8, args.concurrency)),
           "GUNICORN_MAX_REQUESTS": "0",  # no worker restart in the middle of a batch
           "RECORDING_MAX_UPLOAD_MB": str(max(200, 2 * args.size_mb))}
    batches, ratios, failures = [], [], []
    with tempfile.TemporaryDirectory(prefix="memharbor-bench-recordings-") as recordings:
        env["RECORDINGS_DIR"] = recordings
        with bench_stack(**env) as stack:
            print("warming up ...", file=sys.stderr)
            warm = upload_batch(stack, prepare_uploads(stack, small[:2], tag="warm"))
            failures += warm["failures"]
            idle = idle_memory(stack)
            for run in range(1, args.runs + 1):
                pair = {}
                for label, files in ((f"{args.baseline_mb} MB", small),
                                     (f"{args.size_mb} MB", large)):
                    print(f"run {run}: {len(files)} x {label} ...", file=sys.stderr)
                    batch = measured_batch(stack, files, tag=f"r{run}s{len(pair)}")
                    batch["label"] = f"run {run}, {label}"
                    batch["left"] = left_on_disk(Path(recordings))
                    failures += batch["failures"]
                    batches.append(batch)
                    pair[label] = batch
                    print(f"  {batch['created']}/{batch['uploads']} created, "
                          f"{batch['mb_s']:.1f} MB/s, peak workers RSS "
                          f"{_mb(batch['memory'].workers_rss)} MB, files left in "
                          f"RECORDINGS_DIR {batch['left']}", file=sys.stderr)
                s, b = pair.values()
                ratios.append({
                    "run": run,
                    "rss": b["memory"].workers_rss / s["memory"].workers_rss,
                    "pss": b["memory"].workers_pss / s["memory"].workers_pss,
                    "above_big": (b["memory"].workers_rss - idle["workers_rss"]) / 1024,
                    "above_small": (s["memory"].workers_rss - idle["workers_rss"]) / 1024,
                    "children": (b["memory"].children_pss / s["memory"].children_pss
                                 if s["memory"].children_pss else float("nan")),
                    "mb_s": b["mb_s"] / s["mb_s"]})
            log_tail = gunicorn_log_tail(stack) if failures else ""

    print(markdown(args, env, idle, batches, ratios))
    left = [b["left"] for b in batches]
    if any(left):
        print(f"\nFiles left in RECORDINGS_DIR after each batch: {left}")
    if failures:
        print(f"\n{len(failures)} upload(s) did not answer 201:")
        for f in failures[:10]:
            print(f"  {f['status']}: {f['body'][:500]}")
        print("\ngunicorn log (last lines):\n" + log_tail)
        raise SystemExit(1)


if __name__ == "__main__":
    main()
