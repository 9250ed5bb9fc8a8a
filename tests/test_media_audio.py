"""media/audio.py against real files made here by ffmpeg (tones) and espeak-ng (speech):
browser-like WebM without a duration header, the usual upload formats, and broken files."""

from __future__ import annotations

import array
import random
import shutil
import struct
import subprocess
import time
import wave
from pathlib import Path

import pytest

from media.audio import (
    AudioError,
    CorruptAudio,
    EmptyFile,
    FfmpegMissing,
    InvalidWav,
    MissingFile,
    NotAudio,
    TruncatedAudio,
    convert_to_wav,
    probe,
    remux,
    validate_wav,
)

pytestmark = pytest.mark.pure  # no emulators needed

TONE_MS = 3000
LONG_TONE_MS = 5000
TOLERANCE_MS = 100
SPEECH = ("Hello grandma, it is me. Did you take your medicine after breakfast? "
          "We will visit you on Sunday afternoon.")


def _ffmpeg(*args: str, stdout=None) -> None:
    subprocess.run(["ffmpeg", "-nostdin", "-hide_banner", "-loglevel", "error", *args],
                   check=True, stdout=stdout)


def _live_webm(dst: Path, *inputs: str) -> Path:
    """WebM/Opus as MediaRecorder writes it: streamed to a pipe, so the muxer cannot go
    back to write a duration or cues."""
    with dst.open("wb") as out:
        _ffmpeg(*inputs, "-ac", "1", "-ar", "48000", "-c:a", "libopus", "-b:a", "32k",
                "-frame_duration", "60", "-f", "webm", "pipe:1", stdout=out)
    return dst


def _header_duration(path: Path) -> str:
    """What the container header says, as ffprobe prints it ("N/A" when absent)."""
    return subprocess.run(["ffprobe", "-v", "error", "-show_entries", "format=duration",
                           "-of", "default=nw=1:nk=1", str(path)],
                          capture_output=True, text=True, check=True).stdout.strip()


def _tone(seconds: float, rate: int = 48000) -> list[str]:
    return ["-f", "lavfi", "-i", f"sine=frequency=440:sample_rate={rate}:duration={seconds}"]


