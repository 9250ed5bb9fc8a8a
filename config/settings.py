"""Memharbor settings: everything comes from the environment (12-factor), see `.env.example`.

The defaults are production-safe: with debug off the server refuses to start when a secret
it needs is missing. Local development defaults are supplied by `python -m devstack`
(`make run`), which says so in its log.
"""

import base64
import binascii
import re
from pathlib import Path

import environ
from django.core.exceptions import ImproperlyConfigured

from integrations.firebase import GOOGLE_CERT_URL, with_scheme

BASE_DIR = Path(__file__).resolve().parent.parent

env = environ.Env()
environ.Env.read_env(BASE_DIR / ".env")  # never overrides variables already set


def _env_first(*names: str, default: str = "") -> str:
    """The first of several synonymous variables that is set (the seed used two names)."""
    for name in names:
        value = env.str(name, default="")
        if value:
            return value
    return default


DEBUG = env.bool("MEMHARBOR_DEBUG", default=False)
SECRET_KEY = env.str("MEMHARBOR_SECRET_KEY", default="")
ALLOWED_HOSTS = env.list("ALLOWED_HOSTS", default=["127.0.0.1", "localhost", "[::1]"])
# nginx terminates TLS and forwards the scheme.
SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
USE_X_FORWARDED_HOST = False

# Agora
AGORA_APP_ID = env.str("AGORA_APP_ID", default="")
AGORA_APP_CERT = env.str("AGORA_APP_CERT", default="")
AGORA_TOKEN_VERSION = env.str("AGORA_TOKEN_VERSION", default="007")

# Firebase
FIREBASE_PROJECT_ID = env.str("FIREBASE_PROJECT_ID", default="demo-memharbor")
FIREBASE_STORAGE_BUCKET = env.str(
    "FIREBASE_STORAGE_BUCKET", default=f"{FIREBASE_PROJECT_ID}.appspot.com"
)
FIREBASE_USE_EMULATOR = env.bool("FIREBASE_USE_EMULATOR", default=False)
FIRESTORE_EMULATOR_HOST = env.str("FIRESTORE_EMULATOR_HOST", default="")
# Either name works; a bare host:port gets the http:// scheme the GCS client needs.
FIREBASE_STORAGE_EMULATOR_HOST = with_scheme(_env_first(
    "FIREBASE_STORAGE_EMULATOR_HOST", "STORAGE_EMULATOR_HOST"
))
# Service-account JSON itself, or a path to it.
FIREBASE_SERVICE_ACCOUNT = env.str("FIREBASE_SERVICE_ACCOUNT", default="")
GOOGLE_APPLICATION_CREDENTIALS = env.str("GOOGLE_APPLICATION_CREDENTIALS", default="")
# Where Firebase ID-token signing certificates are fetched; tests point it at loopback.
FIREBASE_AUTH_CERT_URL = env.str("FIREBASE_AUTH_CERT_URL", default=GOOGLE_CERT_URL)
# Every Firestore call while serving a request gives up after this (its retries included);
# a request that hits it answers 503 dependency_timeout with Retry-After.
FIRESTORE_TIMEOUT_SECONDS = env.float("FIRESTORE_TIMEOUT_SECONDS", default=5.0)

# Auth: "firebase" (always in production) or "dev" (accepts `Bearer dev:<uid>`, debug only).
AUTH_MODE = env.str("AUTH_MODE", default="firebase")
OPS_API_KEY = env.str("OPS_API_KEY", default="")

# Request limits and health
API_MAX_BODY_BYTES = env.int("API_MAX_BODY_BYTES", default=64 * 1024)
DATA_UPLOAD_MAX_MEMORY_SIZE = API_MAX_BODY_BYTES  # form fields; file data goes to disk
FILE_UPLOAD_HANDLERS = ["api.uploads.RecordingUploadHandler"]
DATA_UPLOAD_MAX_NUMBER_FILES = 1
HEALTH_TIMEOUT_SECONDS = env.float("HEALTH_TIMEOUT_SECONDS", default=2.0)
# /api/docs and /api/openapi.json: open with debug on or this set, else ops key or admin.
API_DOCS_PUBLIC = env.bool("API_DOCS_PUBLIC", default=False)

