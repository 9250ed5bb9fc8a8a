"""Benchmark the WAV conversion of a 60-minute browser recording: `convert_to_wav` (ours)
against the bare ffmpeg CLI running the same conversion arguments, alternated, same run.

    .venv/bin/python -m bench.media [--minutes 60] [--runs 3] [--cache-dir DIR]

The source is made once and cached (DIR, default /tmp/memharbor-bench-media): speech from
espeak-ng, looped to the length, encoded like Chrome's MediaRecorder (WebM/Opus, mono,
48 kHz, 32 kb/s, 60 ms frames) and streamed through a pipe so the header has no duration.
Every trial runs in a fresh Python process so that its rusage belongs to that trial only.
Prints a Markdown block for BENCHMARKS.md. Removes the WAVs it writes.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SPEECH = ("Good morning, mum. Did you sleep well last night? I took the bus to the market "
          "and bought the apples you like. The doctor said your blood pressure looks fine, "
          "so keep taking the small white tablet after breakfast. We will come on Sunday.")


def source_recording(*, minutes: int, cache_dir: Path) -> Path:
    """The cached browser-like WebM of `minutes`, made if missing (about 50 s for 60 min)."""
    path = cache_dir / f"browser-{minutes}min-opus32k-60ms.webm"
    if path.exists():
        return path
    if shutil.which("espeak-ng") is None:
        sys.exit("bench.media needs espeak-ng (Debian package espeak-ng) to make its source")
    cache_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=cache_dir) as tmp:
        speech = Path(tmp) / "speech.wav"
        subprocess.run(["espeak-ng", "-w", str(speech), SPEECH], check=True)
        partial = Path(tmp) / path.name
        print(f"making {path} ...", file=sys.stderr, flush=True)
        with partial.open("wb") as out:
            # -t on the input, and a pipe as output: the muxer cannot write a duration
            subprocess.run(["ffmpeg", "-nostdin", "-hide_banner", "-loglevel", "error",
                            "-stream_loop", "-1", "-t", str(minutes * 60), "-i", str(speech),
                            "-ac", "1", "-ar", "48000", "-c:a", "libopus", "-b:a", "32k",
                            "-frame_duration", "60", "-application", "voip",
                            "-f", "webm", "pipe:1"], stdout=out, check=True)
        if _header_duration(partial) != "N/A":
            sys.exit(f"{partial} has a duration in its header; it must look like a browser's")
        os.replace(partial, path)
    return path


def _header_duration(path: Path) -> str:
    return subprocess.run(["ffprobe", "-v", "error", "-show_entries", "format=duration",
                           "-of", "default=nw=1:nk=1", str(path)],
                          capture_output=True, text=True, check=True).stdout.strip()


def trial(kind: str, *, src: Path, dst: Path) -> dict:
    """One conversion in this (fresh) process; rusage covers exactly this trial."""
    from media.audio import convert_to_wav, ffmpeg_wav_command

    started = time.perf_counter()
    if kind == "ours":
        wav = convert_to_wav(src=src, dst=dst)
        extra = {"wav_ms": wav.duration_ms, "source_ms": wav.source.duration_ms,
                 "wav_bytes": wav.bytes}
    else:
        subprocess.run(ffmpeg_wav_command(src=src, dst=dst), check=True)
        extra = {"wav_bytes": dst.stat().st_size}
    wall = time.perf_counter() - started
    me = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    dst.unlink()
    return {"kind": kind, "wall_s": wall,
            "python_maxrss_kb": me.ru_maxrss, "child_maxrss_kb": kids.ru_maxrss,
            "child_cpu_s": kids.ru_utime + kids.ru_stime,
            "python_cpu_s": me.ru_utime + me.ru_stime, **extra}


def _run_trial(kind: str, *, src: Path, workdir: Path) -> dict:
    out = subprocess.run([sys.executable, "-m", "bench.media", "--trial", kind,
                          "--src", str(src), "--dst", str(workdir / f"{kind}.wav")],
                         capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def _idle_ffmpeg_maxrss_kb() -> int:
    """Peak RSS of an ffmpeg that does nearly nothing: its shared libraries' share."""
    proc = subprocess.Popen(["ffmpeg", "-nostdin", "-loglevel", "error", "-f", "lavfi", "-i",
                             "anullsrc", "-t", "0.1", "-f", "null", "-"])
    return os.wait4(proc.pid, 0)[2].ru_maxrss


def _load() -> str:
    return ", ".join(f"{x:.2f}" for x in os.getloadavg())


def _mb(kb: float) -> str:
    return f"{kb / 1024:.0f} MB"