@pytest.fixture(scope="module")
def sources(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("audio-sources")
    s = {
        "tone_live.webm": _live_webm(d / "tone_live.webm", *_tone(TONE_MS / 1000)),
        "tone5_live.webm": _live_webm(d / "tone5_live.webm", *_tone(LONG_TONE_MS / 1000)),
    }
    _ffmpeg(*_tone(TONE_MS / 1000), "-ac", "1", "-c:a", "libopus", "-b:a", "32k",
            str(d / "tone.webm"))
    _ffmpeg(*_tone(LONG_TONE_MS / 1000), "-ac", "1", "-c:a", "libopus", "-b:a", "32k",
            "-frame_duration", "60", str(d / "tone5.webm"))
    stereo = [*_tone(TONE_MS / 1000, 44100), "-ac", "2", "-metadata", "title=Sunday call"]
    _ffmpeg(*stereo, "-c:a", "aac", str(d / "tone.m4a"))
    _ffmpeg(*stereo, "-c:a", "libmp3lame", str(d / "tone.mp3"))
    _ffmpeg(*stereo, "-c:a", "libvorbis", str(d / "tone.ogg"))
    _ffmpeg(*stereo, "-c:a", "pcm_s16le", str(d / "tone_44k_stereo.wav"))
    _ffmpeg(*_tone(LONG_TONE_MS / 1000, 44100), "-c:a", "aac", "-movflags", "+faststart",
            str(d / "tone5_faststart.m4a"))  # index first, so a cut file still opens
    _ffmpeg("-f", "lavfi", "-i", "testsrc=duration=2:size=160x120:rate=10", "-c:v", "libvpx",
            str(d / "video_only.webm"))
    for name in ("tone.webm", "tone5.webm", "tone.m4a", "tone.mp3", "tone.ogg",
                 "tone_44k_stereo.wav", "video_only.webm"):
        s[name] = d / name

    (d / "empty.webm").write_bytes(b"")
    noise = random.Random(20261122).randbytes(4096)
    for name in ("random.bin", "random.webm", "random.mp3"):  # names must not fool it
        (d / name).write_bytes(noise)
    (d / "header_only.webm").write_bytes(s["tone5.webm"].read_bytes()[:200])
    s["tone5_faststart.m4a"] = d / "tone5_faststart.m4a"
    for name in ("tone5.webm", "tone5_live.webm", "tone5_faststart.m4a"):  # cut at 60 %
        data = s[name].read_bytes()
        (d / f"cut_{name}").write_bytes(data[:len(data) * 6 // 10])
    m4a = s["tone.m4a"].read_bytes()
    (d / "no_index.m4a").write_bytes(m4a[:len(m4a) // 2])  # AAC frames, no moov atom
    for name in ("empty.webm", "random.bin", "random.webm", "random.mp3", "header_only.webm",
                 "cut_tone5.webm", "cut_tone5_live.webm", "cut_tone5_faststart.m4a",
                 "no_index.m4a"):
        s[name] = d / name
    return s


@pytest.fixture(scope="module")
def speech(tmp_path_factory) -> dict:
    """Speech from espeak-ng as WebM/Opus with and without a duration header."""
    if shutil.which("espeak-ng") is None:
        pytest.fail("espeak-ng is not installed (Debian package espeak-ng)")
    d = tmp_path_factory.mktemp("audio-speech")
    subprocess.run(["espeak-ng", "-w", str(d / "speech.wav"), SPEECH], check=True)
    with wave.open(str(d / "speech.wav")) as w:
        real_ms = round(w.getnframes() * 1000 / w.getframerate())
    _ffmpeg("-i", str(d / "speech.wav"), "-ac", "1", "-ar", "48000", "-c:a", "libopus",
            "-b:a", "32k", str(d / "speech.webm"))
    _live_webm(d / "speech_live.webm", "-i", str(d / "speech.wav"))
    return {"real_ms": real_ms, "speech.webm": d / "speech.webm",
            "speech_live.webm": d / "speech_live.webm"}


def _wav_header(path: Path) -> tuple:
    return struct.unpack("<4sI4s4sIHHIIHH4sI", path.read_bytes()[:44])


def _peak(path: Path) -> int:
    with wave.open(str(path)) as w:
        samples = array.array("h", w.readframes(w.getnframes()))
    return max(abs(x) for x in samples)


def _leftovers(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if p.name.endswith(".part"))


# --- the recorder's path: browser WebM ----------------------------------------------------

def test_fixtures_emulate_mediarecorder_webm_without_a_duration(sources, speech):
    assert _header_duration(sources["tone_live.webm"]) == "N/A"
    assert _header_duration(sources["tone5_live.webm"]) == "N/A"
    assert _header_duration(speech["speech_live.webm"]) == "N/A"
    assert _header_duration(sources["tone.webm"]) != "N/A"


def test_browser_webm_without_duration_is_measured_by_packets(sources):
    info = probe(path=sources["tone_live.webm"])
    assert info.header_duration_ms is None
    assert abs(info.duration_ms - TONE_MS) <= TOLERANCE_MS
    assert (info.codec, info.sample_rate, info.channels) == ("opus", 48000, 1)
    assert "webm" in info.container and info.has_audio and not info.truncated
    assert info.bytes == sources["tone_live.webm"].stat().st_size
    assert info.packets > 0


def test_speech_webm_without_duration_is_measured_by_packets(speech):
    info = probe(path=speech["speech_live.webm"])
    assert info.header_duration_ms is None
    assert abs(info.duration_ms - speech["real_ms"]) <= TOLERANCE_MS


@pytest.mark.parametrize("name", ["speech.webm", "speech_live.webm"])
def test_speech_webm_becomes_a_speech_ready_wav_of_the_same_length(speech, tmp_path, name):
    dst = tmp_path / "call.wav"
    wav = convert_to_wav(src=speech[name], dst=dst)
    with wave.open(str(dst)) as w:
        assert (w.getframerate(), w.getnchannels(), w.getsampwidth()) == (16000, 1, 2)
        assert w.getnframes() == wav.frames
    assert abs(wav.duration_ms - speech["real_ms"]) <= TOLERANCE_MS
    assert abs(wav.source.duration_ms - speech["real_ms"]) <= TOLERANCE_MS
    assert _peak(dst) > 1000  # speech, not silence
    assert not wav.truncated and _leftovers(tmp_path) == []


def test_remux_gives_browser_webm_a_duration_header(sources, tmp_path):
    dst = tmp_path / "call.webm"
    info = remux(src=sources["tone_live.webm"], dst=dst)
    assert _header_duration(dst) != "N/A"
    assert abs(info.header_duration_ms - TONE_MS) <= TOLERANCE_MS
    assert abs(info.duration_ms - TONE_MS) <= TOLERANCE_MS
    assert info.path == dst and info.bytes == dst.stat().st_size
    assert _leftovers(tmp_path) == []


# --- WAV format ---------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["tone_live.webm", "tone.webm", "tone.m4a", "tone.mp3",
                                  "tone.ogg", "tone_44k_stereo.wav"])
def test_each_upload_format_becomes_16k_mono_wav_with_a_44_byte_header(sources, tmp_path,
                                                                        name):
    dst = tmp_path / "out.wav"
    wav = convert_to_wav(src=sources[name], dst=dst)
    size = dst.stat().st_size
    assert _wav_header(dst) == (b"RIFF", size - 8, b"WAVE", b"fmt ", 16, 1, 1, 16000, 32000,
                                2, 16, b"data", size - 44)
    assert (wav.sample_rate, wav.channels, wav.bits_per_sample) == (16000, 1, 16)
    assert wav.frames == (size - 44) // 2 > 0 and wav.bytes == size
    assert TONE_MS - TOLERANCE_MS <= wav.duration_ms <= TONE_MS + TOLERANCE_MS
    assert _peak(dst) > 1000


def test_metadata_of_the_upload_does_not_reach_the_wav(sources, tmp_path):
    dst = tmp_path / "out.wav"
    convert_to_wav(src=sources["tone.m4a"], dst=dst)  # carries title=Sunday call
    data = dst.read_bytes()
    assert b"LIST" not in data[:44] and b"Sunday" not in data[:44]
    assert data[36:40] == b"data"


def test_validate_wav_rejects_a_wav_with_a_metadata_chunk(sources, tmp_path):
    dst = tmp_path / "tagged.wav"
    _ffmpeg("-i", str(sources["tone.m4a"]), "-ac", "1", "-ar", "16000", "-c:a", "pcm_s16le",
            str(dst))  # no bitexact: ffmpeg writes a LIST/INFO chunk
    with pytest.raises(InvalidWav) as caught:
        validate_wav(path=dst)
    assert caught.value.field == "header" and caught.value.code == "invalid_wav"


def test_validate_wav_rejects_cd_quality_stereo(sources):
    with pytest.raises(InvalidWav, match="sample rate|channels"):
        validate_wav(path=sources["tone_44k_stereo.wav"])


def test_validate_wav_checks_the_expected_length(sources, tmp_path):
    dst = tmp_path / "out.wav"
    wav = convert_to_wav(src=sources["tone.ogg"], dst=dst)
    assert validate_wav(path=dst, expected_ms=wav.duration_ms + 90).frames == wav.frames
    with pytest.raises(InvalidWav) as caught:
        validate_wav(path=dst, expected_ms=wav.duration_ms + 150)
    assert caught.value.field == "duration"


# --- crashed and broken recordings --------------------------------------------------------

def test_header_duration_is_not_trusted_for_a_cut_file(sources):
    info = probe(path=sources["cut_tone5.webm"])
    assert abs(info.header_duration_ms - LONG_TONE_MS) <= TOLERANCE_MS  # the header's claim
    assert 0.5 * LONG_TONE_MS <= info.duration_ms <= 0.7 * LONG_TONE_MS
    assert info.truncated


@pytest.mark.parametrize("name", ["cut_tone5.webm", "cut_tone5_live.webm",
                                  "cut_tone5_faststart.m4a"])
def test_recording_cut_at_60_percent_is_reported_with_its_usable_duration(sources, tmp_path,
                                                                           name):
    dst = tmp_path / "out.wav"
    with pytest.raises(TruncatedAudio) as caught:
        convert_to_wav(src=sources[name], dst=dst)
    assert caught.value.code == "truncated_audio"
    assert 0.5 * LONG_TONE_MS <= caught.value.duration_ms <= 0.7 * LONG_TONE_MS
    assert caught.value.source.truncated
    assert not dst.exists() and _leftovers(tmp_path) == []


def test_truncated_recording_is_kept_when_the_caller_accepts_it(sources, tmp_path):
    dst = tmp_path / "out.wav"
    wav = convert_to_wav(src=sources["cut_tone5_live.webm"], dst=dst, allow_truncated=True)
    assert wav.truncated and dst.exists()
    assert 0.5 * LONG_TONE_MS <= wav.duration_ms <= 0.7 * LONG_TONE_MS
    assert abs(wav.duration_ms - wav.source.duration_ms) <= TOLERANCE_MS
    assert any("ended prematurely" in line for line in wav.warnings)


def test_remux_recovers_a_crashed_browser_recording(sources, tmp_path):
    with pytest.raises(TruncatedAudio):
        remux(src=sources["cut_tone5_live.webm"], dst=tmp_path / "refused.webm")
    assert not (tmp_path / "refused.webm").exists()
    fixed = remux(src=sources["cut_tone5_live.webm"], dst=tmp_path / "fixed.webm",
                  allow_truncated=True)
    assert fixed.truncated and fixed.header_duration_ms is not None
    assert abs(fixed.header_duration_ms - fixed.duration_ms) <= TOLERANCE_MS
    wav = convert_to_wav(src=fixed.path, dst=tmp_path / "fixed.wav")
    assert not wav.truncated
    assert abs(wav.duration_ms - fixed.duration_ms) <= TOLERANCE_MS


BAD_INPUTS = [
    ("empty.webm", EmptyFile, "empty_file"),
    ("random.bin", NotAudio, "not_audio"),
    ("random.webm", NotAudio, "not_audio"),
    ("random.mp3", NotAudio, "not_audio"),
    ("video_only.webm", NotAudio, "not_audio"),
    ("header_only.webm", CorruptAudio, "corrupt_audio"),
    ("no_index.m4a", CorruptAudio, "corrupt_audio"),
    ("cut_tone5_live.webm", TruncatedAudio, "truncated_audio"),
]


@pytest.mark.parametrize(("name", "error", "code"), BAD_INPUTS)
def test_bad_input_is_named_and_leaves_the_destination_as_it_was(sources, tmp_path, name,
                                                                 error, code):
    dst = tmp_path / "out.wav"
    dst.write_bytes(b"the previous good file")
    with pytest.raises(error) as caught:
        convert_to_wav(src=sources[name], dst=dst)
    assert caught.value.code == code and isinstance(caught.value, AudioError)
    assert dst.read_bytes() == b"the previous good file"
    assert _leftovers(tmp_path) == []


@pytest.mark.parametrize(("name", "error"), [("empty.webm", EmptyFile),
                                             ("random.bin", NotAudio),
                                             ("header_only.webm", CorruptAudio)])
def test_probe_names_unreadable_files(sources, name, error):
    with pytest.raises(error):
        probe(path=sources[name])


def test_probe_of_a_video_without_sound_says_it_has_no_audio(sources):
    info = probe(path=sources["video_only.webm"])
    assert not info.has_audio and info.codec is None and info.duration_ms == 0


def test_missing_source_is_named(tmp_path):
    with pytest.raises(MissingFile) as caught:
        convert_to_wav(src=tmp_path / "gone.webm", dst=tmp_path / "out.wav")
    assert caught.value.code == "missing_file"


# --- the environment ----------------------------------------------------------------------

def test_missing_ffmpeg_is_reported(sources, tmp_path, monkeypatch):
    monkeypatch.setenv("FFMPEG_BINARY", "/nonexistent/ffmpeg")
    with pytest.raises(FfmpegMissing) as caught:
        convert_to_wav(src=sources["tone.ogg"], dst=tmp_path / "out.wav")
    assert caught.value.code == "ffmpeg_missing" and "FFMPEG_BINARY" in str(caught.value)
    assert list(tmp_path.iterdir()) == []


def test_missing_ffprobe_is_reported(sources, monkeypatch):
    monkeypatch.setenv("FFPROBE_BINARY", "/nonexistent/ffprobe")
    with pytest.raises(FfmpegMissing, match="FFPROBE_BINARY"):
        probe(path=sources["tone.ogg"])


def test_stuck_ffmpeg_is_killed_with_its_process_group_after_the_timeout(sources, tmp_path,
                                                                        monkeypatch):
    pid_file = tmp_path / "child.pid"
    stuck = tmp_path / "stuck-ffmpeg"
    stuck.write_text(f"#!/bin/sh\nsleep 300 &\necho $! > {pid_file}\nwait\n")
    stuck.chmod(0o755)
    monkeypatch.setenv("FFMPEG_BINARY", str(stuck))
    dst = tmp_path / "out.wav"
    with pytest.raises(AudioError) as caught:
        convert_to_wav(src=sources["tone.ogg"], dst=dst, timeout_s=1)
    assert caught.value.code == "timeout"
    assert not dst.exists() and _leftovers(tmp_path) == []
    child = int(pid_file.read_text())
    for _ in range(100):  # SIGKILL is immediate; only the reaping of the orphan may lag
        if _gone_or_zombie(child):
            break
        time.sleep(0.05)
    assert _gone_or_zombie(child), "the grandchild `sleep` outlived the timeout"


def _gone_or_zombie(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return True
    return stat.rsplit(")", 1)[1].split()[0] in ("Z", "X")