# Calls
CALL_RING_TIMEOUT_SECONDS = env.int("CALL_RING_TIMEOUT_SECONDS", default=60)
# "call" (default): tokens only for participants of an active call on the channel;
# "authenticated": any signed-in user (for testing clients without the call flow).
TOKEN_CHANNEL_POLICY = env.str("TOKEN_CHANNEL_POLICY", default="call")
# How long a user found in an active call on a channel may get more tokens for it without
# another Firestore query (0 disables). After a call ends, its former participants can
# still get a token for its channel for at most this long.
CALL_TOKEN_CACHE_SECONDS = env.int("CALL_TOKEN_CACHE_SECONDS", default=10)
# Calls that end themselves (calls/presence.py), from Agora's channel events.
AGORA_NCS_SECRET = env.str("AGORA_NCS_SECRET", default="")  # the Notifications secret
AGORA_NOTICE_TTL_DAYS = env.int("AGORA_NOTICE_TTL_DAYS", default=7)  # seen noticeIds kept
CALL_LEAVE_GRACE_SECONDS = env.int("CALL_LEAVE_GRACE_SECONDS", default=60)
CALL_CALLER_GONE_SECONDS = env.int("CALL_CALLER_GONE_SECONDS", default=10)
CALL_JOIN_GRACE_SECONDS = env.int("CALL_JOIN_GRACE_SECONDS", default=120)
CALL_MAX_SECONDS = env.int("CALL_MAX_SECONDS", default=14400)

# Push: iOS over APNs (VoIP for incoming calls only), Android over FCM HTTP v1 (names as in the seed)
APNS_TEAM_ID = env.str("APNS_TEAM_ID", default="")
APNS_KEY_ID = env.str("APNS_KEY_ID", default="")
APNS_BUNDLE_ID = env.str("APNS_BUNDLE_ID", default="")
APNS_USE_SANDBOX = env.bool("APNS_USE_SANDBOX", default=False)
APNS_KEY_PATH = env.str("APNS_KEY_PATH", default="")
APNS_KEY_CONTENT = env.str("APNS_KEY_CONTENT", default="")  # "\n" for line breaks
APNS_BASE_URL = env.str("APNS_BASE_URL", default="")  # empty: Apple's, by APNS_USE_SANDBOX
APNS_CA_FILE = env.str("APNS_CA_FILE", default="")  # empty: the system's CAs
FCM_PROJECT_ID = env.str("FCM_PROJECT_ID", default="")
FCM_SERVICE_ACCOUNT_PATH = env.str("FCM_SERVICE_ACCOUNT_PATH", default="")
FCM_SERVICE_ACCOUNT_JSON = env.str("FCM_SERVICE_ACCOUNT_JSON", default="")
FCM_BASE_URL = env.str("FCM_BASE_URL", default="")  # empty: Google's
# A push never holds an invite longer than about this (plus one quick retry on 429/5xx).
PUSH_TIMEOUT_SECONDS = env.float("PUSH_TIMEOUT_SECONDS", default=3.0)
# Devices (users/{uid}/devices) told about a call, the most recently updated first.
PUSH_MAX_DEVICES = env.int("PUSH_MAX_DEVICES", default=10)

# Storage (recordings)
STORAGE_UPLOAD_TIMEOUT_SECONDS = env.float("STORAGE_UPLOAD_TIMEOUT_SECONDS", default=300)
STORAGE_REQUEST_TIMEOUT_SECONDS = env.float("STORAGE_REQUEST_TIMEOUT_SECONDS", default=30)
STORAGE_UPLOAD_CHUNK_BYTES = env.int("STORAGE_UPLOAD_CHUNK_BYTES", default=8 * 1024 * 1024)
STORAGE_URL_TTL_SECONDS = env.int("STORAGE_URL_TTL_SECONDS", default=7 * 24 * 3600)
# /stream and /download redirect to a signed URL this short-lived (when the key can sign).
STORAGE_STREAM_URL_TTL_SECONDS = env.int("STORAGE_STREAM_URL_TTL_SECONDS", default=300)
# Proxied playback (no signing key) reads Storage this much at a time per request.
STORAGE_STREAM_CHUNK_BYTES = env.int("STORAGE_STREAM_CHUNK_BYTES", default=1024 * 1024)

