"""The one Firebase app of this process, initialised lazily from an explicit configuration.

Who runs the process says where the configuration comes from: the Django API from its
settings (`config/apps.py`), the recorder from its environment (`FirebaseConfig.from_env`).
With emulators: `AnonymousCredentials` and the emulator hosts exported for the Google
clients. In production: the service-account JSON (inline or a path), else Application
Default Credentials.

`firestore_timeout_seconds` bounds every Firestore call of the process, the client's own
retries included (`deadline_exceeded` recognises what the client raises when it gives up);
unset, the client's defaults apply (up to 60 s a call, more for streams).
"""

from __future__ import annotations

import asyncio
import json
import os
import threading
import weakref
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import lru_cache

import firebase_admin
import grpc
from firebase_admin import auth, credentials, firestore, storage
from google.api_core import exceptions as api_exceptions
from google.auth.credentials import AnonymousCredentials
from google.cloud import firestore as cloud_firestore

GOOGLE_CERT_URL = ("https://www.googleapis.com/robot/v1/metadata/x509/"
                   "securetoken@system.gserviceaccount.com")


@dataclass(frozen=True)
class FirebaseConfig:
    project_id: str
    storage_bucket: str
    use_emulator: bool = False
    firestore_emulator_host: str = ""
    storage_emulator_host: str = ""  # with its http:// scheme
    service_account: str = ""  # the JSON itself, or a path to it; empty: ADC
    auth_cert_url: str = GOOGLE_CERT_URL  # where ID-token certificates are fetched
    firestore_timeout_seconds: float | None = None  # per call, retries included; None: the client's

    @classmethod
    def from_env(cls, environ: Mapping[str, str] = os.environ) -> FirebaseConfig:
        """The same variable names the API's settings read (see .env.example)."""
        project = environ.get("FIREBASE_PROJECT_ID", "") or "demo-memharbor"
        return cls(
            project_id=project,
            storage_bucket=environ.get("FIREBASE_STORAGE_BUCKET", "") or f"{project}.appspot.com",
            use_emulator=environ.get("FIREBASE_USE_EMULATOR", "").lower() in ("1", "true", "yes", "on"),
            firestore_emulator_host=environ.get("FIRESTORE_EMULATOR_HOST", ""),
            storage_emulator_host=with_scheme(environ.get("FIREBASE_STORAGE_EMULATOR_HOST", "")
                                              or environ.get("STORAGE_EMULATOR_HOST", "")),
            service_account=environ.get("FIREBASE_SERVICE_ACCOUNT", ""),
            auth_cert_url=environ.get("FIREBASE_AUTH_CERT_URL", "") or GOOGLE_CERT_URL,
        )


def with_scheme(host: str) -> str:
    """The GCS client needs `http://` in STORAGE_EMULATOR_HOST; a bare host:port gets it."""
    return "http://" + host if host and "://" not in host else host


_init_lock = threading.Lock()
_config_source: Callable[[], FirebaseConfig] = FirebaseConfig.from_env


def configure(source: Callable[[], FirebaseConfig]) -> None:
    """Where this process's configuration comes from; read once, at the first use."""
    global _config_source
    _config_source = source


def _credential(config: FirebaseConfig):
    if config.use_emulator:
        return AnonymousCredentials()
    raw = config.service_account.strip()
    if raw.startswith("{"):
        return credentials.Certificate(json.loads(raw))
    if raw:
        return credentials.Certificate(raw)
    return credentials.ApplicationDefault()


def _export_emulator_hosts(config: FirebaseConfig) -> None:
    # The Google client libraries read these variables, not our configuration.
    if config.firestore_emulator_host:
        os.environ["FIRESTORE_EMULATOR_HOST"] = config.firestore_emulator_host
    if config.storage_emulator_host:
        os.environ["STORAGE_EMULATOR_HOST"] = config.storage_emulator_host


def firebase_app() -> firebase_admin.App:
    """The process's Firebase app; created on first use (after gunicorn forks)."""
    with _init_lock:
        try:
            return firebase_admin.get_app()
        except ValueError:
            pass
        config = _config_source()
        if config.use_emulator:
            _export_emulator_hosts(config)
        app = firebase_admin.initialize_app(
            _credential(config),
            {"projectId": config.project_id, "storageBucket": config.storage_bucket},
        )
        # verify_id_token has no public option for the certificate URL; tests serve
        # certificates of a throwaway key on loopback, production keeps Google's URL.
        auth._get_client(app)._token_verifier.id_token_verifier.cert_url = (
            config.auth_cert_url)
        return app


def storage_emulated() -> bool:
    """Storage is fake-gcs-server (download URLs are built for it, not Firebase's host)."""
    return bool(os.environ.get("STORAGE_EMULATOR_HOST")) and _config_source().use_emulator


@lru_cache(maxsize=1)
def firestore_client():
    """The shared Firestore client (thread-safe; one gRPC channel per process), every call
    of it bounded by the configured `firestore_timeout_seconds`."""
    client = firestore.client(firebase_app())
    seconds = _config_source().firestore_timeout_seconds
    if seconds:
        _bound_every_call(client._firestore_api._transport, seconds)
    return client


def _bound_every_call(transport, seconds: float) -> None:
    # The one place every call passes: the GAPIC transport's wrapped methods, whose defaults
    # (timeout and retry) apply whenever a caller names none, as ours never do. A timeout
    # here is a gRPC deadline (streams included); the retry stops at the same deadline.
    long_lived = {transport.listen, transport.write}  # a listener's stream lives on purpose
    for target, method in transport._wrapped_methods.items():
        if target in long_lived:
            continue
        method._timeout = seconds
        if method._retry is not None:
            method._retry = method._retry.with_timeout(seconds)


_DEADLINE_ERRORS = (api_exceptions.DeadlineExceeded, api_exceptions.RetryError)


def deadline_exceeded(exc: BaseException) -> bool:
    """Whether `exc` (or what it was raised from) says a Google call gave up in time: a
    deadline exceeded, retries exhausted, or the service unavailable until then."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, (*_DEADLINE_ERRORS, api_exceptions.ServiceUnavailable)):
            return True
        if isinstance(exc, grpc.RpcError) and callable(getattr(exc, "code", None)) and (
                exc.code() in (grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.UNAVAILABLE)):
            return True
        exc = exc.__cause__ or exc.__context__
    return False


_async_clients: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def firestore_async_client():
    """A Firestore `AsyncClient` for the running event loop (the ASGI event-stream server's):
    gRPC's asyncio channel belongs to the loop that made it, so each loop gets its own.
    Every call bounded by `firestore_timeout_seconds`, like `firestore_client`."""
    loop = asyncio.get_running_loop()
    client = _async_clients.get(loop)
    if client is None:
        app = firebase_app()
        client = cloud_firestore.AsyncClient(credentials=app.credential.get_credential(),
                                             project=app.project_id)
        seconds = _config_source().firestore_timeout_seconds
        if seconds:  # the async GAPIC client keeps its transport one level down
            _bound_every_call(client._firestore_api._client._transport, seconds)
        _async_clients[loop] = client
    return client


@lru_cache(maxsize=1)
def storage_bucket():
    """The default Storage bucket."""
    return storage.bucket(app=firebase_app())


def verify_id_token(id_token: str) -> dict:
    """Verified claims of a Firebase ID token (signature, project, issuer, expiry)."""
    return auth.verify_id_token(id_token, app=firebase_app(), clock_skew_seconds=5)
