"""Audio pipeline: probe, remux and convert recordings by streaming through ffmpeg.

Nothing here decodes audio in Python: ffprobe reads headers, ffmpeg does every pass over
the data, and Python reads only their text output (one line per packet at most). Outputs
are written to a hidden temporary file next to the destination and renamed into place,
so a failed run never leaves a partial file at the destination.

Durations come from the audio packets' timestamps (the time they span), never from the
container header: a browser's MediaRecorder WebM has no duration in its header, and a
crashed recording's header may claim more than the file holds.

Errors (`AudioError.code` is stable: for API bodies and logs):

- `MissingFile` `missing_file`: the source path does not exist.
- `EmptyFile` `empty_file`: the source has zero bytes.
- `NotAudio` `not_audio`: media without an audio stream (a video without sound), or bytes
  ffmpeg identifies as no format, or only guesses at (random data, whatever its name).
- `CorruptAudio` `corrupt_audio`: ffmpeg recognised a container by its content but cannot
  open it (a WebM header alone, an MP4 without its index), or it holds no audio packets,
  or decoding gives less audio than its packets span.
- `TruncatedAudio` `truncated_audio`: the file stops in the middle of the data (the
  demuxer says "File ended prematurely" and ffmpeg still exits 0); carries the usable
  `duration_ms`. Detected where the demuxer reports it: Matroska/WebM (what browsers
  record) and MP4 ("partial file"); a cut MP3, Ogg or WAV just reads as shorter.
- `InvalidWav` `invalid_wav`: a WAV is not 16 kHz mono s16le with a 44-byte header, or not
  the expected length.
- `FfmpegMissing` `ffmpeg_missing`: ffmpeg/ffprobe (`FFMPEG_BINARY`/`FFPROBE_BINARY`,
  default "ffmpeg"/"ffprobe" on PATH) cannot be run.
- `AudioError` `timeout`: ffmpeg/ffprobe ran past `timeout_s`; its process group was killed.
- `AudioError` `ffmpeg_failed`: ffmpeg exited non-zero on a source that probed fine (disk
  full, unwritable destination, a codec the target container cannot hold).
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import signal
import struct
import subprocess
import tempfile
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

WAV_SAMPLE_RATE = 16000
WAV_CHANNELS = 1
WAV_BITS = 16
WAV_HEADER_BYTES = 44
DURATION_TOLERANCE_MS = 100
DEFAULT_TIMEOUT_S = 600.0  # a 10-hour recording converts in about a minute on 2 cores

# What demuxers print when the file stops in the middle of the data (exit status stays 0).
_TRUNCATION_MARKERS = ("File ended prematurely", "partial file")
# What ffprobe says when a format matched only weakly (score <= 25 of 100), as random
# bytes do; a real file is matched by its magic bytes or by several consecutive frames.
_GUESSED_FORMAT = "detected only with low score"
_STDERR_LINES_KEPT = 20
_NOPTS = -(2**63)


# --- errors -------------------------------------------------------------------------------

class AudioError(Exception):
    """Any failure of the audio pipeline; `code` is stable and safe to show to clients."""

    code = "audio_error"

    def __init__(self, message: str, *, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code


class MissingFile(AudioError):
    code = "missing_file"


class EmptyFile(AudioError):
    code = "empty_file"


class NotAudio(AudioError):
    code = "not_audio"


class CorruptAudio(AudioError):
    code = "corrupt_audio"


class TruncatedAudio(AudioError):
    """The source ends in the middle; `duration_ms` of it is usable (`source` describes it)."""

    code = "truncated_audio"

    def __init__(self, message: str, *, duration_ms: int, source: AudioInfo) -> None:
        super().__init__(message)
        self.duration_ms = duration_ms
        self.source = source


class InvalidWav(AudioError):
    """`field` names what is wrong: `header`, `frames` or `duration`."""

    code = "invalid_wav"

    def __init__(self, message: str, *, field: str) -> None:
        super().__init__(message)
        self.field = field


class FfmpegMissing(AudioError):
    code = "ffmpeg_missing"


# --- results ------------------------------------------------------------------------------

@dataclass(frozen=True)
class AudioInfo:
    """What a media file holds. `duration_ms` is the time its audio packets span
    (0 without audio); `header_duration_ms` is what the container header claims (None when
    it claims nothing, as in browser WebM) and is informational only."""

    path: Path
    container: str            # ffmpeg's format name, e.g. "matroska,webm", "mp3"
    codec: str | None         # of the first audio stream, e.g. "opus"; None without audio
    sample_rate: int | None
    channels: int | None
    duration_ms: int
    header_duration_ms: int | None
    has_audio: bool
    truncated: bool           # the file ends in the middle; duration_ms is what is usable
    packets: int
    bytes: int


@dataclass(frozen=True)
class WavInfo:
    """A checked speech-ready WAV: 16 kHz, mono, s16le, 44-byte header, `frames` > 0.
    `source` and `truncated` are set by `convert_to_wav`."""

    path: Path
    sample_rate: int
    channels: int
    bits_per_sample: int
    frames: int
    duration_ms: int
    bytes: int
    source: AudioInfo | None = None
    truncated: bool = False
    warnings: tuple[str, ...] = ()  # ffmpeg's error lines on a conversion that succeeded


# --- public functions ---------------------------------------------------------------------

def ffmpeg_wav_command(*, src: Path, dst: Path) -> list[str]:
    """The ffmpeg command that turns `src` into the speech-ready WAV `dst` (the first audio
    stream, 16 kHz mono s16le, no metadata chunk: exactly a 44-byte header).
    `convert_to_wav` runs exactly this, plus a packet listing on stdout."""
    return [_binary("FFMPEG_BINARY", "ffmpeg"), *_QUIET, "-i", str(src), *_WAV_OUTPUT,
            "-y", str(dst)]


def probe(*, path: Path, timeout_s: float = DEFAULT_TIMEOUT_S) -> AudioInfo:
    """Describe `path`, measuring the duration by reading every audio packet's timestamps
    (one demux pass, no decoding: about 0.25 s for 60 minutes of Opus). A truncated file is
    described (`truncated=True`), not rejected; a file without audio gives
    `has_audio=False`. Raises MissingFile, EmptyFile, NotAudio (unidentifiable bytes),
    CorruptAudio, FfmpegMissing, or AudioError `timeout`."""
    path = Path(path)
    ffmpeg = _binary("FFMPEG_BINARY", "ffmpeg")
    _require(ffmpeg, "FFMPEG_BINARY")
    header = _probe_header(path=path, timeout_s=timeout_s)
    if not header.has_audio:
        return header
    scan = _PacketScan()
    run = _run([ffmpeg, *_QUIET, "-i", str(path), *_PACKET_TAP], timeout_s=timeout_s,
               on_stdout_line=scan.feed)
    if run.returncode != 0:
        raise CorruptAudio(f"ffmpeg cannot read the audio packets of {path.name}: "
                           f"{run.summary()}")
    return dataclasses.replace(header, duration_ms=scan.duration_ms(),
                               packets=scan.packets, truncated=run.truncated)


def remux(*, src: Path, dst: Path, container: str = "webm", allow_truncated: bool = False,
          timeout_s: float = DEFAULT_TIMEOUT_S) -> AudioInfo:
    """Copy the first audio stream of `src` into a fresh `container` file at `dst` without
    re-encoding, which gives a browser WebM a duration and cues (and recovers what a crash
    left). Returns `dst`'s description, with `truncated=True` when `src` ended early and
    `dst` holds what it had. A truncated `src` raises TruncatedAudio unless
    `allow_truncated`; nothing is written to `dst` on any error. Raises as `probe`, plus
    AudioError `ffmpeg_failed` (e.g. a codec the container cannot hold)."""
    src, dst = Path(src), Path(dst)
    source, run = _transcode(src=src, dst=dst, output_args=[
        "-map", "0:a:0", "-c", "copy", "-f", container],
        allow_truncated=allow_truncated, timeout_s=timeout_s, check_wav=False)
    header = _probe_header(path=dst, timeout_s=timeout_s)
    return dataclasses.replace(source, path=dst, container=header.container,
                               header_duration_ms=header.header_duration_ms,
                               bytes=header.bytes, truncated=run.truncated)


def convert_to_wav(*, src: Path, dst: Path, allow_truncated: bool = False,
                   timeout_s: float = DEFAULT_TIMEOUT_S) -> WavInfo:
    """Convert any audio ffmpeg reads into a speech-ready WAV at `dst` (16 kHz, mono,
    s16le, exactly a 44-byte header) and check it with `validate_wav`: its length must be
    within 100 ms of the time the source's audio packets span. One ffmpeg process decodes
    and lists the packets in the same pass. A truncated `src` raises TruncatedAudio (with
    the usable duration) unless `allow_truncated`, which keeps the WAV and sets
    `truncated=True`. On any error `dst` is left as it was. Raises MissingFile, EmptyFile,
    NotAudio, CorruptAudio, TruncatedAudio, InvalidWav, FfmpegMissing, or AudioError
    `timeout` / `ffmpeg_failed`."""
    src, dst = Path(src), Path(dst)
    source, run = _transcode(src=src, dst=dst, output_args=list(_WAV_OUTPUT),
                             allow_truncated=allow_truncated, timeout_s=timeout_s,
                             check_wav=True)
    wav = validate_wav(path=dst)
    return dataclasses.replace(wav, source=source, truncated=run.truncated,
                               warnings=run.lines)


def validate_wav(*, path: Path, expected_ms: int | None = None,
                 tolerance_ms: int = DURATION_TOLERANCE_MS) -> WavInfo:
    """Check that `path` is a speech-ready WAV: RIFF/WAVE, a 16-byte `fmt ` chunk with PCM,
    1 channel, 16000 Hz, 16 bit, the `data` chunk right after it (a 44-byte header, no
    other chunks) sized to the end of the file, at least one frame, and — when
    `expected_ms` is given — a length within `tolerance_ms` of it. Reads 44 bytes.
    Raises InvalidWav (`field` = header, frames or duration) or MissingFile."""
    path = Path(path)
    try:
        size = path.stat().st_size
        with path.open("rb") as f:
            head = f.read(WAV_HEADER_BYTES)
    except FileNotFoundError:
        raise MissingFile(f"no such file: {path}") from None
    if len(head) < WAV_HEADER_BYTES:
        raise InvalidWav(f"{path.name}: {size} bytes, shorter than a WAV header",
                         field="header")
    (riff, riff_size, wave, fmt, fmt_size, audio_format, channels, rate, byte_rate,
     block_align, bits, data, data_size) = struct.unpack("<4sI4s4sIHHIIHH4sI", head)
    expected = {
        "RIFF tag": (riff, b"RIFF"), "RIFF size": (riff_size, size - 8),
        "WAVE tag": (wave, b"WAVE"), "fmt tag": (fmt, b"fmt "), "fmt size": (fmt_size, 16),
        "format (PCM)": (audio_format, 1), "channels": (channels, WAV_CHANNELS),
        "sample rate": (rate, WAV_SAMPLE_RATE),
        "byte rate": (byte_rate, WAV_SAMPLE_RATE * WAV_CHANNELS * WAV_BITS // 8),
        "block align": (block_align, WAV_CHANNELS * WAV_BITS // 8),
        "bits per sample": (bits, WAV_BITS), "data tag at byte 36": (data, b"data"),
        "data size": (data_size, size - WAV_HEADER_BYTES),
    }
    wrong = [f"{name} is {got!r}, expected {want!r}"
             for name, (got, want) in expected.items() if got != want]
    if wrong:
        raise InvalidWav(f"{path.name} is not a speech-ready WAV: " + "; ".join(wrong),
                         field="header")
    if data_size % block_align:
        raise InvalidWav(f"{path.name}: data size {data_size} is not a whole number of "
                         f"frames", field="header")
    frames = data_size // block_align
    if frames == 0:
        raise InvalidWav(f"{path.name} holds no audio frames", field="frames")
    duration_ms = round(frames * 1000 / WAV_SAMPLE_RATE)
    if expected_ms is not None and abs(duration_ms - expected_ms) > tolerance_ms:
        raise InvalidWav(f"{path.name} lasts {duration_ms} ms, expected {expected_ms} ms "
                         f"(± {tolerance_ms} ms)", field="duration")
    return WavInfo(path=path, sample_rate=rate, channels=channels, bits_per_sample=bits,
                   frames=frames, duration_ms=duration_ms, bytes=size)


# --- internals ----------------------------------------------------------------------------

_QUIET = ("-nostdin", "-hide_banner", "-nostats", "-loglevel", "error")
# The speech-ready WAV: first audio stream, 16 kHz mono s16le; no metadata and bitexact so
# that ffmpeg writes no LIST/INFO chunk (its encoder tag) and the header is 44 bytes.
_WAV_OUTPUT = ("-map", "0:a:0", "-ac", str(WAV_CHANNELS), "-ar", str(WAV_SAMPLE_RATE),
               "-c:a", "pcm_s16le", "-map_metadata", "-1", "-fflags", "+bitexact",
               "-flags:a", "+bitexact", "-f", "wav")
# A second output on the same input: every packet of the first audio stream, copied (not
# decoded) into ffmpeg's text "framecrc" format, one line per packet with pts and duration.
# -flush_packets 0: ffmpeg would otherwise write each line to the pipe with its own syscall
# (60,000 per hour of Opus; measured: +1 s of system time).
_PACKET_TAP = ("-map", "0:a:0", "-c", "copy", "-flush_packets", "0", "-f", "framecrc",
               "pipe:1")


def _binary(env_name: str, default: str) -> str:
    return os.environ.get(env_name) or default


def _require(binary: str, env_name: str) -> None:
    if shutil.which(binary) is None:
        raise FfmpegMissing(f"{binary!r} not found or not executable (install ffmpeg or set "
                            f"{env_name})")


def _check_source(path: Path) -> int:
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        raise MissingFile(f"no such file: {path}") from None
    if size == 0:
        raise EmptyFile(f"{path.name} is empty (0 bytes)")
    return size


def _probe_header(*, path: Path, timeout_s: float) -> AudioInfo:
    """Container and first audio stream from the header (ffprobe, no packet scan);
    duration_ms stays 0 here."""
    ffprobe = _binary("FFPROBE_BINARY", "ffprobe")
    _require(ffprobe, "FFPROBE_BINARY")
    size = _check_source(path)
    out = bytearray()
    run = _run([ffprobe, "-hide_banner", "-loglevel", "warning",  # for the low score line
                "-show_entries", "format=format_name,duration:"
                "stream=index,codec_type,codec_name,sample_rate,channels",
                "-of", "json", str(path)], timeout_s=timeout_s, on_stdout_line=out.extend)
    if run.returncode != 0 or _GUESSED_FORMAT in run.text:
        raise _unreadable(path, run)
    described = json.loads(out or b"{}")
    audio = next((s for s in described.get("streams", []) if s.get("codec_type") == "audio"),
                 None)
    fmt = described.get("format", {})
    header_s = _number(fmt.get("duration"))
    audio = audio or {}
    sample_rate = _number(audio.get("sample_rate"))
    return AudioInfo(
        path=path, container=fmt.get("format_name", "unknown"),
        codec=audio.get("codec_name"),
        sample_rate=int(sample_rate) if sample_rate else None,
        channels=audio.get("channels"),
        duration_ms=0,
        header_duration_ms=round(header_s * 1000) if header_s is not None else None,
        has_audio=bool(audio), truncated=False, packets=0, bytes=size)


def _unreadable(path: Path, run: _Finished) -> AudioError:
    """Why ffprobe could not open `path` (or only guessed): no format, or a format guessed
    from a weak match (random bytes can pass for MP3) -> NotAudio; a container ffmpeg
    recognised (its demuxer logged a complaint) or a short read -> CorruptAudio."""
    demuxer_complained = any(" @ 0x" in line for line in run.lines)
    if _GUESSED_FORMAT in run.text or (
            "Invalid data found when processing input" in run.text and not demuxer_complained):
        return NotAudio(f"{path.name} is not a media file ffmpeg can identify")
    return CorruptAudio(f"ffmpeg cannot open {path.name}: {run.summary()}")


def _number(value) -> float | None:
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def _transcode(*, src: Path, dst: Path, output_args: list[str], allow_truncated: bool,
               timeout_s: float, check_wav: bool) -> tuple[AudioInfo, _Finished]:
    """Run ffmpeg `src` -> hidden temp file (with the packet tap), check, rename to `dst`."""
    ffmpeg = _binary("FFMPEG_BINARY", "ffmpeg")
    _require(ffmpeg, "FFMPEG_BINARY")
    header = _probe_header(path=src, timeout_s=timeout_s)
    if not header.has_audio:
        raise NotAudio(f"{src.name} has no audio stream ({header.container})")
    tmp = dst.with_name(f".{dst.name}.{uuid.uuid4().hex[:12]}.part")
    scan = _PacketScan()
    try:
        run = _run([ffmpeg, *_QUIET, "-i", str(src), *output_args, "-y", str(tmp),
                    *_PACKET_TAP],
                   timeout_s=timeout_s, on_stdout_line=scan.feed)
        if run.returncode != 0:
            raise AudioError(f"ffmpeg failed on {src.name} (exit {run.returncode}): "
                             f"{run.summary()}", code="ffmpeg_failed")
        source = dataclasses.replace(header, duration_ms=scan.duration_ms(),
                                     packets=scan.packets, truncated=run.truncated)
        if scan.packets == 0:
            raise CorruptAudio(f"{src.name} holds no audio packets"
                               + (" (the file ends early)" if run.truncated else ""))
        if check_wav:
            try:
                wav = validate_wav(path=tmp, expected_ms=source.duration_ms)
            except InvalidWav as exc:
                if exc.field != "duration":
                    raise
                decoded_ms = round((tmp.stat().st_size - WAV_HEADER_BYTES) * 1000
                                   / (WAV_SAMPLE_RATE * WAV_CHANNELS * WAV_BITS // 8))
                raise CorruptAudio(f"{src.name}: decoding gave {decoded_ms} ms of audio but "
                                   f"its packets span {source.duration_ms} ms; "
                                   f"{run.summary()}") from exc
            usable_ms = wav.duration_ms
        else:
            usable_ms = source.duration_ms
        if run.truncated and not allow_truncated:
            raise TruncatedAudio(f"{src.name} ends early; {usable_ms} ms are usable",
                                 duration_ms=usable_ms, source=source)
        os.replace(tmp, dst)
        return source, run
    finally:
        tmp.unlink(missing_ok=True)


class _PacketScan:
    """Reads ffmpeg's framecrc lines (`stream, dts, pts, duration, size, crc`) and keeps
    the span of the packets' timestamps."""

    def __init__(self) -> None:
        self.packets = 0
        self._tb = (1, 1000)
        self._first: int | None = None
        self._end: int | None = None
        self._last_duration = 0

    def feed(self, line: bytes) -> None:
        if line.startswith(b"#"):
            if line.startswith(b"#tb 0:"):
                num, den = line.split(b":", 1)[1].strip().split(b"/")
                self._tb = (int(num), int(den))
            return
        fields = line.split(b",", 5)
        try:
            dts, pts, duration = int(fields[1]), int(fields[2]), int(fields[3])
        except (IndexError, ValueError):
            return
        if pts == _NOPTS:
            pts = dts
        if pts == _NOPTS:
            return
        if duration > 0:
            self._last_duration = duration
        self.packets += 1
        end = pts + (duration if duration > 0 else self._last_duration)
        self._first = pts if self._first is None else min(self._first, pts)
        self._end = end if self._end is None else max(self._end, end)

    def duration_ms(self) -> int:
        if self._first is None or self._end is None:
            return 0
        num, den = self._tb
        return round((self._end - self._first) * num * 1000 / den)


