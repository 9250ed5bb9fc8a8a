"""Speech metrics of a speech-ready WAV (16 kHz mono s16le, 44-byte header), measured on
the audio itself.

One ffmpeg pass gives the silences (`silencedetect`, -35 dB for at least 0.5 s: the short
pauses inside and between sentences count as speech) and the EBU R128 loudness and true
peak (`ebur128=peak=true`); one pass in Python over the PCM counts the samples at full
scale. ffmpeg's text output goes to a temporary file (no pipe to fill) and the PCM is read
in 1 MiB chunks, so a long recording costs time, not memory.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import tempfile
from collections.abc import Callable
from pathlib import Path

from media.audio import WAV_HEADER_BYTES, WAV_SAMPLE_RATE

from .errors import JobFailed

SILENCE_DB = -35
SILENCE_MIN_S = 0.5
# ebur128's integrated loudness when no 400 ms block passed its -70 LUFS gate (silence).
LOUDNESS_FLOOR_LUFS = -70.0
PCM_CHUNK_BYTES = 1 << 20
FULL_SCALE = (32767, -32768)
_POLL_S = 0.5

_SILENCE_START = re.compile(r"silence_start: (-?[\d.]+)")
_SILENCE_END = re.compile(r"silence_end: (-?[\d.]+)")
_INTEGRATED = re.compile(r"^I:\s+(-?[\d.]+|-?inf|nan) LUFS")
_PEAK = re.compile(r"^Peak:\s+(-?[\d.]+|-?inf|nan) dBFS")


def speech_metrics(*, wav: Path, frames: int, should_stop: Callable[[], bool]) -> dict:
    """`{durationSec, speechSec, silenceRatio, longestSilenceSec, loudnessLufs,
    truePeakDbtp, clippedRatio}` of `wav` (seconds rounded to ms, ratios 0..1 to 4
    places). `loudnessLufs` is None when nothing is loud enough to measure (silence) and
    `truePeakDbtp` None for digital silence. Raises JobFailed `metrics_failed` or
    `shutting_down`."""
    duration = frames / WAV_SAMPLE_RATE
    lines = _ffmpeg_stderr(wav, should_stop)
    silences = silence_intervals(lines, duration=duration)
    silence = sum(end - start for start, end in silences)
    loudness, peak = _summary(lines)
    clipped = clipped_samples(wav, should_stop)
    return {
        "durationSec": round(duration, 3),
        "speechSec": round(max(duration - silence, 0.0), 3),
        "silenceRatio": round(silence / duration, 4) if duration else 0.0,
        "longestSilenceSec": round(max((end - start for start, end in silences), default=0.0),
                                   3),
        "loudnessLufs": loudness if loudness is not None and loudness > LOUDNESS_FLOOR_LUFS
        else None,
        "truePeakDbtp": peak,
        "clippedRatio": round(clipped / frames, 6) if frames else 0.0,
    }


def silence_intervals(lines: list[str], *, duration: float) -> list[tuple[float, float]]:
    """The (start, end) seconds of every silence silencedetect reported, clipped to the
    audio; a silence still open at the end lasts to the end."""
    intervals: list[tuple[float, float]] = []
    start: float | None = None
    for line in lines:
        if (found := _SILENCE_START.search(line)) is not None:
            start = float(found.group(1))
        elif (found := _SILENCE_END.search(line)) is not None and start is not None:
            intervals.append((start, float(found.group(1))))
            start = None
    if start is not None:
        intervals.append((start, duration))
    clipped = [(max(0.0, s), min(duration, e)) for s, e in intervals]
    return [(s, e) for s, e in clipped if e > s]


def clipped_samples(wav: Path, should_stop: Callable[[], bool]) -> int:
    """How many samples sit at full scale (32767 or -32768)."""
    count = 0
    with wav.open("rb") as f:
        f.seek(WAV_HEADER_BYTES)
        while chunk := f.read(PCM_CHUNK_BYTES):
            if should_stop():
                raise JobFailed("shutting_down", "the analyzer stopped while measuring")
            high = chunk[1::2]  # little-endian: the high byte of each sample
            if b"\x7f" in high or b"\x80" in high:  # rare: only then look at whole samples
                samples = memoryview(chunk[: len(chunk) // 2 * 2]).cast("h").tolist()
                count += sum(samples.count(value) for value in FULL_SCALE)
    return count


def _summary(lines: list[str]) -> tuple[float | None, float | None]:
    """(integrated loudness LUFS, true peak dBTP) from ebur128's summary."""
    loudness = peak = None
    section = ""
    for line in lines:
        text = line.strip()
        if text.endswith(":") and not text.startswith("["):
            section = text
        elif section == "Integrated loudness:" and (found := _INTEGRATED.match(text)):
            loudness = _finite(found.group(1))
        elif section == "True peak:" and (found := _PEAK.match(text)):
            peak = _finite(found.group(1))
    return loudness, peak


def _finite(text: str) -> float | None:
    value = float(text)
    return round(value, 1) if value == value and abs(value) != float("inf") else None


def _ffmpeg_stderr(wav: Path, should_stop: Callable[[], bool]) -> list[str]:
    """Run the measuring pass; its stderr lines. ffmpeg runs in its own process group,
    killed if `should_stop()` turns true."""
    ffmpeg = os.environ.get("FFMPEG_BINARY") or "ffmpeg"
    filters = (f"silencedetect=n={SILENCE_DB}dB:d={SILENCE_MIN_S},"
               "ebur128=peak=true:framelog=verbose")  # framelog: no line per 100 ms
    argv = [ffmpeg, "-nostdin", "-hide_banner", "-nostats", "-loglevel", "info",
            "-i", str(wav), "-af", filters, "-f", "null", "-"]
    with tempfile.TemporaryFile() as stderr:
        try:
            proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                    stderr=stderr, start_new_session=True)
        except OSError as exc:
            raise JobFailed("ffmpeg_missing", f"cannot run {ffmpeg!r}: {exc}") from None
        try:
            while True:
                try:
                    proc.wait(timeout=_POLL_S)
                    break
                except subprocess.TimeoutExpired:
                    if should_stop():
                        raise JobFailed("shutting_down",
                                        "the analyzer stopped while measuring") from None
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        stderr.seek(0)
        lines = stderr.read().decode("utf-8", "replace").splitlines()
    if proc.returncode != 0:
        tail = " | ".join(line for line in lines[-5:] if line.strip())
        raise JobFailed("metrics_failed", f"ffmpeg could not measure the audio "
                        f"(exit {proc.returncode}): {tail}")
    return lines
