"""`python -m devstack`: the whole local stack in one command (what `make run` runs).

Firestore emulator + fake-gcs-server (with the bucket) + gunicorn, all on 127.0.0.1.
Local development defaults fill in whatever `.env` and the environment leave unset, and
are printed. Ctrl-C / SIGTERM stops everything; nothing is left listening.
"""

from __future__ import annotations

import os
import signal
import sys
import time
from pathlib import Path

import environ

from devstack.emulators import Emulators, EmulatorUnavailable, _http_ok, spawn, stop, wait_until

ROOT = Path(__file__).resolve().parent.parent

# Only for a developer's machine: throwaway values, dev auth, debug on, emulators.
DEV_DEFAULTS = {
    "MEMHARBOR_DEBUG": "1",
    "MEMHARBOR_SECRET_KEY": "local-development-only-not-secret",
    "AUTH_MODE": "dev",
    "AGORA_APP_ID": "0" * 32,
    "AGORA_APP_CERT": "0" * 32,
    "FIREBASE_PROJECT_ID": "demo-memharbor",
    "FIREBASE_STORAGE_BUCKET": "demo-memharbor.appspot.com",
    "OPS_API_KEY": "local-ops-key",
    "FIRESTORE_PORT": "8080",
    "STORAGE_PORT": "9199",
    "GUNICORN_BIND": "127.0.0.1:8000",
}


def _say(message: str) -> None:
    print(f"[devstack] {message}", flush=True)


def main() -> int:
    environ.Env.read_env(ROOT / ".env")
    defaulted = [k for k in DEV_DEFAULTS if not os.environ.get(k)]
    for key in defaulted:
        os.environ[key] = DEV_DEFAULTS[key]
    if defaulted:
        _say("local development defaults in use for: " + ", ".join(defaulted))
    if os.environ.get("AUTH_MODE") == "dev":
        _say("DEV AUTH IS ON: 'Authorization: Bearer dev:<uid>' (or dev:<uid>:admin) is accepted")

    stopping = False

    def _request_stop(signum, _frame):
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, _request_stop)
    signal.signal(signal.SIGTERM, _request_stop)

    log_dir = ROOT / "logs"
    emulators = Emulators(
        project_id=os.environ["FIREBASE_PROJECT_ID"],
        bucket=os.environ["FIREBASE_STORAGE_BUCKET"],
        log_dir=log_dir,
        firestore_port=int(os.environ["FIRESTORE_PORT"]),
        storage_port=int(os.environ["STORAGE_PORT"]),
        rules=ROOT / "firestore.rules",
    )
    gunicorn = None
    try:
        _say("starting the Firestore emulator and fake-gcs-server ...")
        emulators.start()
        env = {**os.environ, **emulators.env()}
        gunicorn = spawn([sys.executable, "-m", "gunicorn", "-c", "config/gunicorn.conf.py",
                          "config.wsgi:application"], log_path=None, env=env)
        base = "http://" + env["GUNICORN_BIND"]
        wait_until(lambda: _http_ok(f"{base}/api/health/live"), timeout=60,
                   what="gunicorn", proc=gunicorn)
        _say(f"Firestore emulator  {emulators.firestore_host}")
        _say(f"Storage emulator    {emulators.storage_url} (bucket {emulators.bucket})")
        _say(f"API                 {base}/api/  (docs {base}/api/docs)")
        _say(f"logs                {log_dir}/api.log and *-emulator.log (requests are also printed here)")
        _say("ready; Ctrl-C stops everything")
        while not stopping:
            for proc, name in ((gunicorn, "gunicorn"), *((p, "an emulator") for p in emulators.procs)):
                if proc.poll() is not None:
                    _say(f"{name} exited with {proc.returncode}; see logs/ - stopping")
                    return 1
            time.sleep(0.5)
        _say("stopping ...")
        return 0
    except EmulatorUnavailable as exc:
        _say(str(exc))
        return 2
    finally:
        stop(gunicorn)
        emulators.stop()
        _say("stopped")


if __name__ == "__main__":
    sys.exit(main())
