"""The one Firebase app of this process, initialised lazily and emulator-aware.

With emulators: `AnonymousCredentials` and the emulator hosts exported for the Google
clients. In production: the service-account JSON (inline or a path) from
`FIREBASE_SERVICE_ACCOUNT`, else Application Default Credentials.
"""

import json
import os
import threading
from functools import lru_cache

import firebase_admin
from django.conf import settings
from firebase_admin import auth, credentials, firestore, storage
from google.auth.credentials import AnonymousCredentials

_init_lock = threading.Lock()


def _credential():
    if settings.FIREBASE_USE_EMULATOR:
        return AnonymousCredentials()
    raw = settings.FIREBASE_SERVICE_ACCOUNT.strip()
    if raw.startswith("{"):
        return credentials.Certificate(json.loads(raw))
    if raw:
        return credentials.Certificate(raw)
    return credentials.ApplicationDefault()


def _export_emulator_hosts() -> None:
    # The Google client libraries read these variables, not Django settings.
    if settings.FIRESTORE_EMULATOR_HOST:
        os.environ["FIRESTORE_EMULATOR_HOST"] = settings.FIRESTORE_EMULATOR_HOST
    if settings.FIREBASE_STORAGE_EMULATOR_HOST:
        os.environ["STORAGE_EMULATOR_HOST"] = settings.FIREBASE_STORAGE_EMULATOR_HOST


def firebase_app() -> firebase_admin.App:
    """The process's Firebase app; created on first use (after gunicorn forks)."""
    with _init_lock:
        try:
            return firebase_admin.get_app()
        except ValueError:
            pass
        if settings.FIREBASE_USE_EMULATOR:
            _export_emulator_hosts()
        app = firebase_admin.initialize_app(
            _credential(),
            {
                "projectId": settings.FIREBASE_PROJECT_ID,
                "storageBucket": settings.FIREBASE_STORAGE_BUCKET,
            },
        )
        # verify_id_token has no public option for the certificate URL; tests serve
        # certificates of a throwaway key on loopback, production keeps Google's URL.
        auth._get_client(app)._token_verifier.id_token_verifier.cert_url = (
            settings.FIREBASE_AUTH_CERT_URL
        )
        return app


@lru_cache(maxsize=1)
def firestore_client():
    """The shared Firestore client (thread-safe; one gRPC channel per process)."""
    return firestore.client(firebase_app())


@lru_cache(maxsize=1)
def storage_bucket():
    """The default Storage bucket."""
    return storage.bucket(app=firebase_app())


def verify_id_token(id_token: str) -> dict:
    """Verified claims of a Firebase ID token (signature, project, issuer, expiry)."""
    return auth.verify_id_token(id_token, app=firebase_app(), clock_skew_seconds=5)