# Recording uploads from the apps (POST /api/recordings/upload)
RECORDING_MAX_UPLOAD_MB = env.int("RECORDING_MAX_UPLOAD_MB", default=100)
# Where received files wait (and stay until Storage has them); the recorder's files live
# in RECORDINGS_DIR too, so one volume holds everything not yet in Storage.
RECORDINGS_DIR = Path(env.str("RECORDINGS_DIR", default=str(BASE_DIR / "var" / "recordings")))
RECORDING_UPLOADS_DIR = Path(env.str("RECORDING_UPLOADS_DIR",
                                     default=str(RECORDINGS_DIR / "uploads")))
FILE_UPLOAD_TEMP_DIR = str(RECORDING_UPLOADS_DIR / ".incoming")
# The sweep retries a failed upload this many times; after that only retry-upload does.
RECORDING_UPLOAD_AUTO_RETRIES = env.int("RECORDING_UPLOAD_AUTO_RETRIES", default=5)
# An upload still pending/uploading after this long was interrupted (a worker died).
RECORDING_UPLOAD_STALE_SECONDS = env.int("RECORDING_UPLOAD_STALE_SECONDS", default=1800)
# The sweep deletes recordings recorded longer ago than this many days (0: keep forever).
RECORDING_RETENTION_DAYS = env.int("RECORDING_RETENTION_DAYS", default=0)
# auditLog/{id} documents carry expireAt this far ahead (for a Firestore TTL policy).
AUDIT_RETENTION_DAYS = env.int("AUDIT_RETENTION_DAYS", default=365)

# The ops console (/ops/): a signed-cookie session, no SQL database.
CONSOLE_SESSION_HOURS = env.int("CONSOLE_SESSION_HOURS", default=8)
# Failed sign-ins per client IP within CONSOLE_SIGNIN_WINDOW_SECONDS before 429 (in Firestore).
CONSOLE_SIGNIN_MAX_FAILURES = env.int("CONSOLE_SIGNIN_MAX_FAILURES", default=5)
CONSOLE_SIGNIN_WINDOW_SECONDS = env.int("CONSOLE_SIGNIN_WINDOW_SECONDS", default=300)

# Recorder service (python -m recorder)
RECORDER_SERVICE_URL = env.str("RECORDER_SERVICE_URL", default="")
RECORDER_SECRET = env.str("RECORDER_SECRET", default="")
RECORDER_UID = env.int("RECORDER_UID", default=999999)  # the bot's Agora uid
RECORDER_MAX_SECONDS = env.int("RECORDER_MAX_SECONDS", default=14400)
# The bot's Agora tokens last this long; it asks POST /api/recording/token for the next one.
RECORDER_TOKEN_SECONDS = env.int("RECORDER_TOKEN_SECONDS", default=3600)
# Several recorders: place sessions over the nodes registered in Firestore recorderNodes
# (healthy = a heartbeat within 3 x RECORDER_HEARTBEAT_SECONDS); off: RECORDER_SERVICE_URL.
RECORDER_NODES = env.bool("RECORDER_NODES", default=False)
RECORDER_HEARTBEAT_SECONDS = env.float("RECORDER_HEARTBEAT_SECONDS", default=10)
RECORDER_START_TIMEOUT_SECONDS = env.float("RECORDER_START_TIMEOUT_SECONDS", default=30)
# A stop answers once the recording is stored, or after this long 202 `processing` (the
# recorder goes on converting and uploading; GET /api/recording/status lists it).
RECORDER_STOP_WAIT_SECONDS = env.float("RECORDER_STOP_WAIT_SECONDS", default=30)

