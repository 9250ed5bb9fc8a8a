"""Recorder settings, read once from the environment."""

from __future__ import annotations

import os
import shlex
import socket
from dataclasses import dataclass
from pathlib import Path

from core.environment import ConfigError, env_number

# Exactly the flags the prototype measured (DESIGN.md); without the autoplay flag an
# AudioContext made at page load stays `suspended`.
CHROMIUM_ARGS = (
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--autoplay-policy=no-user-gesture-required",
    # Pages of one context share a renderer (sessions are sharded over a few contexts, so
    # a renderer crash ends only its shard): 20 sessions 986 MB PSS instead of 1245 MB.
    "--process-per-site",
    # Less memory for an audio-only page (BENCHMARKS.md): no separate GPU process (there
    # is no GPU; compositing is software anyway) and no spare renderer kept warm.
    "--in-process-gpu",
    "--disable-site-isolation-trials",
)

# Playwright's Node driver only relays DevTools messages: an interpreter and a small young
# generation are enough (about 25 MB less). A NODE_OPTIONS of the environment wins.
DRIVER_NODE_OPTIONS = "--jitless --max-semi-space-size=1"


HERE = Path(__file__).resolve().parent
# `npm ci --prefix recorder` puts the bundle in node_modules; an image may copy it to static/vendor.
AGORA_SDK_DEFAULTS = (HERE / "node_modules" / "agora-rtc-sdk-ng" / "AgoraRTC_N-production.js",
                      HERE / "static" / "vendor" / "AgoraRTC_N-production.js")


@dataclass(frozen=True)
class Settings:
    host: str
    port: int
    secret: str | None
    recordings_dir: Path
    chromium_path: str
    max_idle_seconds: float
    max_seconds: float
    join_timeout_seconds: float
    agora_app_id: str
    fixtures_dir: Path | None = None
    agora_sdk_path: Path = AGORA_SDK_DEFAULTS[0]
    api_url: str | None = None
    devtools_port: int | None = None
    node_id: str | None = None
    node_url: str | None = None
    max_sessions: int = 20
    heartbeat_seconds: float = 10
    sessions_per_context: int = 10
    audio_bits_per_second: int = 32000
    timeslice_ms: int = 1000
    audio_sample_rate: int = 16000  # 0: the browser's own (48 kHz)
    audio_latency: str = "balanced"
    chromium_extra_args: tuple[str, ...] = ()

    @classmethod
    def from_env(cls) -> Settings:
        secret = os.environ.get("RECORDER_SECRET", "").strip() or None
        if secret is None and os.environ.get("RECORDER_ALLOW_NO_SECRET") != "1":
            raise ConfigError("RECORDER_SECRET is not set (set RECORDER_ALLOW_NO_SECRET=1 "
                              "to run without one for local development)")
        return cls(
            host=os.environ.get("RECORDER_HOST", "127.0.0.1"),
            port=int(env_number("RECORDER_PORT", 3100)),
            secret=secret,
            recordings_dir=Path(os.environ.get("RECORDINGS_DIR", "./var/recordings")).resolve(),
            chromium_path=(os.environ.get("CHROMIUM_PATH")
                           or os.environ.get("PUPPETEER_EXECUTABLE_PATH")
                           or "/usr/bin/chromium"),
            max_idle_seconds=env_number("RECORDER_MAX_IDLE_SECONDS", 30),
            max_seconds=env_number("RECORDER_MAX_SECONDS", 14400),
            join_timeout_seconds=env_number("RECORDER_JOIN_TIMEOUT_SECONDS", 15),
            agora_app_id=os.environ.get("AGORA_APP_ID", "").strip(),
            fixtures_dir=(Path(os.environ["RECORDER_FIXTURES_DIR"]).resolve()
                          if os.environ.get("RECORDER_FIXTURES_DIR") else None),
            sessions_per_context=int(env_number("RECORDER_SESSIONS_PER_CONTEXT", 10)),
            agora_sdk_path=_agora_sdk_path(),
            api_url=os.environ.get("RECORDER_API_URL", "").strip().rstrip("/") or None,
            devtools_port=(int(env_number("RECORDER_DEVTOOLS_PORT", 1))
                           if os.environ.get("RECORDER_DEVTOOLS_PORT", "").strip() else None),
            max_sessions=int(env_number("RECORDER_MAX_SESSIONS", 20)),
            heartbeat_seconds=env_number("RECORDER_HEARTBEAT_SECONDS", 10),
            audio_bits_per_second=int(env_number("RECORDER_AUDIO_BITS_PER_SECOND", 32000)),
            audio_sample_rate=int(env_number("RECORDER_AUDIO_SAMPLE_RATE", 16000)),
            audio_latency=_choice("RECORDER_AUDIO_LATENCY", ("interactive", "balanced",
                                                             "playback"), "balanced"),
            chromium_extra_args=tuple(shlex.split(
                os.environ.get("RECORDER_CHROMIUM_EXTRA_ARGS", ""))),
            **_node(),
        )


def _choice(name: str, allowed: tuple[str, ...], default: str) -> str:
    value = os.environ.get(name, "").strip() or default
    if value not in allowed:
        raise ConfigError(f"{name} must be one of {', '.join(allowed)}, not {value!r}")
    return value


def _node() -> dict:
    """With RECORDER_NODE_ID set, this recorder registers in Firestore `recorderNodes` at
    RECORDER_NODE_URL (default http://RECORDER_HOST:RECORDER_PORT; `{hostname}` and `{ip}`
    in it are this host's name and address, for replicas started from one definition);
    otherwise it does not (the API then reaches it through RECORDER_SERVICE_URL alone)."""
    node_id = os.environ.get("RECORDER_NODE_ID", "").strip()
    if not node_id:
        return {}
    if node_id == "auto":
        node_id = f"{socket.gethostname()}-{int(env_number('RECORDER_PORT', 3100))}"
    url = os.environ.get("RECORDER_NODE_URL", "").strip().rstrip("/")
    if "{hostname}" in url or "{ip}" in url:  # replicas of one service: each its own URL
        hostname = socket.gethostname()
        url = url.replace("{hostname}", hostname)
        if "{ip}" in url:
            url = url.replace("{ip}", socket.gethostbyname(hostname))
    if not url:
        host = os.environ.get("RECORDER_HOST", "127.0.0.1")
        if host in ("0.0.0.0", "::", ""):
            raise ConfigError("RECORDER_NODE_URL must be set when RECORDER_HOST listens on "
                              "every address (how does the API reach this node?)")
        url = f"http://{host}:{int(env_number('RECORDER_PORT', 3100))}"
    return {"node_id": node_id, "node_url": url}


def _agora_sdk_path() -> Path:
    """RECORDER_AGORA_SDK_PATH, else the npm package's bundle (or the image's copy of it)."""
    raw = os.environ.get("RECORDER_AGORA_SDK_PATH", "").strip()
    if raw:
        path = Path(raw).resolve()
        if not path.is_file():
            raise ConfigError(f"RECORDER_AGORA_SDK_PATH {raw!r} is not a file")
        return path
    return next((p for p in AGORA_SDK_DEFAULTS if p.is_file()), AGORA_SDK_DEFAULTS[0])
