"""`python -m devstack [demo]`: the whole local stack in one command (`make run`).

Firestore emulator + fake-gcs-server (with the bucket) + the recorder (headless Chromium)
+ gunicorn + the event-stream server (uvicorn, the analysis progress streams), all on
127.0.0.1. With `demo` (`make demo`) it also runs one whole call with
a tone instead of Agora, prints the stored WAV's URL and spec, and stops.
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
    # GET /api/analysis/<job>/events on an event loop (nginx routes it there in production).
    "EVENTS_BIND": "127.0.0.1:8002",
    "RECORDER_PORT": "3100",
    "RECORDER_SECRET": "local-recorder-secret",
    "RECORDINGS_DIR": str(ROOT / "var" / "recordings"),
    "ANALYZER_PORT": "3200",
    # Signs the API -> analyzer jobs and the analyzer -> API webhooks (Standard Webhooks).
    "ANALYSIS_WEBHOOK_SECRET": "whsec_bG9jYWwtZGV2ZWxvcG1lbnQtb25seS1ub3Qtc2VjcmV0",
    "ANALYSIS_AUTO": "1",
}


def _say(message: str) -> None:
    print(f"[devstack] {message}", flush=True)


def run_demo(base: str) -> int:
    """One whole call through the API: invite, accept, record a 440 Hz tone for 5 s (no
    Agora here), hang up; print where the WAV is stored and what it is."""
    import json
    import urllib.request

    def api(method: str, path: str, uid: str, body: dict | None = None) -> dict:
        request = urllib.request.Request(
            f"{base}/api{path}", method=method,
            data=json.dumps(body).encode() if body is not None else None,
            headers={"Authorization": f"Bearer dev:{uid}", "Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=120) as response:
            return json.load(response)

    call = api("POST", "/call/invite", "alice", {"group_id": "demo", "caller_id": "alice",
                                                 "receiver_id": "bob", "caller_name": "Alice"})
    _say(f"invited: call {call['callId']} on channel {call['channelName']}")
    api("POST", "/call/answer", "bob", {"call_id": call["callId"], "action": "accept"})
    _say("bob accepted; recording a 440 Hz tone for 5 s ...")
    api("POST", "/recording/start", "alice", {"channel": call["channelName"],
                                              "source": "tone:440"})
    time.sleep(5)
    stopped = api("POST", "/recording/stop", "alice", {"channel": call["channelName"]})
    ended = api("POST", "/call/end", "alice", {"call_id": call["callId"]})
    _say(f"call ended after {ended['durationSeconds']} s")
    firebase = stopped.get("firebase") or {}
    _say(f"stored WAV: {firebase.get('url')}")
    _say(f"  path {firebase.get('storagePath')}, format {stopped.get('format')}, "
         f"duration {stopped.get('duration')} ms, spec 16000 Hz mono 16-bit")
    return 0 if firebase.get("url") else 1


def main() -> int:
    demo = sys.argv[1:] == ["demo"]
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
    gunicorn = recorder = analyzer = events = None
    try:
        _say("starting the Firestore emulator and fake-gcs-server ...")
        emulators.start()
        env = {**os.environ, **emulators.env(),
               "RECORDER_SERVICE_URL": f"http://127.0.0.1:{os.environ['RECORDER_PORT']}",
               "ANALYSIS_SERVER_URL": f"http://127.0.0.1:{os.environ['ANALYZER_PORT']}",
               "ANALYSIS_CALLBACK_BASE_URL": "http://" + os.environ["GUNICORN_BIND"],
               # The recorder renews its Agora tokens through the API.
               "RECORDER_API_URL": "http://" + os.environ["GUNICORN_BIND"]}
        _say("starting the analyzer (ffmpeg metrics, Vosk transcripts) ...")
        analyzer = spawn([sys.executable, "-m", "analyzer"],
                         env={**env, "ANALYZER_HOST": "127.0.0.1"},
                         log_path=log_dir / "analyzer.log")
        _say("starting the recorder (headless Chromium) ...")
        recorder = spawn([sys.executable, "-m", "recorder"], env={**env, "RECORDER_HOST": "127.0.0.1"},
                         log_path=log_dir / "recorder.log")
        wait_until(lambda: _http_ok(f"{env['RECORDER_SERVICE_URL']}/health"), timeout=60,
                   what="the recorder", proc=recorder, log_path=log_dir / "recorder.log")
        wait_until(lambda: _http_ok(f"{env['ANALYSIS_SERVER_URL']}/health"), timeout=120,
                   what="the analyzer", proc=analyzer, log_path=log_dir / "analyzer.log")
        gunicorn = spawn([sys.executable, "-m", "gunicorn", "-c", "config/gunicorn.conf.py",
                          "config.wsgi:application"], log_path=None, env=env)
        base = "http://" + env["GUNICORN_BIND"]
        wait_until(lambda: _http_ok(f"{base}/api/health/live"), timeout=60,
                   what="gunicorn", proc=gunicorn)
        # Ready means ready: the first Firestore round trip of a fresh worker (its gRPC
        # channel, the emulator's warm-up) happens here, not in the first user's request.
        wait_until(lambda: _http_ok(f"{base}/api/health"), timeout=60,
                   what="the API's dependencies (GET /api/health)", proc=gunicorn)
        events = spawn([sys.executable, "-m", "config.events"], log_path=None, env=env)
        events_base = "http://" + env["EVENTS_BIND"]
        wait_until(lambda: _http_ok(f"{events_base}/api/health/live"), timeout=60,
                   what="the event-stream server", proc=events)
        _say(f"Firestore emulator  {emulators.firestore_host}")
        _say(f"Storage emulator    {emulators.storage_url} (bucket {emulators.bucket})")
        _say(f"Recorder            {env['RECORDER_SERVICE_URL']} (recordings in {env['RECORDINGS_DIR']})")
        _say(f"Analyzer            {env['ANALYSIS_SERVER_URL']}")
        _say(f"API                 {base}/api/  (docs {base}/api/docs)")
        _say(f"Event streams       {events_base}/api/analysis/<jobId>/events (what nginx "
             "routes there; gunicorn answers the path too, a thread per stream)")
        _say(f"logs                {log_dir}/api.log and *-emulator.log (requests are also printed here)")
        if demo:
            return run_demo(base)
        _say("ready; Ctrl-C stops everything")
        watched = ((gunicorn, "gunicorn"), (events, "the event-stream server"),
                   (recorder, "the recorder"), (analyzer, "the analyzer"),
                   *((p, "an emulator") for p in emulators.procs))
        while not stopping:
            for proc, name in watched:
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
        stop(events, grace=25)
        stop(gunicorn)
        stop(recorder, grace=30)
        stop(analyzer, grace=30)
        emulators.stop()
        _say("stopped")


if __name__ == "__main__":
    sys.exit(main())