# Analysis of recordings (analysis/): an analysis server takes jobs, reports back signed
# webhooks. Empty ANALYSIS_SERVER_URL: analysis is off and jobs stay queued.
ANALYSIS_SERVER_URL = env.str("ANALYSIS_SERVER_URL", default="")
# Standard Webhooks secret(s), `whsec_<base64>`; several separated by spaces while rotating.
ANALYSIS_WEBHOOK_SECRET = env.str("ANALYSIS_WEBHOOK_SECRET", default="")
# This server as the analysis server reaches it (callback and audio URLs are built on it).
ANALYSIS_CALLBACK_BASE_URL = env.str("ANALYSIS_CALLBACK_BASE_URL", default="")
# Every recording that becomes completed gets a job without being asked.
ANALYSIS_AUTO = env.bool("ANALYSIS_AUTO", default=False)
ANALYSIS_MAX_ATTEMPTS = env.int("ANALYSIS_MAX_ATTEMPTS", default=5)
ANALYSIS_RETRY_BASE_SECONDS = env.int("ANALYSIS_RETRY_BASE_SECONDS", default=30)
# A processing job without news from the server for this long fails (the sweep).
ANALYSIS_STALE_SECONDS = env.int("ANALYSIS_STALE_SECONDS", default=3600)
ANALYSIS_LANGUAGE = env.str("ANALYSIS_LANGUAGE", default="ko")
# The request that creates a job tries the server once, this briefly; the sweep longer.
ANALYSIS_DISPATCH_QUICK_TIMEOUT_SECONDS = env.float("ANALYSIS_DISPATCH_QUICK_TIMEOUT_SECONDS",
                                                    default=2.0)
ANALYSIS_DISPATCH_TIMEOUT_SECONDS = env.float("ANALYSIS_DISPATCH_TIMEOUT_SECONDS", default=10.0)
ANALYSIS_AUDIO_URL_TTL_SECONDS = env.int("ANALYSIS_AUDIO_URL_TTL_SECONDS", default=6 * 3600)
# Callbacks carry the transcript: they may be larger than API_MAX_BODY_BYTES.
ANALYSIS_WEBHOOK_MAX_BYTES = env.int("ANALYSIS_WEBHOOK_MAX_BYTES", default=8 * 1024 * 1024)
# GET /api/analysis/<id>/events: poll interval, heartbeat, and the longest a stream lives.
ANALYSIS_STREAM_POLL_SECONDS = env.float("ANALYSIS_STREAM_POLL_SECONDS", default=1.0)
ANALYSIS_STREAM_HEARTBEAT_SECONDS = env.float("ANALYSIS_STREAM_HEARTBEAT_SECONDS", default=15.0)
ANALYSIS_STREAM_MAX_SECONDS = env.float("ANALYSIS_STREAM_MAX_SECONDS", default=600.0)

# Logging
LOG_DIR = Path(env.str("LOG_DIR", default=str(BASE_DIR / "logs")))
LOG_LEVEL = env.str("LOG_LEVEL", default="INFO")
LOG_FILE_MAX_BYTES = env.int("LOG_FILE_MAX_BYTES", default=20 * 1024 * 1024)
LOG_FILE_BACKUPS = env.int("LOG_FILE_BACKUPS", default=5)


def _refuse_unsafe_production() -> None:
    """With debug off, name every missing secret instead of starting half-configured."""
    if DEBUG:
        return
    problems = []
    if not SECRET_KEY:
        problems.append("MEMHARBOR_SECRET_KEY is not set")
    if not AGORA_APP_ID:
        problems.append("AGORA_APP_ID is not set")
    if not AGORA_APP_CERT:
        problems.append("AGORA_APP_CERT is not set")
    if not (FIREBASE_SERVICE_ACCOUNT or GOOGLE_APPLICATION_CREDENTIALS or FIREBASE_USE_EMULATOR):
        problems.append(
            "FIREBASE_SERVICE_ACCOUNT is not set (nor GOOGLE_APPLICATION_CREDENTIALS, "
            "nor FIREBASE_USE_EMULATOR=true)"
        )
    if AUTH_MODE == "dev":
        problems.append("AUTH_MODE=dev is only allowed with MEMHARBOR_DEBUG=1")
    if AUTH_MODE not in ("firebase", "dev"):
        problems.append(f"AUTH_MODE must be 'firebase' or 'dev', not {AUTH_MODE!r}")
    if problems:
        raise ImproperlyConfigured(
            "Refusing to start with MEMHARBOR_DEBUG off: " + "; ".join(problems) + "."
        )


_refuse_unsafe_production()
if not RECORDER_STOP_WAIT_SECONDS > 0:
    raise ImproperlyConfigured("RECORDER_STOP_WAIT_SECONDS must be a positive number.")
if not FIRESTORE_TIMEOUT_SECONDS > 0:
    raise ImproperlyConfigured("FIRESTORE_TIMEOUT_SECONDS must be a positive number.")