@dataclass(frozen=True)
class _Finished:
    returncode: int
    lines: tuple[str, ...]     # the first distinct stderr lines
    text: str                  # the same, joined
    truncated: bool

    def summary(self) -> str:
        return " | ".join(self.lines[:5]) or "no message"


def _run(argv: list[str], *, timeout_s: float,
         on_stdout_line: Callable[[bytes], None] | None = None) -> _Finished:
    """Run one ffmpeg/ffprobe in its own process group. stdout is streamed line by line to
    `on_stdout_line` from a thread; stderr goes to an unlinked temp file (no pipe to fill)
    and is scanned afterwards. Past `timeout_s` the whole group is killed."""
    with tempfile.TemporaryFile() as stderr:
        try:
            proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stderr=stderr,
                                    stdout=subprocess.PIPE if on_stdout_line
                                    else subprocess.DEVNULL,
                                    start_new_session=True, bufsize=1 << 16)
        except (FileNotFoundError, PermissionError) as exc:
            raise FfmpegMissing(f"cannot run {argv[0]!r}: {exc}") from None
        reader = None
        if on_stdout_line is not None:
            reader = threading.Thread(target=_pump, args=(proc.stdout, on_stdout_line),
                                      daemon=True)
            reader.start()
        try:
            proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            _kill_group(proc)
            raise AudioError(f"{Path(argv[0]).name} ran longer than {timeout_s:g} s and was "
                             f"stopped", code="timeout") from None
        finally:
            if proc.poll() is None:  # interrupted (KeyboardInterrupt, ...): no orphans
                _kill_group(proc)
            if reader is not None:
                reader.join()
                proc.stdout.close()
        stderr.seek(0)
        lines: list[str] = []
        truncated = False
        for raw in stderr:
            line = raw.decode("utf-8", "replace").strip()
            if not line or line.startswith("Last message repeated"):
                continue
            truncated = truncated or any(m in line for m in _TRUNCATION_MARKERS)
            if len(lines) < _STDERR_LINES_KEPT and line not in lines:
                lines.append(line)
    return _Finished(returncode=proc.returncode, lines=tuple(lines), text="\n".join(lines),
                     truncated=truncated)


def _pump(stream, on_line: Callable[[bytes], None]) -> None:
    """Drain `stream` to the end whatever `on_line` does, so ffmpeg never blocks on it."""
    for line in stream:
        try:
            on_line(line)
        except Exception:  # a line we cannot parse must not stop the draining
            continue


def _kill_group(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait()
