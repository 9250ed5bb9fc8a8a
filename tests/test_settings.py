"""With debug off the server refuses to start half-configured, and says which variable."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

pytestmark = pytest.mark.pure  # no emulators needed

PRODUCTION = {
    "MEMHARBOR_DEBUG": "0",
    "MEMHARBOR_SECRET_KEY": "k" * 40,
    "AGORA_APP_ID": "a" * 32,
    "AGORA_APP_CERT": "b" * 32,
    "FIREBASE_SERVICE_ACCOUNT": "/nonexistent/service-account.json",
    "FIREBASE_USE_EMULATOR": "false",
    "AUTH_MODE": "firebase",
}
_CLEARED = ("FIRESTORE_EMULATOR_HOST", "STORAGE_EMULATOR_HOST", "FIREBASE_STORAGE_EMULATOR_HOST",
            "GOOGLE_APPLICATION_CREDENTIALS", "DJANGO_SETTINGS_MODULE")


def _boot(tmp_path, **env) -> subprocess.CompletedProcess:
    """Load the real settings in a fresh interpreter, as gunicorn would."""
    clean = {k: v for k, v in os.environ.items() if k not in _CLEARED and k not in PRODUCTION}
    clean.update(LOG_DIR=str(tmp_path), DJANGO_SETTINGS_MODULE="config.settings", **env)
    return subprocess.run([sys.executable, "-c", "import django; django.setup()"],
                          env=clean, capture_output=True, text=True, timeout=60, cwd=os.getcwd())


def test_a_complete_production_configuration_boots(tmp_path):
    result = _boot(tmp_path, **PRODUCTION)
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize("missing", ["MEMHARBOR_SECRET_KEY", "AGORA_APP_ID", "AGORA_APP_CERT",
                                     "FIREBASE_SERVICE_ACCOUNT"])
def test_a_missing_secret_stops_start_up_naming_it(tmp_path, missing):
    env = {k: v for k, v in PRODUCTION.items() if k != missing}
    result = _boot(tmp_path, **env)
    assert result.returncode != 0
    assert f"{missing} is not set" in result.stderr


def test_dev_auth_with_debug_off_stops_start_up(tmp_path):
    result = _boot(tmp_path, **{**PRODUCTION, "AUTH_MODE": "dev"})
    assert result.returncode != 0
    assert "AUTH_MODE=dev" in result.stderr


def test_a_malformed_agora_app_id_stops_start_up(tmp_path):
    result = _boot(tmp_path, **{**PRODUCTION, "AGORA_APP_ID": "not-hex"})
    assert result.returncode != 0
    assert "AGORA_APP_ID must be 32 hexadecimal characters" in result.stderr


def test_debug_mode_boots_with_nothing_set(tmp_path):
    result = _boot(tmp_path, MEMHARBOR_DEBUG="1")
    assert result.returncode == 0, result.stderr


def test_a_bad_token_channel_policy_stops_start_up(tmp_path):
    result = _boot(tmp_path, **{**PRODUCTION, "TOKEN_CHANNEL_POLICY": "anyone"})
    assert result.returncode != 0
    assert "TOKEN_CHANNEL_POLICY must be 'call' or 'authenticated'" in result.stderr


def test_the_recorder_refuses_to_start_without_its_secret(tmp_path):
    env = {k: v for k, v in os.environ.items()
           if k not in ("RECORDER_SECRET", "RECORDER_ALLOW_NO_SECRET")}
    result = subprocess.run([sys.executable, "-m", "recorder"], env={
        **env, "RECORDINGS_DIR": str(tmp_path)}, capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert "RECORDER_SECRET is not set" in result.stdout + result.stderr