if TOKEN_CHANNEL_POLICY not in ("call", "authenticated"):
    raise ImproperlyConfigured("TOKEN_CHANNEL_POLICY must be 'call' or 'authenticated'.")
for _name, _value in (("AGORA_APP_ID", AGORA_APP_ID), ("AGORA_APP_CERT", AGORA_APP_CERT)):
    if _value and not re.fullmatch(r"[0-9a-fA-F]{32}", _value):
        raise ImproperlyConfigured(f"{_name} must be 32 hexadecimal characters.")
if AGORA_TOKEN_VERSION not in ("007", "006"):
    raise ImproperlyConfigured("AGORA_TOKEN_VERSION must be '007' or '006'.")
if not SECRET_KEY:
    SECRET_KEY = "insecure-local-development-key"
for _secret in ANALYSIS_WEBHOOK_SECRET.split():
    _secret = _secret.removeprefix("whsec_")
    try:
        if not base64.b64decode(_secret + "=" * (-len(_secret) % 4), validate=True):
            raise ValueError("empty")
    except (ValueError, binascii.Error):
        raise ImproperlyConfigured(
            "ANALYSIS_WEBHOOK_SECRET must be 'whsec_<base64>' (several separated by spaces).")
if ANALYSIS_SERVER_URL and not (ANALYSIS_WEBHOOK_SECRET and ANALYSIS_CALLBACK_BASE_URL):
    raise ImproperlyConfigured("ANALYSIS_SERVER_URL needs ANALYSIS_WEBHOOK_SECRET and "
                               "ANALYSIS_CALLBACK_BASE_URL.")

INSTALLED_APPS = [
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.staticfiles",
    "ninja",
    "config.apps.MemharborConfig",
    "calls",
    "push",
    "recorder_bridge",
    "analysis",
    "ops",
]

MIDDLEWARE = [
    "api.middleware.RequestLogMiddleware",
    "django.middleware.security.SecurityMiddleware",
    # Before CommonMiddleware: a refused Host and dev mode's debug pages answer JSON too.
    "api.middleware.JsonErrorMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",  # the OpenAPI docs' and the console's assets
    "django.contrib.sessions.middleware.SessionMiddleware",  # the console's only
    "django.middleware.common.CommonMiddleware",
]

ROOT_URLCONF = "config.urls"
WSGI_APPLICATION = "config.wsgi.application"
APPEND_SLASH = False

# No SQL database: all data lives in Firestore.
DATABASES = {}

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "api" / "console" / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {"context_processors": ["django.template.context_processors.request"]},
    }
]

STATIC_URL = "static/"
STATICFILES_DIRS = [BASE_DIR / "api" / "console" / "static"]
# Serve straight from the apps' static folders: no collectstatic step to forget.
WHITENOISE_USE_FINDERS = True

# The console's session lives in a signed cookie (there is no SQL database), sent to /ops/
# only; CSRF protects every console form (the API is token-based and exempt).
SESSION_ENGINE = "api.console.sessions"  # Firestore: sign-out ends a session for good
SESSION_COOKIE_NAME = "memharbor_console"
SESSION_COOKIE_PATH = "/ops/"
SESSION_COOKIE_HTTPONLY = True
SESSION_COOKIE_SAMESITE = "Strict"
SESSION_COOKIE_SECURE = env.bool("CONSOLE_COOKIE_SECURE", default=not DEBUG)
SESSION_COOKIE_AGE = CONSOLE_SESSION_HOURS * 3600
CSRF_COOKIE_NAME = "memharbor_csrf"
CSRF_COOKIE_PATH = "/ops/"
CSRF_COOKIE_HTTPONLY = True
CSRF_COOKIE_SAMESITE = "Strict"
CSRF_COOKIE_SECURE = SESSION_COOKIE_SECURE
CSRF_TRUSTED_ORIGINS = env.list("CSRF_TRUSTED_ORIGINS", default=[])
USE_TZ = True
TIME_ZONE = "UTC"
LANGUAGE_CODE = "en-us"
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

from config.logging import build_logging_config  # noqa: E402

LOGGING_CONFIG = None
build_logging_config(log_dir=LOG_DIR, level=LOG_LEVEL, max_bytes=LOG_FILE_MAX_BYTES,
                     backups=LOG_FILE_BACKUPS)