def _report(*, args, src: Path, results: dict, warmup: dict, load: tuple[str, str]) -> str:
    from bench.stack import machine
    from media.audio import ffmpeg_wav_command, probe

    info = probe(path=src)
    ours, bare = results["ours"], results["bare"]
    med = {k: statistics.median(r["wall_s"] for r in v) for k, v in results.items()}
    ours_py = max(r["python_maxrss_kb"] for r in ours)
    ours_child = max(r["child_maxrss_kb"] for r in ours)
    bare_child = max(r["child_maxrss_kb"] for r in bare)
    ffmpeg_version = subprocess.run(["ffmpeg", "-version"], capture_output=True,
                                    text=True).stdout.split(" Copyright")[0]
    cmd = " ".join(ffmpeg_wav_command(src=Path("SRC.webm"), dst=Path("DST.wav")))
    walls = {k: ", ".join(f"{r['wall_s']:.2f}" for r in v) for k, v in results.items()}
    cpu = {k: statistics.median(r["child_cpu_s"] + (r["python_cpu_s"] if k == "ours" else 0)
                                for r in v) for k, v in results.items()}
    now = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    table = "\n".join([
        "| | wall, median (runs) | CPU, median (user+sys) | peak RSS |",
        "|---|---|---|---|",
        f"| ours: `convert_to_wav` | {med['ours']:.2f} s ({walls['ours']}) "
        f"| {cpu['ours']:.2f} s | Python {_mb(ours_py)} + largest child {_mb(ours_child)} "
        f"= **{_mb(ours_py + ours_child)}** |",
        f"| bare `ffmpeg` CLI | {med['bare']:.2f} s ({walls['bare']}) | {cpu['bare']:.2f} s "
        f"| ffmpeg **{_mb(bare_child)}** |",
        f"| **ours / bare** | **{med['ours'] / med['bare']:.3f}x** (target ≤ 1.1x) "
        f"| {cpu['ours'] / cpu['bare']:.3f}x | (target < 100 MB) |"])
    return f"""\
### WAV conversion of a {args.minutes}-minute browser recording, {now}

**Command:** `.venv/bin/python -m bench.media` (`--minutes {args.minutes} --runs {args.runs}`)

**Machine:** {machine()}; {ffmpeg_version}

**Input:** WebM/Opus as MediaRecorder writes it: mono, 48 kHz, 32 kb/s, 60 ms frames, no
duration in the header (ffprobe: `{_header_duration(src)}`); espeak-ng speech looped;
{info.bytes / 1e6:.1f} MB, {info.packets} packets spanning {info.duration_ms / 1000:.3f} s.
**Output:** WAV 16 kHz mono s16le, {ours[0]['wav_bytes']:,} bytes (44-byte header),
{ours[0]['wav_ms'] / 1000:.3f} s.

**Baseline (bare):** `{cmd}`, run from Python with `subprocess.run`.
**Ours:** `media.audio.convert_to_wav`: ffprobe of the header, then one ffmpeg with the
same arguments writing to a temp file plus a second output listing every packet
(`-map 0:a:0 -c copy -flush_packets 0 -f framecrc pipe:1`, read by a Python thread for the
packet-scan duration), then `validate_wav` (44 bytes read) and the rename.

Order: one untimed warm-up of the bare CLI ({warmup['wall_s']:.2f} s), then ours and bare
alternated, {args.runs} each, every trial in a fresh Python process.
Load average (1, 5, 15 min) before: {load[0]}; after: {load[1]} (on a shared machine
CPU time is the figure other load disturbs least).

{table}

Peak RSS: `ru_maxrss` of `getrusage(RUSAGE_SELF)` for the trial's Python process (the
interpreter, `media.audio` and the packet reader) and of `RUSAGE_CHILDREN` for its
children, which is the largest single child (ffprobe and ffmpeg run one after the other,
never together, so Python + largest child bounds what ours holds at any moment). RSS counts
ffmpeg's shared libraries in full: an ffmpeg converting 0.1 s of silence peaks at
{_mb(_idle_ffmpeg_maxrss_kb())}. CPU: children's user+sys, plus the Python process's for ours."""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=int, default=60)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--cache-dir", type=Path, default=Path("/tmp/memharbor-bench-media"))
    parser.add_argument("--trial", choices=["ours", "bare"], help=argparse.SUPPRESS)
    parser.add_argument("--src", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--dst", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.trial:
        print(json.dumps(trial(args.trial, src=args.src, dst=args.dst)))
        return

    src = source_recording(minutes=args.minutes, cache_dir=args.cache_dir)
    load_before = _load()
    results: dict[str, list[dict]] = {"ours": [], "bare": []}
    with tempfile.TemporaryDirectory(prefix="memharbor-bench-media-") as tmp:
        workdir = Path(tmp)
        warmup = _run_trial("bare", src=src, workdir=workdir)
        for i in range(args.runs):
            for kind in ("ours", "bare"):
                r = _run_trial(kind, src=src, workdir=workdir)
                results[kind].append(r)
                print(f"run {i + 1} {kind}: {r['wall_s']:.2f} s, child peak "
                      f"{_mb(r['child_maxrss_kb'])}, python peak "
                      f"{_mb(r['python_maxrss_kb'])}", file=sys.stderr, flush=True)
    print(_report(args=args, src=src, results=results, warmup=warmup,
                  load=(load_before, _load())))


if __name__ == "__main__":
    main()
