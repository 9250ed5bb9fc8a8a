"""Wires the lower layers to Django's settings: they take explicit configuration and know
nothing of Django (the recorder configures the same modules from its environment)."""

from pathlib import Path

from django.apps import AppConfig
from django.conf import settings


def _firebase_config():
    from integrations.firebase import FirebaseConfig

    return FirebaseConfig(
        project_id=settings.FIREBASE_PROJECT_ID,
        storage_bucket=settings.FIREBASE_STORAGE_BUCKET,
        use_emulator=settings.FIREBASE_USE_EMULATOR,
        firestore_emulator_host=settings.FIRESTORE_EMULATOR_HOST,
        storage_emulator_host=settings.FIREBASE_STORAGE_EMULATOR_HOST,
        service_account=settings.FIREBASE_SERVICE_ACCOUNT,
        auth_cert_url=settings.FIREBASE_AUTH_CERT_URL,
        firestore_timeout_seconds=settings.FIRESTORE_TIMEOUT_SECONDS,
    )


def _storage_config():
    from media.storage import StorageConfig

    return StorageConfig(
        upload_timeout_seconds=settings.STORAGE_UPLOAD_TIMEOUT_SECONDS,
        request_timeout_seconds=settings.STORAGE_REQUEST_TIMEOUT_SECONDS,
        upload_chunk_bytes=settings.STORAGE_UPLOAD_CHUNK_BYTES,
        url_ttl_seconds=settings.STORAGE_URL_TTL_SECONDS,
        stream_chunk_bytes=settings.STORAGE_STREAM_CHUNK_BYTES,
    )


class MemharborConfig(AppConfig):
    name = "config"
    label = "memharbor"

    def ready(self):
        from integrations import firebase
        from media import storage

        firebase.configure(_firebase_config)
        storage.configure(_storage_config)
        # Received uploads land here (FILE_UPLOAD_TEMP_DIR); Django checks that it exists.
        Path(settings.FILE_UPLOAD_TEMP_DIR).mkdir(parents=True, exist_ok=True)
